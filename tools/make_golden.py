#!/usr/bin/env python3
"""Writes ltri's golden test data from the implementations everyone trusts.

Like llm.c's train_gpt2.py, this is a reference tool, not part of the product: it
runs on the GPU machine (torch, transformers, tokenizers, safetensors; no network)
and writes into tests/data/:

  tokenizers/<name>/tokenizer.json, cases.json
      four small byte-level / SentencePiece-style BPE tokenizers trained with the
      `tokenizers` library, and for a varied text set the ids and decodings that
      library produces (tests/test_tokenizer.c compares against them);
  models/<name>/config.json, *.safetensors, tokenizer.json
      tiny Llama-family checkpoints built from a config with random weights
      (transformers' own classes and save_pretrained), in bf16 / f16 / f32, one
      sharded, one with tied embeddings, one with q/k/v biases, one with llama3
      rope scaling and GQA;
  golden/<name>.safetensors
      for each model and prompt: the input ids, the logits at every position (or
      at sampled rows for long prompts) and a greedy continuation with the margin
      between the best and second-best logit at each step, all computed in
      float64 so that the reference is exact up to transformers' own fp32 RoPE.

Usage (tools/gpu-check.sh runs it):  python3 tools/make_golden.py --out tests/data --corpus .corpus
"""
import argparse
import glob
import json
import os
import random
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import tokenizers
from tokenizers import Tokenizer, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
import transformers
from safetensors.numpy import save_file

SEED = 1234

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Texts every tokenizer is checked on: unicode, digits, whitespace runs, special
# tokens inside text, contractions in both cases, combining marks (NFC), emoji.
CASE_TEXTS = [
    "Hello world",
    "Hello, world! How's it going? I'm fine; they'll see. DON'T SHOUT, it's FINE'S. We've I'd",
    "  leading spaces and   runs of   spaces  ",
    "tabs\tand\nnewlines\n\n\nand \r\n crlf\r\n\r\nend",
    "numbers 1234567 3.14159 and 1,000,000 and 0x1F and \u0661\u0662\u0663 (arabic-indic) 12345678901234",
    "unicode: caf\u00e9 na\u00efve fa\u00e7ade \u03a9\u03bc\u03ad\u03b3\u03b1 \u041f\u0440\u0438\u0432\u0435\u0442 "
    "\u043c\u0438\u0440 \u4f60\u597d\u4e16\u754c \u3053\u3093\u306b\u3061\u306f \uc548\ub155\ud558\uc138\uc694",
    "emoji \U0001F600\U0001F44D\U0001F3FD family \U0001F468\u200d\U0001F469\u200d\U0001F467 flags \U0001F1EB\U0001F1F7",
    "combining: e\u0301 vs \u00e9, A\u030a vs \u00c5",
    "special <|begin_of_text|>inside<|eot_id|> text <|end_of_text|> and <s> </s> <unk>",
    "code: def f(x):\n    return x**2  # comment\n\n\tif (a && b) { c->d[0] = 'e'; }\n",
    "",
    " ",
    "a",
    "\n",
    "   \n   ",
    "url https://example.com/path?q=1&r=two#frag and email someone@example.org",
    "mixed CamelCaseWords and snake_case_words and kebab-case-words",
    "repeated aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbb",
    "'s 's 'S 'Ll quotes \u2019curly\u2019 \u201cdouble\u201d and 'single'",
    "zero\u200bwidth and nbsp\u00a0here and\u3000ideographic space",
    "\u00c0\u00c9\u00ce\u00d5\u00dc \u00e0\u00e9\u00ee\u00f5\u00fc \u00df \u1e9e \ufb01 ligature",
    "The passkey is 71432. Remember it. The passkey is 71432.",
    "<|eot_id|>",
    "<|eot_id|><|eot_id|>",
    "trailing space ",
    "   ",
    "\u0000 nul and \u0007 bell and \u007f del",
]

# name -> (model class, config class, tokenizer, storage dtype, shard size, config kwargs)
MODEL_SPECS = [
    ("llama3-gqa-bf16", "Llama", "llama3", torch.bfloat16, "150KB",
     dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
          num_key_value_heads=1, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=500000.0,
          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64},
          tie_word_embeddings=False)),
    ("qwen2-tied-f32", "Qwen2", "qwen2", torch.float32, None,
     dict(hidden_size=128, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=1000000.0,
          tie_word_embeddings=True, use_sliding_window=False)),
    ("mistral-headdim-f16", "Mistral", "gpt2", torch.float16, None,
     dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
          rope_theta=10000.0, sliding_window=None, tie_word_embeddings=False)),
    ("llama2-mha-bias-f32", "Llama", "sp", torch.float32, None,
     dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
          rope_scaling={"rope_type": "linear", "factor": 2.0}, attention_bias=True, mlp_bias=True,
          tie_word_embeddings=False)),
]
MODEL_VOCAB = 640  # >= every tokenizer's size, like real checkpoints' padded vocabularies


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- corpus

def load_corpus(corpus_dir):
    lines = []
    for path in sorted(glob.glob(os.path.join(corpus_dir, "*.txt"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines += [l.rstrip("\n") for l in f if l.strip()]
    # Some non-English lines so that multi-byte merges exist.
    lines += [t for t in CASE_TEXTS if t] * 3
    if len(lines) < 100:
        raise SystemExit(f"corpus in {corpus_dir} is too small ({len(lines)} lines)")
    log(f"corpus: {len(lines)} lines")
    return lines


# ---------------------------------------------------------------- tokenizers

def byte_level_tokenizer(lines, pre_tok, normalizer, ignore_merges, specials, bos, vocab_size):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines, trainer)
    tok.add_special_tokens(specials)
    # A non-special added token too: it is split out of text but kept by skip_special.
    tok.add_tokens([tokenizers.AddedToken("<tool>", special=False, normalized=False)])
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, bos_id)])
    return tok


def sentencepiece_bpe_tokenizer(lines, vocab_size):
    """Llama-2 / Mistral-v0.1 layout: Prepend+Replace normalizer, byte fallback,
    the byte tokens <0x00>..<0xFF> in the model vocab (not added tokens)."""
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False, limit_alphabet=200)
    tok.train_from_iterator(lines, trainer)
    d = json.loads(tok.to_str())
    # Byte tokens live in the model vocabulary of real files, not in added_tokens.
    d["added_tokens"] = [t for t in d["added_tokens"] if t["content"] not in byte_tokens]
    tok = Tokenizer.from_str(json.dumps(d))
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", bos_id)])
    return tok


def build_tokenizers(lines):
    toks = {}
    toks["llama3"] = (byte_level_tokenizer(
        lines,
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                          use_regex=False)]),
        None, True, ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], "<|begin_of_text|>", 520),
        "<|begin_of_text|>", ["<|end_of_text|>", "<|eot_id|>"])
    toks["gpt2"] = (byte_level_tokenizer(
        lines, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), None, False,
        ["<|endoftext|>"], None, 480), None, ["<|endoftext|>"])
    toks["qwen2"] = (byte_level_tokenizer(
        lines,
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                                          use_regex=False)]),
        normalizers.NFC(), False, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, 500),
        None, ["<|endoftext|>", "<|im_end|>"])
    toks["sp"] = (sentencepiece_bpe_tokenizer(lines, 600), "<s>", ["</s>"])
    return toks


def write_tokenizer_cases(name, tok, bos, lines, out_dir):
    d = os.path.join(out_dir, "tokenizers", name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    rng = random.Random(SEED)
    texts = list(CASE_TEXTS)
    # Longer texts: runs of corpus lines, joined by varied whitespace.
    for _ in range(6):
        i = rng.randrange(0, len(lines) - 40)
        sep = rng.choice(["\n", " ", "\n\n", "  \n"])
        texts.append(sep.join(lines[i:i + 30]))
    cases = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        cases.append({
            "text": t,
            "ids": ids,
            "ids_with_bos": tok.encode(t, add_special_tokens=True).ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    with open(os.path.join(d, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_id": tok.token_to_id(bos) if bos else None, "cases": cases}, f, ensure_ascii=False,
                  indent=1)
    log(f"tokenizer {name}: vocab {tok.get_vocab_size()}, {len(cases)} cases")


# ---------------------------------------------------------------- models

def make_config(family, kw, tok, bos, eos_list):
    """Builds the config; the RoPE settings are passed in the form this
    transformers understands (rope_scaling + rope_theta up to 4.x,
    rope_parameters from 5.x) and checked to have been taken, so a silently
    ignored key can never make the golden data test the wrong thing."""
    cls = getattr(transformers, f"{family}Config")
    kw = dict(kw)
    kw.update(vocab_size=MODEL_VOCAB, initializer_range=0.2, hidden_act="silu",
              bos_token_id=tok.token_to_id(bos) if bos else None,
              eos_token_id=[tok.token_to_id(e) for e in eos_list] if len(eos_list) > 1 else tok.token_to_id(
                  eos_list[0]))
    theta = kw.pop("rope_theta")
    scaling = kw.pop("rope_scaling", None)
    want_type = (scaling or {}).get("rope_type", "default")
    rope_parameters = {"rope_type": "default", "rope_theta": theta}
    rope_parameters.update(scaling or {})
    attempts = [dict(rope_parameters=rope_parameters), dict(rope_theta=theta, rope_scaling=scaling)]
    if int(transformers.__version__.split(".")[0]) < 5:
        attempts.reverse()
    for extra in attempts:
        try:
            cfg = cls(**kw, **extra)
        except (TypeError, ValueError) as e:
            log(f"{family}Config({list(extra)}) rejected: {e}")
            continue
        d = cfg.to_dict()
        text = json.dumps(d)
        if want_type in text and str(theta) in text:
            return cfg
        log(f"{family}Config({list(extra)}) did not keep rope {want_type}/{theta}: "
            f"{ {k: v for k, v in d.items() if 'rope' in k} }")
    raise SystemExit(f"could not build {family}Config with rope {want_type} theta {theta}")


def randomize_(model, gen):
    """Random init leaves RMSNorm weights at 1 and biases at 0: values that would
    hide a missing multiply or add. Give every such parameter random values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.25 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float32))


def forward_logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float64).numpy()


def greedy(model, ids, n):
    """Greedy continuation by full recomputation in float64 (no cache, so no cache
    code of transformers is trusted), with the top-1/top-2 margin at each step."""
    ids = list(ids)
    out, margins = [], []
    for _ in range(n):
        logits = forward_logits(model, ids)[-1]
        order = np.argsort(-logits, kind="stable")
        out.append(int(order[0]))
        margins.append(float(logits[order[0]] - logits[order[1]]))
        ids.append(int(order[0]))
    return out, margins


def build_model(name, family, tok_name, dtype, shard, kw, toks, lines, out_dir):
    tok, bos, eos_list = toks[tok_name]
    gen = torch.Generator().manual_seed(SEED + len(name))
    torch.manual_seed(SEED + len(name))
    cfg = make_config(family, kw, tok, bos, eos_list)
    model_cls = getattr(transformers, f"{family}ForCausalLM")
    try:
        model = model_cls._from_config(cfg, attn_implementation="eager")
    except Exception as e:  # the private constructor moved: the default attention is exact too
        log(f"_from_config(eager) failed ({e}); using the default attention")
        model = model_cls(cfg)
    randomize_(model, gen)
    model = model.to(dtype)  # round to the storage type first: the reference uses the stored values
    mdir = os.path.join(out_dir, "models", name)
    shutil.rmtree(mdir, ignore_errors=True)
    if shard:
        model.save_pretrained(mdir, max_shard_size=shard)
    else:
        model.save_pretrained(mdir)
    tok.save(os.path.join(mdir, "tokenizer.json"))
    with open(os.path.join(mdir, "config.json")) as f:
        log(f"{name}/config.json: {f.read()}")
    # The reference is the checkpoint as a user loads it. Not model.to(float64):
    # .to() also casts the RoPE inv_freq buffer, which .to(bfloat16) above
    # rounded to bf16, while from_pretrained computes it afresh in fp32.
    del model
    model = model_cls.from_pretrained(mdir, dtype=torch.float64, attn_implementation="eager").eval()
    rot = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
    log(f"{name}: reloaded in {next(model.parameters()).dtype}; inv_freq buffer dtype "
        f"{rot[0].dtype if rot else None}")

    rng = random.Random(SEED)
    tensors = {}
    # "text": a corpus paragraph through the model's own tokenizer (with its BOS).
    i = rng.randrange(0, len(lines) - 20)
    text = " ".join(lines[i:i + 12])
    ids = tok.encode(text, add_special_tokens=True).ids[:120]
    cases = {"text": (ids, None, 16)}
    # "long": random ids far past the llama3 original context, sampled logit rows.
    if name.startswith("llama3"):
        n_long = 1500
        long_ids = [rng.randrange(0, tok.get_vocab_size()) for _ in range(n_long)]
        rows = sorted(set(list(range(0, n_long, 47)) + [n_long - 1]))
        cases["long"] = (long_ids, rows, 8)
    meta = {"model": name, "dtype": str(dtype).replace("torch.", ""), "text": text, "cases": {}}
    for cname, (cids, rows, n_greedy) in cases.items():
        logits = forward_logits(model, cids)
        if rows is None:
            rows = list(range(len(cids)))
        g, m = greedy(model, cids, n_greedy)
        tensors[f"{cname}.input_ids"] = np.array(cids, dtype=np.int32)
        tensors[f"{cname}.logit_rows"] = np.array(rows, dtype=np.int32)
        tensors[f"{cname}.logits"] = logits[rows].astype(np.float32)
        tensors[f"{cname}.greedy_ids"] = np.array(g, dtype=np.int32)
        tensors[f"{cname}.greedy_margin"] = np.array(m, dtype=np.float32)
        meta["cases"][cname] = {"n_tokens": len(cids), "n_rows": len(rows), "n_greedy": n_greedy,
                                "min_margin": float(min(m)), "logit_absmax": float(np.abs(logits).max())}
        log(f"model {name} case {cname}: {len(cids)} tokens, greedy {g[:8]}..., min margin {min(m):.4f}")
    gdir = os.path.join(out_dir, "golden")
    os.makedirs(gdir, exist_ok=True)
    save_file(tensors, os.path.join(gdir, f"{name}.safetensors"), metadata={"generator": "tools/make_golden.py"})
    with open(os.path.join(gdir, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data")
    ap.add_argument("--corpus", default=".corpus")
    args = ap.parse_args()
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    lines = load_corpus(args.corpus)
    toks = build_tokenizers(lines)
    for name, (tok, bos, _) in toks.items():
        write_tokenizer_cases(name, tok, bos, lines, args.out)
    for name, family, tok_name, dtype, shard, kw in MODEL_SPECS:
        build_model(name, family, tok_name, dtype, shard, kw, toks, lines, args.out)
    log("done")


if __name__ == "__main__":
    main()
