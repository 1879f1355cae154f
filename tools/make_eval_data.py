#!/usr/bin/env python3
"""Writes eval/data/haystack.txt and eval/data/keywords.txt from .corpus-train/.

ltri-eval must never evaluate on text or key words the model was trained on,
so this takes exactly what tools/train_tiny.py holds out:

  haystack.txt  the held-out pieces of the corpus: each *.txt.gz source but the
                word list, read whole (load_corpus), cut into ~64 KB pieces at
                line ends (chunks()), every 50th piece, the first included
                (tokenize_corpus). They add up to more than the 500 KB the
                repository carries, so whole pieces are taken round-robin over
                the sources (sorted by name, as the trainer reads them: each
                source's first held-out piece, then each one's second, ...)
                while they fit in --max-kb.
  keywords.txt  every 10th word of words.txt.gz, the first included (load_words):
                the NIAH key words the trainer kept for evaluation.

Plain python3, no dependencies. Usage (repository root):
  python3 tools/make_eval_data.py [--corpus .corpus-train] [--out eval/data] [--max-kb 500]
"""
import argparse
import glob
import gzip
import os
import sys

PIECE_CHARS = 1 << 16  # chunks()' default size
HELD_EVERY = 50        # tokenize_corpus: i % 50 == 0 goes to evaluation
WORD_EVERY = 10        # load_words: words[::10] are the evaluation keys


def chunks(text, size=PIECE_CHARS):
    """train_tiny.chunks(): pieces of about `size` characters, cut at line ends."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def held_out_pieces(corpus_dir):
    """{source name: [held-out pieces in order]}, sources as load_corpus() reads them."""
    held = {}
    for path in sorted(glob.glob(os.path.join(corpus_dir, "*.txt.gz"))):
        name = os.path.basename(path)[:-len(".txt.gz")]
        if name == "words":
            continue
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            text = f.read()
        held[name] = [p for i, p in enumerate(chunks(text)) if i % HELD_EVERY == 0]
    return held


def pick_round_robin(held, max_bytes):
    """Whole pieces, round-robin over the sources, while the total fits."""
    picked, total, rnd = [], 0, 0
    while any(rnd < len(p) for p in held.values()):
        for name, pieces in held.items():
            if rnd >= len(pieces):
                continue
            size = len(pieces[rnd].encode("utf-8"))
            if total + size > max_bytes:
                return picked, total
            picked.append((name, rnd, pieces[rnd]))
            total += size
        rnd += 1
    return picked, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=".corpus-train", help="folder made by tools/prepare_corpus.sh")
    ap.add_argument("--out", default="eval/data")
    ap.add_argument("--max-kb", type=int, default=500, help="size limit of haystack.txt (1 KB = 1000 bytes)")
    args = ap.parse_args()

    held = held_out_pieces(args.corpus)
    if not held:
        sys.exit(f"make_eval_data: no *.txt.gz in {args.corpus}: run tools/prepare_corpus.sh")
    picked, total = pick_round_robin(held, args.max_kb * 1000)
    if not picked:
        sys.exit(f"make_eval_data: no held-out piece fits in {args.max_kb} KB")
    words_path = os.path.join(args.corpus, "words.txt.gz")
    if not os.path.exists(words_path):
        sys.exit(f"make_eval_data: {words_path} is missing")
    with gzip.open(words_path, "rt", encoding="utf-8") as f:
        words = [w.strip() for w in f if w.strip()]
    keywords = words[::WORD_EVERY]

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "haystack.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(text for _, _, text in picked))
    with open(os.path.join(args.out, "keywords.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(keywords) + "\n")
    n_held = sum(len(p) for p in held.values())
    print(f"haystack.txt: {total} bytes, {len(picked)} of {n_held} held-out pieces: "
          + ", ".join(f"{name}[{50 * i}]" for name, i, _ in picked))
    print(f"keywords.txt: {len(keywords)} of {len(words)} words")


if __name__ == "__main__":
    main()
