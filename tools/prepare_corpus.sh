#!/usr/bin/env bash
# Builds .corpus-train/, the plain-English training text for the small default
# model (tools/train_tiny.py), from Debian packages: the GPU machine has no
# network, so the text is made here and carried there (gzipped, so the device
# call stays far below its transfer limit).
#
#   bash tools/prepare_corpus.sh [OUT_DIR]      (default: .corpus-train; root, Debian)
#
# Writes OUT_DIR/{kjv,gcide,python-docs,debian-docs,manpages,misc}.txt.gz (about
# 35 MB of UTF-8 text in all), words.txt.gz (the word list NIAH keys are drawn
# from) and SOURCES.txt (package, version and size of each part). Every package
# is fetched with `apt-get download` and unpacked with `dpkg -x` into a temporary
# folder: nothing is installed. Caps keep one source from drowning the others.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/.corpus-train}
WORK=$(mktemp -d /tmp/ltri-corpus.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

for tool in apt-get apt-cache dpkg dpkg-deb python3 man col; do
    command -v "$tool" >/dev/null || { echo "prepare_corpus: '$tool' not found (Debian needed)" >&2; exit 1; }
done

# The python docs package is versioned (python3.11-doc on bookworm): ask which
# one python3-doc points at rather than hard-coding it.
PYDOC=$(apt-cache depends python3-doc 2>/dev/null | awk '/Depends: python3\.[0-9]+-doc/ {print $2; exit}')
if [ -z "$PYDOC" ]; then
    echo "prepare_corpus: apt-cache knows no python3-doc; running apt-get update" >&2
    apt-get update -qq
    PYDOC=$(apt-cache depends python3-doc | awk '/Depends: python3\.[0-9]+-doc/ {print $2; exit}')
fi
[ -n "$PYDOC" ] || { echo "prepare_corpus: cannot resolve python3-doc's versioned package" >&2; exit 1; }

PACKAGES=(bible-kjv bible-kjv-text dict-gcide "$PYDOC" debian-reference-en debian-policy developers-reference
          doc-debian debian-history jargon-text fortunes gnu-standards manpages manpages-dev wamerican)

mkdir -p "$WORK/debs" "$WORK/x"
# _apt cannot write into a root-only mktemp folder; let it, to avoid the sandbox warning.
chmod 755 "$WORK" && chmod 777 "$WORK/debs"
echo "prepare_corpus: downloading ${#PACKAGES[@]} packages" >&2
if ! (cd "$WORK/debs" && apt-get download -q "${PACKAGES[@]}" >"$WORK/apt.log" 2>&1); then
    echo "prepare_corpus: apt-get download failed; running apt-get update and retrying" >&2
    apt-get update -qq
    (cd "$WORK/debs" && apt-get download -q "${PACKAGES[@]}" >"$WORK/apt.log" 2>&1) ||
        { cat "$WORK/apt.log" >&2; exit 1; }
fi
for deb in "$WORK"/debs/*.deb; do
    dpkg -x "$deb" "$WORK/x"
    dpkg-deb -f "$deb" Package Version | paste -sd' ' | sed 's/^Package: //; s/ Version: / /' >>"$WORK/versions.txt"
done
X=$WORK/x

# The KJV text ships compressed in the bible program's own format: run the
# unpacked program on the whole range, Genesis 1:1 to Revelation 22:21, with
# lines long enough that no verse is wrapped.
echo "prepare_corpus: dumping the KJV bible" >&2
"$X/usr/bin/bible" -l2000 -p "$X/usr/lib" "gen1:1-rev22:21" </dev/null >"$WORK/kjv.raw" 2>"$WORK/bible.err" ||
    { cat "$WORK/bible.err" >&2; echo "prepare_corpus: the bible program failed" >&2; exit 1; }

# Man pages of the Linux man-pages project (sections 2-5 and 7), rendered as
# ASCII; `.so` stubs only point at another page and are skipped.
echo "prepare_corpus: rendering man pages" >&2
: >"$WORK/man.raw"
for page in "$X"/usr/share/man/man{2,3,4,5,7}/*; do
    first=$(zcat -f "$page" 2>/dev/null | head -c 64 || true)
    case "$first" in .so\ *) continue ;; esac
    LC_ALL=C MANWIDTH=80 man -l -P cat "$page" 2>/dev/null | col -bx >>"$WORK/man.raw" || true
    printf '\n\n' >>"$WORK/man.raw"
done

mkdir -p "$OUT"
rm -f "$OUT"/*.txt.gz "$OUT/SOURCES.txt"
python3 - "$X" "$WORK" "$OUT" <<'PY'
"""Cleans each source into plain text and writes it gzipped (mtime 0, so a
re-run gives the same bytes)."""
import glob, gzip, os, re, sys

X, WORK, OUT = sys.argv[1:4]
MB = 1 << 20


def read(path):
    opener = gzip.open if path.endswith((".gz", ".dz")) else open  # dictzip is gzip-readable
    with opener(path, "rb") as f:
        data = f.read()
    return data.decode("utf-8", errors="replace").replace("\ufffd", "")


def tidy(text):
    """Common clean-up: no control characters but tab/newline, no trailing
    spaces, no box-drawing rule lines, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    lines = []
    for line in text.split("\n"):
        line = line.rstrip()
        if len(line) >= 4 and re.fullmatch(r"\s*[-=_.*~+|#]+\s*", line):
            continue  # underlines and table rules: tokens with nothing to learn
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def cap(text, limit):
    """Keeps whole paragraphs, spread evenly over the source: take every k-th
    block of paragraphs so that the kept part samples all of it."""
    if len(text.encode()) <= limit:
        return text
    paras = text.split("\n\n")
    blocks = [paras[i:i + 20] for i in range(0, len(paras), 20)]
    keep = len(text.encode()) / limit
    out, acc = [], 0.0
    for i, b in enumerate(blocks):
        acc += 1.0
        if acc >= keep:
            acc -= keep
            out.append("\n\n".join(b))
    return "\n\n".join(out) + "\n"


def kjv():
    """'Genesis 1' headings and '  1 In the beginning...' verses -> a heading
    and the chapter's verses, one a line, without verse numbers."""
    out = []
    for line in read(os.path.join(WORK, "kjv.raw")).split("\n"):
        m = re.match(r"\s+\d+ (.*)", line)
        if m:
            out.append(m.group(1).strip())
        elif line.strip():
            out.append("\n" + line.strip() + "\n")
    return tidy("\n".join(out))


def gcide():
    """dictd's GCIDE: 'Word \\Pro*nun"ci*a`tion\\, n. [etymology]' then wrapped
    definition lines with [1913 Webster] source tags. Keep 'Word, n.' and the
    definitions as plain paragraphs."""
    raw = read(os.path.join(X, "usr/share/dictd/gcide.dict.dz"))
    entries = re.split(r"\n(?=\S)", raw)
    out = []
    for e in entries:
        if e.startswith("00-database") or len(e) < 20:
            continue
        e = re.sub(r"\\[^\\\n]*\\", "", e)                 # pronunciation
        e = re.sub(r"\[[^\[\]]*\]", "", e)                  # etymology and source tags
        e = re.sub(r"\[[^\[\]]*\]", "", e)                  # ...nested once
        e = re.sub(r"[{}]", "", e)                          # cross-reference braces
        paras = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", e)]
        paras = [p.replace(" ,", ",").replace(" .", ".") for p in paras if len(p) > 2]
        if paras:
            out.append("\n".join(paras))
    return tidy("\n\n".join(out))


def python_docs(info):
    """The info manual: drop node headers, menus, the index and tag table, the
    footnote links, and reduce '*note math: af.' cross references to 'math'."""
    t = read(info)
    t = t.split("\x1f\nTag Table:")[0]
    t = re.sub(r"\x1f\n?File: [^\n]*\n", "\n", t)
    t = re.sub(r"(?m)^\* .*(::.*|\(line +\d+\))$\n?", "", t)      # menus and index entries
    # A reference ends at its '.' (dropped) or ',' (kept: it is also the sentence's comma).
    t = re.sub(r"\*[Nn]ote[ \n]+([^:*]{1,120}?)::", r"\1", t)
    t = re.sub(r"\*[Nn]ote[ \n]+([^:*]{1,120}?):[ \n]*[0-9a-f]+([.,])",
               lambda m: m.group(1) + ("," if m.group(2) == "," else ""), t)
    t = re.sub(r"\n *\(\d+\) https?://\S+", "", t)
    t = re.sub(r"\n *-{5,} Footnotes -{5,}\n", "\n", t)
    return tidy(t)


def fortunes():
    keep = ["art", "computers", "definitions", "education", "food", "fortunes", "goedel", "humorists", "kids",
            "law", "linux", "literature", "love", "magic", "medicine", "news", "people", "pets", "platitudes",
            "riddles", "science", "songs-poems", "startrek", "tao", "wisdom", "work"]
    parts = []
    for name in keep:
        p = os.path.join(X, "usr/share/games/fortunes", name)
        if os.path.exists(p):
            parts.append(re.sub(r"\n%\n", "\n\n", read(p)))
    return tidy("\n\n".join(parts))


def unjustify(text):
    """nroff pads justified lines with runs of spaces between words; keep one
    (the leading indentation stays)."""
    return re.sub(r"(?<=\S) {2,}(?=\S)", " ", text)


def join(paths):
    return tidy("\n\n".join(read(p) for p in paths))


def words():
    """Lower-case ASCII words of 4-9 letters: keys like 'quiet-lantern' for NIAH."""
    ws = sorted({w.strip() for w in read(os.path.join(X, "usr/share/dict/american-english")).split("\n")
                 if re.fullmatch(r"[a-z]{4,9}", w.strip())})
    return "\n".join(ws) + "\n"


D = os.path.join(X, "usr/share")
SOURCES = [
    ("kjv", "bible-kjv, bible-kjv-text: King James Bible, all 66 books", kjv, 6 * MB),
    ("gcide", "dict-gcide: GNU Collaborative International Dictionary of English, definitions", gcide, 9 * MB),
    ("python-docs", "python3.x-doc: the Python manual (info format)",
     lambda: python_docs(glob.glob(os.path.join(D, "info/python3*.info.gz"))[0]), 9 * MB),
    ("debian-docs", "debian-reference-en, debian-policy, developers-reference, debian-history, doc-debian",
     lambda: join([os.path.join(D, "debian-reference/debian-reference.en.txt.gz"),
                   os.path.join(D, "doc/debian-policy/policy.txt.gz"),
                   os.path.join(D, "developers-reference/developers-reference.txt.gz"),
                   os.path.join(D, "doc/debian-history/docs/project-history.en.txt.gz"),
                   os.path.join(D, "doc/debian/constitution.txt.gz"),
                   os.path.join(D, "doc/debian/social-contract.txt.gz"),
                   os.path.join(D, "doc/debian/bug-reporting.txt.gz"),
                   os.path.join(D, "doc/debian/mailing-lists.txt.gz")]), 4 * MB),
    ("manpages", "manpages, manpages-dev: Linux man-pages sections 2-5 and 7, rendered by man(1)",
     lambda: tidy(unjustify(read(os.path.join(WORK, "man.raw")))), 6 * MB),
    ("misc", "jargon-text (Jargon File 4.4.7), gnu-standards (GNU coding standards), fortunes (selected files)",
     lambda: join([os.path.join(D, "doc/jargon-text/jargon.txt.gz"),
                   os.path.join(D, "doc/gnu-standards/standards.text.gz"),
                   os.path.join(D, "doc/gnu-standards/maintain.text.gz")]) + "\n" + fortunes(), 5 * MB),
]

with open(os.path.join(WORK, "versions.txt")) as f:
    versions = f.read()
summary = ["# .corpus-train: text for tools/train_tiny.py, made by tools/prepare_corpus.sh", "",
           "## Packages (apt-get download, Debian)", versions.strip(), "", "## Files"]
total = 0
for name, desc, fn, limit in SOURCES:
    text = cap(fn(), limit)
    n = len(text.encode())
    if n < 100_000:
        sys.exit(f"prepare_corpus: {name} came out at {n} bytes: its source must have changed")
    with open(os.path.join(OUT, name + ".txt.gz"), "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(text.encode())
    total += n
    summary.append(f"{name}.txt.gz: {n / MB:.1f} MB of text ({text.count(chr(10))} lines) - {desc}")
    print(f"prepare_corpus: {name}: {n / MB:.1f} MB", file=sys.stderr)
w = words()
with open(os.path.join(OUT, "words.txt.gz"), "wb") as raw, \
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
    f.write(w.encode())
summary.append(f"words.txt.gz: {w.count(chr(10))} words - wamerican, lower-case a-z, 4-9 letters (NIAH keys)")
summary.append(f"total text: {total / MB:.1f} MB")
with open(os.path.join(OUT, "SOURCES.txt"), "w") as f:
    f.write("\n".join(summary) + "\n")
print(f"prepare_corpus: total {total / MB:.1f} MB of text", file=sys.stderr)
PY
du -sh "$OUT" >&2
