#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of bench/bench_attention.c, per backend.

    python3 tools/bench_sdpa.py [--tokens 512,2K,16K] [--keys 4K,16K,64K] [--heads 32/8] [--head-dim 128]
                                [--reps 20] [--warmup 3] [--json FILE] [--ltri FILE]

A shape (T, keys) is T queries at positions keys - T .. keys - 1 over `keys` keys: query t sees keys
0 .. keys - T + t, causal attention aligned to the bottom right of the T x keys score matrix (what a
chunk of a prompt sees after the chunks before it). bf16 q, k, v uniform in [-1, 1), GQA Hq/Hkv.

Each backend (FLASH_ATTENTION, EFFICIENT_ATTENTION, CUDNN_ATTENTION) is forced with
torch.nn.attention.sdpa_kernel and given the shape in the first of these forms it accepts:
  - is_causal=True, only when T == keys (then top-left and bottom-right alignment coincide);
  - torch.nn.attention.bias.causal_lower_right(T, keys) as attn_mask;
  - an explicit boolean mask [T, keys] (materialised; the slowest form, but the same work);
each with enable_gqa=True (K, V of Hkv heads) and else with K and V repeated to Hq heads. A form
counts only if its output matches an fp32 reference on 128 query rows (the chunk's first and last
64) of two heads to 2e-2 of the largest value: a backend that silently aligned the mask top-left
would fail that check and is reported as such, not timed.

Timing: `warmup` calls, then `reps` samples; a sample is `inner` calls between two CUDA events,
divided by inner (inner chosen so that a sample lasts >= 2 ms, as in bench_attention), and the
median is reported. FLOPs: 4 T d Hq x the mean number of keys a query sees, keys - T + (T + 1) / 2.

--ltri FILE reads bench_attention's --json output and prints both side by side, with the ratio of
ltri's tensor-core kernel to the fastest PyTorch backend on each shape.
"""
import argparse
import json
import math
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
            ("cudnn", SDPBackend.CUDNN_ATTENTION)]
SAMPLE_MIN_MS = 2.0
CHECK_TOL = 2e-2


def parse_list(text):
    """ "512,2K,1M" -> [512, 2048, 1048576], as the bench programs read their lists."""
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        mult = {"K": 1024, "k": 1024, "M": 1 << 20, "m": 1 << 20}.get(tok[-1:], 1)
        out.append(int(tok[:-1] if mult > 1 else tok) * mult)
    return out


def shape_flops(tokens, keys, n_q_heads, head_dim):
    mean_keys = (keys - tokens) + (tokens + 1) / 2.0
    return 4.0 * tokens * mean_keys * head_dim * n_q_heads


class Shape:
    """Inputs of one (tokens, keys) shape, with the K/V repeats and the mask made on first use."""

    def __init__(self, tokens, keys, n_q_heads, n_kv_heads, head_dim, gen):
        dev = torch.device("cuda")
        self.tokens, self.keys, self.group = tokens, keys, n_q_heads // n_kv_heads
        self.scale = 1.0 / math.sqrt(head_dim)

        def uniform(*size):
            return (torch.rand(*size, generator=gen, device=dev) * 2 - 1).to(torch.bfloat16)

        self.q = uniform(1, n_q_heads, tokens, head_dim)
        self.k = uniform(1, n_kv_heads, keys, head_dim)
        self.v = uniform(1, n_kv_heads, keys, head_dim)
        self._repeated = None
        self._mask = None

    def repeated(self):
        if self._repeated is None:
            self._repeated = (self.k.repeat_interleave(self.group, dim=1), self.v.repeat_interleave(self.group, dim=1))
        return self._repeated

    def mask(self):
        if self._mask is None:  # key j visible to query t iff j <= keys - tokens + t
            t = torch.arange(self.tokens, device="cuda")[:, None]
            j = torch.arange(self.keys, device="cuda")[None, :]
            self._mask = j <= t + (self.keys - self.tokens)
        return self._mask

    def forms(self):
        """(name, callable) in the order they are tried."""
        forms = []
        for gqa in (True, False):
            suffix = "+gqa" if gqa else "+repeat"

            def kv(gqa=gqa):
                return (self.k, self.v) if gqa else self.repeated()

            if self.tokens == self.keys:
                forms.append(("is_causal" + suffix, lambda kv=kv, gqa=gqa: F.scaled_dot_product_attention(
                    self.q, *kv(), is_causal=True, scale=self.scale, enable_gqa=gqa)))
            forms.append(("lower_right" + suffix, lambda kv=kv, gqa=gqa: F.scaled_dot_product_attention(
                self.q, *kv(), attn_mask=causal_lower_right(self.tokens, self.keys), scale=self.scale,
                enable_gqa=gqa)))
        for gqa in (True, False):
            suffix = "+gqa" if gqa else "+repeat"
            forms.append(("bool_mask" + suffix, lambda gqa=gqa: F.scaled_dot_product_attention(
                self.q, *((self.k, self.v) if gqa else self.repeated()), attn_mask=self.mask(), scale=self.scale,
                enable_gqa=gqa)))
        return forms

    def check(self, out):
        """max |out - ref| / max |ref| over the first and last 64 queries of heads 0 and Hq - 1."""
        n = min(64, self.tokens)
        rows = torch.cat([torch.arange(n), torch.arange(self.tokens - n, self.tokens)]).cuda()
        worst = 0.0
        for h in (0, self.q.shape[1] - 1):
            kvh = h // self.group
            k, v = self.k[0, kvh].float(), self.v[0, kvh].float()
            s = (self.q[0, h, rows].float() @ k.T) * self.scale
            visible = torch.arange(self.keys, device="cuda")[None, :] <= (rows[:, None] + self.keys - self.tokens)
            ref = torch.softmax(s.masked_fill(~visible, float("-inf")), dim=-1) @ v
            got = out[0, h, rows].float()
            worst = max(worst, ((got - ref).abs().max() / ref.abs().max()).item())
        return worst


def time_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    inner = max(1, min(1000, math.ceil(SAMPLE_MIN_MS / max(start.elapsed_time(end), 1e-3))))
    samples = []
    for _ in range(reps):
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / inner)
    return statistics.median(samples), inner


def bench_backend(shape, backend, reps, warmup):
    """The first form the backend runs correctly, timed; or why none did."""
    notes = []
    with sdpa_kernel([backend]):
        for name, fn in shape.forms():
            try:
                out = fn()
                torch.cuda.synchronize()
            except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
                first_line = (str(e).splitlines() or [type(e).__name__])[0]
                notes.append(f"{name}: {first_line[:100]}")
                continue
            err = shape.check(out)
            del out
            if not err <= CHECK_TOL:
                notes.append(f"{name}: wrong result (rel error {err:.2g})")
                continue
            ms, inner = time_ms(fn, reps, warmup)
            return {"form": name, "ms": ms, "inner": inner, "max_rel_error": err}
    return {"form": None, "notes": notes}


def load_ltri(path):
    table = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                table[(r["tokens"], r["keys"], r["kernel"])] = r["tflops"]
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", default="512,2K,16K")
    ap.add_argument("--keys", default="4K,16K,64K")
    ap.add_argument("--heads", default="32/8")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", help="one JSON line per (shape, backend)")
    ap.add_argument("--ltri", help="bench_attention --json output, to print beside")
    ap.add_argument("--no-fp32", action="store_true", help="accepted for bench_attention's sake; ignored")
    a = ap.parse_args()
    n_q_heads, n_kv_heads = (int(x) for x in a.heads.split("/"))
    if not torch.cuda.is_available():
        sys.exit("bench_sdpa: no CUDA device")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}; "
          f"heads {n_q_heads}/{n_kv_heads}, head_dim {a.head_dim}, bf16, median of {a.reps}\n")
    json_out = open(a.json, "w") if a.json else None
    gen = torch.Generator(device="cuda")
    gen.manual_seed(7)
    results = {}
    print("| tokens | keys | " + " | ".join(f"{n} ms | TFLOP/s | form" for n, _ in BACKENDS) + " |")
    print("|---|---|" + "---|---|---|" * len(BACKENDS))
    for keys in parse_list(a.keys):
        for tokens in parse_list(a.tokens):
            if tokens > keys:
                continue
            shape = Shape(tokens, keys, n_q_heads, n_kv_heads, a.head_dim, gen)
            flops = shape_flops(tokens, keys, n_q_heads, a.head_dim)
            cells = []
            for name, backend in BACKENDS:
                r = bench_backend(shape, backend, a.reps, a.warmup)
                r.update(impl="torch", backend=name, tokens=tokens, keys=keys, n_q_heads=n_q_heads,
                         n_kv_heads=n_kv_heads, head_dim=a.head_dim, flops=flops)
                if r["form"]:
                    r["tflops"] = flops / (r["ms"] * 1e9)
                    results[(tokens, keys, name)] = r["tflops"]
                    cells.append(f"{r['ms']:.3f} | {r['tflops']:.1f} | {r['form']}")
                else:
                    cells.append("- | - | unsupported")
                    print(f"  {name} at {tokens}/{keys}: " + "; ".join(r["notes"]), file=sys.stderr)
                if json_out:
                    json_out.write(json.dumps(r) + "\n")
                    json_out.flush()
            print(f"| {tokens} | {keys} | " + " | ".join(cells) + " |", flush=True)
            del shape
            torch.cuda.empty_cache()
    if a.ltri:
        ltri = load_ltri(a.ltri)
        print("\nTFLOP/s side by side (ltri: bench_attention; torch: the forms above)\n")
        print("| tokens | keys | ltri tensor-core | ltri fp32 | " + " | ".join(n for n, _ in BACKENDS) +
              " | ltri tc / best torch |")
        print("|---|---|---|---|" + "---|" * len(BACKENDS) + "---|")
        for keys in parse_list(a.keys):
            for tokens in parse_list(a.tokens):
                if tokens > keys:
                    continue
                tc, fp32 = ltri.get((tokens, keys, "tc")), ltri.get((tokens, keys, "fp32"))
                torch_vals = [results.get((tokens, keys, n)) for n, _ in BACKENDS]
                best = max((x for x in torch_vals if x), default=None)

                def fmt(x):
                    return f"{x:.1f}" if x else "-"

                ratio = f"{tc / best:.2f}" if tc and best else "-"
                print(f"| {tokens} | {keys} | {fmt(tc)} | {fmt(fp32)} | " + " | ".join(fmt(x) for x in torch_vals) +
                      f" | {ratio} |")
    if json_out:
        json_out.close()


if __name__ == "__main__":
    main()
