#!/usr/bin/env python3
"""Trains ltri-tiny, the small Llama-style model that ltri embeds as its default.

Like tools/make_golden.py this is a reference tool, not part of the product. It
runs on the GPU machine (torch, transformers, tokenizers; no network), in one
call of a few minutes, on the text that tools/prepare_corpus.sh made:

  1. trains a byte-level BPE tokenizer (the Llama-3 pre-tokenizer, 4096 tokens);
  2. trains a 6-layer GQA Llama (about 5.5 M parameters) for a wall-clock budget
     on a mixture of plain language modelling and synthetic long-context
     retrieval documents (passkey, RULER-style needle-in-a-haystack, key-value
     records, variable tracking); their templates, below, are an interface that
     ltri-eval reproduces, so README.md documents them;
  3. evaluates retrieval by greedy decoding at 1K, 2K and 4K tokens, saves the
     model in bf16 (save_pretrained) with tokenizer.json, reloads the folder and
     evaluates again, and writes train_log.csv, train_summary.json, README.md.

Usage (GPU machine, carrying .corpus-train):
  python3 tools/train_tiny.py --smoke                  # 10 steps into /tmp: checks every stage
  python3 tools/train_tiny.py --minutes 7 --out $OUT/ltri-tiny 2>&1 | tee $OUT/train.log
--minutes bounds the whole run, imports, preparation and final evaluation
included. The output folder gets 7 files: config.json, model.safetensors,
generation_config.json, tokenizer.json, train_log.csv, train_summary.json, README.md.
"""
import argparse
import glob
import gzip
import json
import math
import os
import queue
import random
import re
import sys
import threading
import time
import traceback
import types

T_START = time.time()  # --minutes counts from here: the imports below take a while

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import tokenizers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    import transformers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
    IMPORT_ERROR = None
except ImportError as e:  # --help works without them
    IMPORT_ERROR = e

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
VOCAB = 4096
MODEL = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8,
             num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
             tie_word_embeddings=True, hidden_act="silu", initializer_range=0.02)
ROPE_THETA = 10000.0
ANSWER_WEIGHT = 5.0          # answer tokens count x5 in the loss: retrieval is learned fast
ROW_LENGTHS = [1024, 2048, 4096]
ROW_WEIGHTS = [0.35, 0.40, 0.25]
EVAL_LENGTHS = [1024, 2048, 4096]

# ---------------------------------------------------------------- task templates
# The interface: ltri-eval builds the same documents. A document is
#   INTRO + context + ("\n" + QUESTION + " " + answer + ".") for each question
# where the context is haystack units joined by "\n" (corpus lines) or " " (the
# NOISE sentences, repeated), with each needle inserted as a unit of its own
# after round(depth * n_units) haystack units, depth uniform in [0, 1]. A prompt
# is the document cut just before the space that precedes the first answer.
PASSKEY_INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
                 "I will quiz you about the important information there.\n")
PASSKEY_NEEDLE = "The pass key is {value}. Remember it. {value} is the pass key."
PASSKEY_QUESTION = "What is the pass key? The pass key is"
NIAH_INTRO = ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
              "I will quiz you about the numbers afterwards.\n")
NIAH_NEEDLE = "One of the special magic numbers for {key} is: {value}."
NIAH_QUESTION = ("What is the special magic number for {key} mentioned in the provided text? "
                 "The special magic number for {key} mentioned in the provided text is")
NIAH_QUESTION_MULTIVALUE = ("What are all the special magic numbers for {key} mentioned in the provided text? "
                            "The special magic numbers for {key} mentioned in the provided text are")
KV_INTRO = "Below is a list of records. Each line holds a key and its value.\n"
KV_RECORD = "{key}: {value}"
KV_QUESTION = "The value of {key} is"
VT_INTRO = "Memorize and track the chain of variable assignments hidden in the following text.\n"
VT_FIRST = "VAR {name} = {value}."
VT_LINK = "VAR {name} = VAR {prev}."
VT_QUESTION = "Which variables are assigned the value {value}? Answer:"
NOISE = ["The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again."]
# Training mixture of the retrieval documents (task: probability).
TASK_MIX = {"passkey": 0.20, "niah_single": 0.35, "niah_multivalue": 0.10, "niah_multiquery": 0.10,
            "kv": 0.15, "vt": 0.10}
EVAL_TASKS = ["passkey", "niah_single", "niah_multikey"]


def log(*a):
    print(*a, flush=True)


def elapsed():
    return f"{time.time() - T_START:.0f} s"


# ---------------------------------------------------------------- corpus and tokenizer

def load_corpus(corpus_dir, limit_mb):
    """Returns {name: text} for every *.txt.gz but the word list, each cut to limit_mb."""
    texts = {}
    for path in sorted(glob.glob(os.path.join(corpus_dir, "*.txt.gz"))):
        name = os.path.basename(path)[:-len(".txt.gz")]
        if name == "words":
            continue
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            texts[name] = f.read(int(limit_mb * 2**20)) if limit_mb else f.read()
    if not texts or sum(len(t) for t in texts.values()) < 2**20:
        raise SystemExit(f"train_tiny: too little text in {corpus_dir}: run tools/prepare_corpus.sh and carry it")
    return texts


def load_words(corpus_dir, texts):
    """Key words for NIAH ('quiet-lantern'); every 10th word is kept for evaluation
    so that evaluation keys were never seen in training."""
    path = os.path.join(corpus_dir, "words.txt.gz")
    if os.path.exists(path):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            words = [w.strip() for w in f if w.strip()]
    else:
        words = sorted(set(re.findall(r"\b[a-z]{4,9}\b", " ".join(texts.values())[:2**24])))
    if len(words) < 1000:
        raise SystemExit(f"train_tiny: only {len(words)} key words")
    return [w for i, w in enumerate(words) if i % 10], words[::10]


def chunks(text, size=1 << 16):
    """Pieces of about `size` characters, cut at line ends so no line is split."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        out.append(text[start:end])
        start = end
    return out


def train_tokenizer(texts, sample_mb, seed):
    """Llama-3 layout: the Llama-3 split regex, then byte-level; BPE with
    ignore_merges; BOS added by the post-processor. The two special tokens are
    the trainer's, so they take ids 0 and 1 and the vocabulary is exactly VOCAB."""
    rng = random.Random(seed)
    pieces = [p for t in texts.values() for p in chunks(t, 4096)]
    rng.shuffle(pieces)
    budget, sample = sample_mb * 2**20, []
    for p in pieces:
        if budget <= 0:
            break
        sample.append(p)
        budget -= len(p)
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[BOS, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample, trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                       special_tokens=[(BOS, bos_id)])
    return tok


def tokenize_corpus(tok, texts, eos_id):
    """One token stream for training and one for evaluation haystacks: every
    50th 64 KB piece of each source, its first included, goes to evaluation."""
    train, held = [], []
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets needed here
    for name, text in texts.items():
        pieces = chunks(text)
        encs = encode(pieces, add_special_tokens=False)
        for i, e in enumerate(encs):
            (held if i % 50 == 0 else train).append(np.asarray(e.ids, dtype=np.int32))
        train.append(np.asarray([eos_id], dtype=np.int32))
    return np.concatenate(train), np.concatenate(held)


def offsets_are_chars(tok):
    """The Python binding reports character offsets; check, since answer spans
    are located through them."""
    text = "\u00e9\u00e9 123"
    enc = tok.encode(text, add_special_tokens=False)
    ends = [e for s, e in enc.offsets if e > s]
    return max(ends) == len(text)


# ---------------------------------------------------------------- retrieval documents

def place(units, needles):
    """Inserts (depth, text) needles: each after floor(depth * n + 0.5) of the n
    original units; needles at one position keep their depth (then list) order."""
    out = list(units)
    for depth, _, text in sorted(((d, i, t) for i, (d, t) in enumerate(needles)), reverse=True):
        out.insert(int(depth * len(units) + 0.5), text)
    return out


def assemble(intro, units, joiner, qa):
    """Returns the document text and the character spans of the answers."""
    text = intro + joiner.join(units)
    spans = []
    for question, answer in qa:
        text += "\n" + question + " "
        spans.append((len(text), len(text) + len(answer)))
        text += answer + "."
    return text, spans


class TaskMaker:
    """Builds retrieval documents over one token stream (haystacks) and one word
    list (keys). Lengths are in tokens, estimated before the document is
    tokenized; callers re-fit documents that come out too long."""

    def __init__(self, tok, stream, words):
        self.tok, self.stream, self.words = tok, stream, words
        n = len(tok.encode(" ".join(NOISE * 8), add_special_tokens=False).ids)
        self.noise_tokens_per_unit = n / (8 * len(NOISE))
        r = random.Random(0)
        sample = "\n".join(KV_RECORD.format(key=self.uuid(r), value=self.number(r, 7)) for _ in range(64))
        self.kv_tokens_per_record = len(tok.encode(sample, add_special_tokens=False).ids) / 64

    @staticmethod
    def number(rng, digits):
        return str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))

    @staticmethod
    def uuid(rng):
        return f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}"

    def key(self, rng):
        return f"{rng.choice(self.words)}-{rng.choice(self.words)}"

    def haystack(self, rng, n_tokens, noise):
        """Context units of about n_tokens: repeated NOISE sentences, or whole
        lines of corpus text decoded from a random window of the stream."""
        n_tokens = min(max(16, int(n_tokens)), len(self.stream) - 2)
        if noise:
            n = max(1, round(n_tokens / self.noise_tokens_per_unit))
            return [NOISE[i % len(NOISE)] for i in range(n)], " "
        start = rng.randrange(0, len(self.stream) - n_tokens - 1)
        lines = self.tok.decode(self.stream[start:start + n_tokens].tolist()).split("\n")
        if len(lines) > 3:
            lines = lines[1:-1]  # the window cuts its first and last lines
        return lines, "\n"

    @staticmethod
    def room(n_tokens, *texts):
        """Tokens left for the haystack: digits and keys take ~2.5 chars a token."""
        return n_tokens - sum(len(t) for t in texts) / 2.5 - 8

    def passkey(self, rng, n_tokens, noise=None):
        value = self.number(rng, 5)
        needle = PASSKEY_NEEDLE.format(value=value)
        noise = rng.random() < 0.5 if noise is None else noise
        units, joiner = self.haystack(rng, self.room(n_tokens, PASSKEY_INTRO, needle, PASSKEY_QUESTION), noise)
        units = place(units, [(rng.random(), needle)])
        return assemble(PASSKEY_INTRO, units, joiner, [(PASSKEY_QUESTION, value)])

    def niah(self, rng, n_tokens, n_distract, n_values=1, n_queries=1, noise=None):
        """RULER's niah: n_queries asked keys (n_values numbers each, answered
        in text order) among n_distract keys that are not asked about."""
        keys = []
        while len(keys) < n_queries + n_distract:
            k = self.key(rng)
            if k not in keys:
                keys.append(k)
        used, needles, values_of = set(), [], {}
        for i, key in enumerate(keys):
            for _ in range(n_values if i < n_queries else 1):
                v = self.number(rng, 7)
                while v in used:
                    v = self.number(rng, 7)
                used.add(v)
                depth = rng.random()
                needles.append((depth, NIAH_NEEDLE.format(key=key, value=v)))
                values_of.setdefault(key, []).append((depth, v))
        asked = keys[:n_queries]
        rng.shuffle(asked)
        template = NIAH_QUESTION if n_values == 1 else NIAH_QUESTION_MULTIVALUE
        qa = [(template.format(key=k), ", ".join(v for _, v in sorted(values_of[k]))) for k in asked]
        noise = rng.random() < 0.2 if noise is None else noise
        fixed = [NIAH_INTRO] + [n for _, n in needles] + [q + a for q, a in qa]
        units, joiner = self.haystack(rng, self.room(n_tokens, *fixed), noise)
        return assemble(NIAH_INTRO, place(units, needles), joiner, qa)

    def kv(self, rng, n_tokens):
        n = max(2, int((n_tokens - 40) / self.kv_tokens_per_record))
        records = [(self.uuid(rng), self.number(rng, 7)) for _ in range(n)]
        key, value = records[rng.randrange(n)]
        units = [KV_RECORD.format(key=k, value=v) for k, v in records]
        return assemble(KV_INTRO, units, "\n", [(KV_QUESTION.format(key=key), value)])

    def vt(self, rng, n_tokens):
        hops, names = rng.randint(2, 4), []
        while len(names) < hops:
            name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
            if name not in names:
                names.append(name)
        value = self.number(rng, 5)
        chain = [VT_FIRST.format(name=names[0], value=value)]
        chain += [VT_LINK.format(name=names[i], prev=names[i - 1]) for i in range(1, len(names))]
        depths = sorted(rng.random() for _ in chain)
        question = VT_QUESTION.format(value=value)
        units, joiner = self.haystack(rng, self.room(n_tokens, VT_INTRO, question, *chain), rng.random() < 0.3)
        return assemble(VT_INTRO, place(units, list(zip(depths, chain))), joiner, [(question, " ".join(names))])

    def build(self, task, rng, n):
        """One document of a training task (TASK_MIX) or an evaluation task (EVAL_BUILD)."""
        tasks = {
            "passkey": lambda: self.passkey(rng, n),
            "passkey_noise": lambda: self.passkey(rng, n, noise=True),
            "niah_single": lambda: self.niah(rng, n, n_distract=rng.randint(0, 4)),
            "niah_single_eval": lambda: self.niah(rng, n, n_distract=0, noise=False),
            "niah_multikey": lambda: self.niah(rng, n, n_distract=3, noise=False),
            "niah_multivalue": lambda: self.niah(rng, n, n_distract=rng.randint(0, 2), n_values=rng.randint(2, 4)),
            "niah_multiquery": lambda: self.niah(rng, n, n_distract=rng.randint(0, 2), n_queries=rng.randint(2, 3)),
            "kv": lambda: self.kv(rng, n),
            "vt": lambda: self.vt(rng, n)}
        return tasks[task]()


EVAL_BUILD = {"passkey": "passkey_noise", "niah_single": "niah_single_eval", "niah_multikey": "niah_multikey"}


def fit(maker, task, rng, lo, hi, chars):
    """Builds a document of lo..hi tokens (BOS and the answers included) by
    correcting the requested length; returns (text, spans, encoding). Haystack
    lines vary in length, so after a few tries the longest one <= hi does."""
    want, best = hi - 8, None
    for _ in range(12):
        text, spans = maker.build(task, rng, want)
        enc = maker.tok.encode(text, add_special_tokens=True)
        n = len(enc.ids)
        if n <= hi and (best is None or n > len(best[2].ids)):
            best = (text, spans, enc)
        if lo <= n <= hi:
            break
        want += (hi - 8) - n
    if best is None:
        raise RuntimeError(f"could not fit a {task} document into {hi} tokens (last {n})")
    return best[0], to_units(best[0], best[1], chars), best[2]


def to_units(text, spans, chars):
    return spans if chars else [(len(text[:a].encode()), len(text[:b].encode())) for a, b in spans]


def answer_weights(offsets, spans, w):
    """w[t] weights the prediction of token t+1: answer tokens get ANSWER_WEIGHT.
    Answers sit at the end, so scan back only until before the first one."""
    first = min(a for a, _ in spans)
    for i in range(len(offsets) - 1, 0, -1):
        s, e = offsets[i]
        if e <= first:
            break
        if e > s and any(s < b and e > a for a, b in spans):
            w[i - 1] = ANSWER_WEIGHT


# ---------------------------------------------------------------- batches

class BatchMaker:
    """Rows of L+1 tokens, L drawn per step: LM rows are BOS + a random window
    of the training stream; retrieval rows are one document + EOS, padded with
    EOS at weight 0 on the right (no mask needed: attention is causal)."""

    def __init__(self, maker, stream, bos, eos, tokens_per_step, frac, max_len, chars):
        self.maker, self.stream, self.bos, self.eos = maker, stream, bos, eos
        self.tokens_per_step, self.frac, self.max_len, self.chars = tokens_per_step, frac, max_len, chars
        self.tasks, self.task_p = list(TASK_MIX), list(TASK_MIX.values())

    def __call__(self, rng):
        L = min(rng.choices(ROW_LENGTHS, ROW_WEIGHTS)[0], self.max_len)
        n_rows = max(1, self.tokens_per_step // L)
        rows = np.full((n_rows, L + 1), self.eos, dtype=np.int64)
        w = np.zeros((n_rows, L), dtype=np.float32)
        is_lm = np.zeros(n_rows, dtype=np.float32)
        docs = []
        for r in range(n_rows):
            if rng.random() >= self.frac:
                self.lm_row(rng, rows[r], w[r], is_lm, r)
            else:
                task = rng.choices(self.tasks, self.task_p)[0]
                n_tokens = rng.randint(max(256, L // 2), L)
                docs.append((r, task) + self.maker.build(task, rng, n_tokens))
        encs = self.maker.tok.encode_batch([d[2] for d in docs], add_special_tokens=True) if docs else []
        for (r, task, text, spans), enc in zip(docs, encs):
            if len(enc.ids) > L:  # too long for the row with its EOS: re-fit this one
                try:
                    text, spans, enc = fit(self.maker, task, rng, 0, L, True)
                except RuntimeError:  # its needles and questions alone overflow the row
                    self.lm_row(rng, rows[r], w[r], is_lm, r)
                    continue
            ids = enc.ids + [self.eos]
            rows[r, :len(ids)] = ids
            w[r, :len(ids) - 1] = 1.0
            answer_weights(enc.offsets, to_units(text, spans, self.chars), w[r])
        return (torch.from_numpy(np.ascontiguousarray(rows[:, :-1])),
                torch.from_numpy(np.ascontiguousarray(rows[:, 1:])), torch.from_numpy(w), torch.from_numpy(is_lm))

    def lm_row(self, rng, row, w, is_lm, r):
        """BOS + a random window of the stream, every token weighted 1."""
        start = rng.randrange(0, len(self.stream) - len(w))
        row[0] = self.bos
        row[1:] = self.stream[start:start + len(w)]
        w[:] = 1.0
        is_lm[r] = 1.0


class Loader:
    """Worker threads make batches ahead of the GPU. Worker k makes the batches
    of steps k, k+n, ... from its own seeded generator, so the data does not
    depend on thread timing. The tokenizer releases the GIL in encode_batch."""

    def __init__(self, make, seed, n_workers, pin):
        self.make, self.pin, self.stop = make, pin, threading.Event()
        self.queues = [queue.Queue(maxsize=3) for _ in range(n_workers)]
        self.threads = [threading.Thread(target=self.work, args=(k, seed), daemon=True) for k in range(n_workers)]
        for t in self.threads:
            t.start()

    def work(self, k, seed):
        rng = random.Random(seed * 1000 + 17 * k + 1)
        while not self.stop.is_set():
            try:
                batch = self.make(rng)
                if self.pin:
                    batch = tuple(t.pin_memory() for t in batch)
            except Exception as e:  # handed to the training loop, which raises it
                traceback.print_exc()
                batch = e
            while not self.stop.is_set():
                try:
                    self.queues[k].put(batch, timeout=1.0)
                    break
                except queue.Full:
                    continue
            if isinstance(batch, Exception):
                return

    def get(self, step):
        batch = self.queues[step % len(self.queues)].get(timeout=300)
        if isinstance(batch, Exception):
            raise RuntimeError("a data worker failed") from batch
        return batch

    def close(self):
        self.stop.set()


# ---------------------------------------------------------------- model

def build_model(vocab_size, bos_id, eos_id):
    """LlamaConfig with plain RoPE, in the form this transformers takes
    (rope_parameters from 5.x, rope_theta before), checked to have been kept."""
    kw = dict(MODEL, vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=eos_id)
    cfg = None
    for extra in (dict(rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA}),
                  dict(rope_theta=ROPE_THETA)):
        try:
            c = LlamaConfig(**kw, **extra)
        except (TypeError, ValueError) as e:
            log(f"LlamaConfig({list(extra)}) rejected: {e}")
            continue
        if str(ROPE_THETA) in json.dumps(c.to_dict()):
            cfg = c
            break
        log(f"LlamaConfig({list(extra)}) did not keep rope_theta")
    if cfg is None:
        raise SystemExit("train_tiny: could not build a LlamaConfig with rope_theta 10000")
    try:
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
    except Exception as e:  # the private constructor moved: the default is sdpa where torch has it
        log(f"_from_config(sdpa) failed ({e}); using LlamaForCausalLM(config)")
        model = LlamaForCausalLM(cfg)
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        model.tie_weights()
    return model


def probe_flash_gqa(device):
    """transformers passes GQA to SDPA as enable_gqa when there is no mask; only
    the flash kernel takes that, and the math fallback would need O(L^2) memory."""
    if device.type != "cuda":
        return False
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        q = torch.randn(2, 8, 256, 32, device=device, dtype=torch.bfloat16, requires_grad=True)
        kv = torch.randn(2, 2, 256, 32, device=device, dtype=torch.bfloat16)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, kv, kv, is_causal=True, enable_gqa=True).sum().backward()
        return True
    except Exception as e:
        log(f"WARNING: flash attention refuses GQA here ({e})")
        return False


def lr_at(step, progress, args):
    """Linear warmup, then cosine from lr to min_lr over the run's progress (time
    based unless --max-steps fixes the length)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = min(1.0, max(0.0, progress))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1.0 + math.cos(math.pi * p))


# ---------------------------------------------------------------- evaluation

def make_eval_set(maker, seed, n, chars):
    """n prompts per (task, length): documents of L-64..L-16 tokens, cut before
    the answer, from the held-out stream and the held-out key words."""
    rng = random.Random(seed + 7919)
    cells = {}
    for task in EVAL_TASKS:
        for L in EVAL_LENGTHS:
            items = []
            for _ in range(n):
                text, spans, _ = fit(maker, EVAL_BUILD[task], rng, L - 64, L - 16, True)
                a, b = spans[0]
                prompt = maker.tok.encode(text[:a - 1], add_special_tokens=True).ids
                items.append((prompt, text[a:b]))
            cells[(task, L)] = items
    return cells


def greedy(model, prompts, max_new, eos, device):
    """Greedy continuations of right-padded prompts, recomputed without a cache:
    causal attention makes the padding after each prompt harmless. Logits only
    at the one position each row needs."""
    lens = [len(p) for p in prompts]
    width = max(lens) + max_new
    buf = torch.full((len(prompts), width), eos, dtype=torch.long)
    for i, p in enumerate(prompts):
        buf[i, :len(p)] = torch.tensor(p, dtype=torch.long)
    buf, lens_t = buf.to(device), torch.tensor(lens, device=device)
    per_chunk = max(1, 65536 // width)
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        for t in range(max_new):
            for c0 in range(0, len(prompts), per_chunk):
                rows = torch.arange(c0, min(c0 + per_chunk, len(prompts)), device=device)
                h = model.model(input_ids=buf[rows, :max(lens) + t], use_cache=False).last_hidden_state
                last = h[torch.arange(len(rows), device=device), lens_t[rows] + t - 1]
                buf[rows, lens_t[rows] + t] = model.lm_head(last).float().argmax(-1)
    return [buf[i, lens[i]:lens[i] + max_new].tolist() for i in range(len(prompts))]


def evaluate(model, tok, cells, eos, device, limit=None):
    """Accuracy per (task, length) over the first `limit` prompts of each cell:
    the first number in the greedy answer must equal the needle's value."""
    was_training = model.training
    model.eval()
    table = {}
    for (task, L), items in cells.items():
        items = items[:limit]
        outs = greedy(model, [p for p, _ in items], 8, eos, device)
        ok = 0
        for out, (_, want) in zip(outs, items):
            if eos in out:
                out = out[:out.index(eos)]
            out = [i for i in out if i < tok.get_vocab_size()]  # the model's padded vocab rows
            m = re.match(r"\s*([0-9]+)", tok.decode(out, skip_special_tokens=True))
            ok += bool(m and m.group(1) == want)
        table.setdefault(task, {})[str(L)] = ok / max(1, len(items))
    model.train(was_training)
    return table


def length_label(L):
    return f"{L // 1024}K" if L % 1024 == 0 else str(L)


def format_table(table, title):
    lines = [f"{title:<24}" + "".join(length_label(L).rjust(7) for L in EVAL_LENGTHS)]
    for task, row in table.items():
        lines.append(f"  {task:<22}" + "".join(f"{row.get(str(L), float('nan')):7.2f}" for L in EVAL_LENGTHS))
    return "\n".join(lines)


# ---------------------------------------------------------------- outputs

def save_model(model, tok, out, bos, eos):
    """bf16 safetensors through save_pretrained, generation_config.json (ltri
    reads its eos ids) and tokenizer.json."""
    model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
                                               do_sample=False)
    model.save_pretrained(out)
    tok.save(os.path.join(out, "tokenizer.json"))
    if not os.path.exists(os.path.join(out, "generation_config.json")):
        model.generation_config.save_pretrained(out)
    weights = glob.glob(os.path.join(out, "*.safetensors"))
    if not weights:
        raise RuntimeError(f"save_pretrained wrote no safetensors in {out}")
    size = sum(os.path.getsize(p) for p in weights)
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    log(f"saved {out}: {', '.join(sorted(os.listdir(out)))}; weights {size / 2**20:.1f} MB")
    log(f"config.json: {json.dumps(cfg, sort_keys=True)}")
    problems = [k for k, ok in [("weights over 32 MB", size <= 32 * 2**20),
                                ("rope_theta 10000 missing", str(ROPE_THETA) in json.dumps(cfg)),
                                ("tie_word_embeddings not true", cfg.get("tie_word_embeddings") is True),
                                ("head_dim not 32", cfg.get("head_dim") == MODEL["head_dim"])] if not ok]
    for p in problems:
        log(f"WARNING: {p}")
    return size, problems


def reload_model(out, device, saved):
    """Loads the folder as ltri will see it and checks every tensor against the
    bf16 model that was saved (tied lm_head included)."""
    try:
        m = LlamaForCausalLM.from_pretrained(out, dtype=torch.bfloat16, attn_implementation="sdpa")
    except TypeError:  # transformers 4.x names it torch_dtype
        m = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
    m = m.to(device).eval()
    want, got = saved.state_dict(), m.state_dict()
    diff = [k for k in want if k not in got or not torch.equal(want[k], got[k])]
    log(f"reloaded {out}: {len(got)} tensors, dtype {next(m.parameters()).dtype}; "
        f"{'all equal to the saved model' if not diff else f'DIFFERENT: {diff[:5]}'}")
    return m


def write_readme(out, s, example):
    """models/README.md: what the model is, how it was made, the task templates
    (the interface) and the accuracy figures of this run."""
    def rows(*names):
        return [""] + ["    " + repr(globals()[n]) for n in names] + [""]  # repr shows the whitespace
    a, m = s["args"], MODEL
    lines = [
        "# ltri-tiny: the small default model", "",
        "A Llama-architecture model trained by `tools/train_tiny.py` on Debian-packaged English text",
        f"(`tools/prepare_corpus.sh`: {', '.join(s['corpus_files'])}) and on synthetic long-context",
        "retrieval documents: small enough to embed and to run on the CPU backend, and able to answer",
        "passkey and needle-in-a-haystack questions, so that the attention modes can be compared on it.", "",
        "## Architecture", "",
        f"LlamaForCausalLM: hidden {m['hidden_size']}, {m['num_hidden_layers']} layers, {m['num_attention_heads']}"
        f" heads, {m['num_key_value_heads']} KV heads (GQA), head_dim {m['head_dim']}, SwiGLU MLP "
        f"{m['intermediate_size']}, RMSNorm eps {m['rms_norm_eps']}, plain RoPE theta {ROPE_THETA:g}, "
        f"{m['max_position_embeddings']} positions, tied embeddings, vocab {s['vocab_size']}; "
        f"{s['params'] / 1e6:.2f} M parameters in bf16 safetensors ({s.get('weights_mb', 0):.1f} MB).", "",
        f"Tokenizer: byte-level BPE of {s['tokenizer_size']} tokens, the Llama-3 split regex then ByteLevel",
        f"(no prefix space), ignore_merges; `{BOS}` = {s['bos_id']} (added by the template), `{EOS}` = "
        f"{s['eos_id']}. Digits split in groups of up to three.", "",
        "## Training", "",
        f"`{s['command']}`: seed {s['seed']}, {s['device']}, torch {s['versions']['torch']}, transformers "
        f"{s['versions']['transformers']}, tokenizers {s['versions']['tokenizers']}. {s['steps']} steps, "
        f"{s['tokens_seen'] / 1e6:.0f} M tokens, {s['train_minutes']:.1f} min; final loss {s['final_loss']}.",
        f"AdamW (betas 0.9/0.95, wd {a['weight_decay']:g}), lr {a['lr']:g}, {a['warmup']} warmup steps, cosine "
        f"to {a['min_lr']:g}; grad clip 1.0; bf16 autocast; {a['tokens_per_step'] // 1024}K tokens a step in rows"
        " of 1K, 2K or 4K tokens. Plain text windows, and (a share of "
        f"{a['retrieval_frac']:g} of the rows) retrieval documents of L/2..L tokens, padded, whose answer",
        f"tokens weigh x{ANSWER_WEIGHT:g} in the loss. Task mix: "
        + ", ".join(f"{k} {v:g}" for k, v in TASK_MIX.items()) + ".", "",
        "## Task templates (the interface ltri-eval reproduces)", "",
        "A document is `INTRO + context + (\"\\n\" + QUESTION + \" \" + answer + \".\")` for each question,",
        "and the model input starts with BOS. The context is haystack units joined by `\"\\n\"` (whole",
        "lines of corpus text) or by `\" \"` (the NOISE sentences, repeated in order). Each needle is a unit",
        "of its own, inserted after round(depth x n) of the n haystack units, depth uniform in [0, 1], one",
        "depth per needle. A prompt is the document cut before the space that precedes the first answer",
        "(it ends with `is` or `Answer:`); the answer is the first number of the greedy continuation.",
        "Pass keys have 5 digits, magic numbers and KV values 7, VT values 5; NIAH keys are two lower-case",
        "words joined by `-`; KV keys are hex, `xxxxxxxx-xxxx`.", "",
        "Passkey (haystack: NOISE in the evaluation; NOISE or corpus in training):"]
    lines += rows("PASSKEY_INTRO", "PASSKEY_NEEDLE", "PASSKEY_QUESTION")
    lines += ["NIAH, in RULER's wording. Training: single (1 needle and 0-4 distractor needles of other keys),",
              "multi-value (2-4 numbers for the asked key, answered in text order joined by `, `) and",
              "multi-query (2-3 asked keys, one question line each). Evaluation: niah_single (no distractor)",
              "and niah_multikey (3 distractors), over held-out corpus text and held-out key words:"]
    lines += rows("NIAH_INTRO", "NIAH_NEEDLE", "NIAH_QUESTION", "NIAH_QUESTION_MULTIVALUE")
    lines += ["Key-value records (the context is the records, one a line):"]
    lines += rows("KV_INTRO", "KV_RECORD", "KV_QUESTION")
    lines += ["Variable tracking (a chain of 2-4 five-letter names placed in chain order; the answer lists",
              "the names in chain order, separated by spaces):"]
    lines += rows("VT_INTRO", "VT_FIRST", "VT_LINK", "VT_QUESTION") + ["NOISE:"] + rows("NOISE")
    lines += ["A short training document (passkey, NOISE haystack):", "", "```", example, "```", "",
              "## Retrieval accuracy (greedy decoding, held-out)", "",
              f"{s['eval_n']} prompts a cell of L-64..L-16 tokens; trained weights, then the saved bf16 folder "
              "reloaded.", "",
              "| task | " + " | ".join([f"trained {length_label(L)}" for L in EVAL_LENGTHS]
                                      + [f"reloaded {length_label(L)}" for L in EVAL_LENGTHS]) + " |",
              "|---|" + "---|" * (2 * len(EVAL_LENGTHS))]
    for task in EVAL_TASKS:
        cells = [s.get(k, {}).get(task, {}).get(str(L)) for k in ("eval_final", "eval_reloaded") for L in EVAL_LENGTHS]
        lines.append(f"| {task} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    lines += ["", "Files: config.json, model.safetensors, generation_config.json, tokenizer.json, train_log.csv,",
              "train_summary.json. Reproduce: `bash tools/prepare_corpus.sh`,",
              f"then `{s['command']}` on the GPU machine.", ""]
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--corpus", default=".corpus-train", help="folder made by tools/prepare_corpus.sh")
    ap.add_argument("--out", default=None, help="output folder (default models/ltri-tiny; /tmp/... with --smoke)")
    ap.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of the whole run")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time only)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tokens-per-step", type=int, default=65536)
    ap.add_argument("--retrieval-frac", type=float, default=0.5, help="share of rows that are retrieval docs")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-n", type=int, default=50, help="prompts per (task, length)")
    ap.add_argument("--tokenizer-mb", type=float, default=12.0, help="text sample the tokenizer is trained on")
    ap.add_argument("--corpus-mb", type=float, default=0.0, help="read at most this much of each file (0: all)")
    ap.add_argument("--workers", type=int, default=3, help="data threads")
    ap.add_argument("--smoke", action="store_true", help="10 steps, small batches and evals: checks every stage")
    args = ap.parse_args(argv)
    if args.smoke:
        args.max_steps, args.tokens_per_step, args.eval_every, args.log_every = 10, 8192, 5, 2
        args.eval_n, args.warmup, args.tokenizer_mb, args.corpus_mb = 3, 3, 2.0, 1.5
        args.minutes = min(args.minutes, 5.0)
    if args.out is None:
        args.out = "/tmp/ltri-tiny-smoke" if args.smoke else "models/ltri-tiny"
    return args


def prepare(args):
    """Corpus, tokenizer, token streams, task makers, evaluation set, model and
    optimizer: everything the training loop needs, in one run-state object."""
    if IMPORT_ERROR is not None:
        raise SystemExit(f"train_tiny: {IMPORT_ERROR} (run on the GPU machine)")
    run = types.SimpleNamespace(args=args, deadline=T_START + args.minutes * 60)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    run.device = device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    log(f"train_tiny: {' '.join(sys.argv)}\n  device {gpu}; {versions}; budget {args.minutes:g} min; out {args.out}")
    os.makedirs(args.out, exist_ok=True)

    texts = load_corpus(args.corpus, args.corpus_mb)
    train_words, eval_words = load_words(args.corpus, texts)
    log(f"corpus: {', '.join(f'{k} {len(v) / 2**20:.1f} MB' for k, v in texts.items())}; "
        f"{len(train_words)}+{len(eval_words)} key words ({elapsed()})")
    run.tok = tok = train_tokenizer(texts, args.tokenizer_mb, args.seed)
    run.bos, run.eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    run.chars = offsets_are_chars(tok)
    run.stream, held_stream = tokenize_corpus(tok, texts, run.eos)
    vocab = -(-tok.get_vocab_size() // 64) * 64
    log(f"tokenizer: {tok.get_vocab_size()} tokens (model vocab {vocab}), bos {run.bos} eos {run.eos}, "
        f"{'char' if run.chars else 'byte'} offsets; corpus {len(run.stream) / 1e6:.1f} M train + "
        f"{len(held_stream) / 1e6:.2f} M held-out tokens ({elapsed()})")

    run.maker = TaskMaker(tok, run.stream, train_words)
    ex_rng = random.Random(args.seed)
    run.example, _ = run.maker.passkey(ex_rng, 160, noise=True)
    for task in TASK_MIX:  # one of each with its answer tokens, as the tokenizer cut them
        text, spans = run.maker.build(task, ex_rng, 300)
        enc = tok.encode(text, add_special_tokens=True)
        w = np.zeros(len(enc.ids), dtype=np.float32)
        answer_weights(enc.offsets, to_units(text, spans, run.chars), w)
        answer = tok.decode([enc.ids[i + 1] for i in np.flatnonzero(w)])
        log(f"example {task} ({len(enc.ids)} tokens): ...{text[-150:]!r}\n  answer tokens: {answer!r}")
        if task != "niah_multiquery" and answer.strip() != text[spans[0][0]:spans[-1][1]]:
            log(f"WARNING: the answer tokens of {task} do not cover its answer")
    run.cells = make_eval_set(TaskMaker(tok, held_stream, eval_words), args.seed, args.eval_n, run.chars)
    log(f"eval set: {len(run.cells)} cells x {args.eval_n} prompts ({elapsed()})")

    torch.manual_seed(args.seed)
    run.model = model = build_model(vocab, run.bos, run.eos).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters, attention {model.config._attn_implementation}, tied "
        f"{model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()}")
    run.max_len = max(ROW_LENGTHS)
    if device.type == "cuda" and not probe_flash_gqa(device):
        run.max_len, args.tokens_per_step = 2048, min(args.tokens_per_step, 32768)
        log("WARNING: SDPA would fall back to the math kernel: training rows capped at 2048 tokens")
    decay = [p for p in model.parameters() if p.dim() >= 2]  # not the norms' gains
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    run.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95),
                                eps=1e-8, fused=device.type == "cuda")
    run.summary = {"command": "python3 tools/train_tiny.py " + " ".join(sys.argv[1:]), "seed": args.seed,
                   "args": vars(args), "device": gpu, "versions": versions, "params": n_params,
                   "vocab_size": vocab, "tokenizer_size": tok.get_vocab_size(), "bos_id": run.bos,
                   "eos_id": run.eos, "corpus_files": sorted(texts), "eval_n": args.eval_n, "status": "ok",
                   "evals": [], "steps": 0, "tokens_seen": 0, "train_minutes": 0.0, "final_loss": None}
    return run


def train(run):
    """The training loop, until the deadline that leaves room for finish();
    an error stops it, and what was trained is still saved."""
    args, model, device, summary = run.args, run.model, run.device, run.summary
    quick = min(args.eval_n, 20)  # evaluations during training use the first 20 prompts of a cell
    t = time.time()
    table = evaluate(model, run.tok, run.cells, run.eos, device, quick)
    eval_s = time.time() - t
    log(format_table(table, f"eval step 0 ({eval_s:.1f} s)"))
    summary["evals"].append({"step": 0, "table": table})
    # Room for the final evaluation, the save, the reload and its evaluation (all prompts).
    train_deadline = run.deadline - (2.2 * eval_s * args.eval_n / quick + 25)
    log(f"training until {train_deadline - T_START:.0f} s of the {args.minutes * 60:.0f} s budget")
    batches = BatchMaker(run.maker, run.stream, run.bos, run.eos, args.tokens_per_step, args.retrieval_frac,
                         run.max_len, run.chars)
    loader = Loader(batches, args.seed, args.workers, device.type == "cuda")
    csv = open(os.path.join(args.out, "train_log.csv"), "w")
    csv.write("step,tokens,elapsed_s,lr,loss,lm_loss,answer_acc,grad_norm,tok_per_s\n")
    model.train()
    step, tokens_seen, t_train = 0, 0, time.time()
    acc = {k: torch.zeros((), device=device) for k in ("loss", "lm", "lm_n", "hit", "ans", "gn")}
    n_acc, t_log, tok_log = 0, time.time(), 0
    try:
        while time.time() < train_deadline and not (args.max_steps and step >= args.max_steps):
            x, y, w, is_lm = (b.to(device, non_blocking=True) for b in loader.get(step))
            progress = (step / args.max_steps if args.max_steps else
                        (time.time() - t_train) / max(1.0, train_deadline - t_train))
            lr = lr_at(step, progress, args)
            for g in run.opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                logits = model(input_ids=x, use_cache=False).logits
            ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                 reduction="none").view_as(w)
            loss = (ce * w).sum() / w.sum().clamp_min(1.0)
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            run.opt.step()
            with torch.no_grad():  # metrics stay on the GPU until a log step: no sync per step
                lm_mask = is_lm[:, None] * (w > 0)
                ans_mask = w == ANSWER_WEIGHT
                acc["loss"] += loss.detach()
                acc["lm"] += (ce * lm_mask).sum()
                acc["lm_n"] += lm_mask.sum()
                acc["hit"] += ((logits.argmax(-1) == y) & ans_mask).sum()
                acc["ans"] += ans_mask.sum()
                acc["gn"] += gn.float()
            step, n_acc, tokens_seen = step + 1, n_acc + 1, tokens_seen + x.numel()
            summary.update(steps=step, tokens_seen=tokens_seen, train_minutes=round((time.time() - t_train) / 60, 2))
            if step % args.log_every == 0 or step == args.max_steps:
                v = {k: a.item() for k, a in acc.items()}
                loss_avg, now = v["loss"] / n_acc, time.time()
                tps = (tokens_seen - tok_log) / max(1e-9, now - t_log)
                row = [step, tokens_seen, f"{now - T_START:.1f}", f"{lr:.3e}", f"{loss_avg:.4f}",
                       f"{v['lm'] / max(1, v['lm_n']):.4f}", f"{v['hit'] / max(1, v['ans']):.3f}",
                       f"{v['gn'] / n_acc:.3f}", f"{tps:.0f}"]
                csv.write(",".join(map(str, row)) + "\n")
                csv.flush()
                log(f"step {step:5d} | loss {row[4]} | lm {row[5]} | answer acc {row[6]} | lr {row[3]} | "
                    f"gnorm {row[7]} | {tps / 1e3:.0f}K tok/s | {tokens_seen / 1e6:.0f}M tok | {row[2]} s")
                if not math.isfinite(loss_avg):
                    raise FloatingPointError(f"loss is {loss_avg} at step {step}")
                summary["final_loss"] = round(loss_avg, 4)
                for a in acc.values():
                    a.zero_()
                n_acc, t_log, tok_log = 0, now, tokens_seen
            if step % args.eval_every == 0 and time.time() + eval_s < train_deadline:
                table = evaluate(model, run.tok, run.cells, run.eos, device, quick)
                log(format_table(table, f"eval step {step}"))
                summary["evals"].append({"step": step, "table": table})
    except Exception as e:  # keep what was trained: finish() saves and reports it
        traceback.print_exc()
        summary["status"] = f"training stopped at step {step}: {type(e).__name__}: {e}"
        log(f"ERROR: {summary['status']}")
    finally:
        loader.close()
        csv.close()
    log(f"trained {step} steps, {tokens_seen / 1e6:.1f} M tokens in {summary['train_minutes']:.1f} min")


def finish(run):
    """Final evaluation, bf16 save, reload and evaluation of the saved folder,
    train_summary.json and README.md; each stage's failure is reported, not fatal."""
    args, s = run.args, run.summary
    stages = [("eval_final", lambda: evaluate(run.model, run.tok, run.cells, run.eos, run.device)),
              ("save", lambda: save_model(run.model, run.tok, args.out, run.bos, run.eos)),
              ("eval_reloaded", lambda: evaluate(reload_model(args.out, run.device, run.model), run.tok,
                                                 run.cells, run.eos, run.device))]
    for name, stage in stages:
        try:
            result = stage()
        except Exception as e:
            traceback.print_exc()
            s["status"] += f"; {name} failed: {type(e).__name__}: {e}"
            log(f"ERROR: {name} failed: {e}")
            continue
        if name == "save":
            s["weights_mb"], s["save_warnings"] = round(result[0] / 2**20, 2), result[1]
        else:
            s[name] = result
            log(format_table(result, "final (trained weights)" if name == "eval_final" else "reloaded bf16 folder"))
    if "eval_reloaded" in s:
        rt = s["eval_reloaded"]["passkey"]
        log(f"bf16 round trip: passkey after reload {rt} ({'PASS' if min(rt.values()) >= 0.5 else 'LOW'}); "
            f"before save {s.get('eval_final', {}).get('passkey')}")
    s["minutes"] = round((time.time() - T_START) / 60, 2)
    with open(os.path.join(args.out, "train_summary.json"), "w") as f:
        json.dump(s, f, indent=1)
    write_readme(args.out, s, run.example)
    log(f"done in {s['minutes']:.1f} min: status {s['status']}; wrote {args.out}")
    return 0 if s["status"] == "ok" else 1


def main(args):
    run = prepare(args)
    train(run)
    return finish(run)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
