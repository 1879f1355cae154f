#!/usr/bin/env python3
"""The framework a user would otherwise run: transformers with SDPA, on the model bench_decode runs.

    python3 tools/bench_hf.py [--config bench/configs/llama-3.1-8b.json] [--contexts 8K,128K] [--steps 16]

Builds LlamaForCausalLM from the config with random bf16 weights on the GPU (no checkpoint, as
bench_decode's model_open_random), attn_implementation="sdpa". Per context: random prompt ids, one
prefill forward (use_cache=True, logits_to_keep=1 so the lm head runs for the last position only, as
ltri's prefill), then `steps` greedy decode steps, each timed alone between CUDA synchronisations
(the logits of the step on the device, argmax taken there, as a serving loop would). Prints prefill
tokens/s and the median decode step; bench/RESULTS.md sets them beside bench_decode's full-mode figures
from the same device session.
"""
import argparse
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bench_sdpa import parse_list  # tools/, the script's directory


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="bench/configs/llama-3.1-8b.json")
    ap.add_argument("--contexts", default="8K,128K")
    ap.add_argument("--steps", type=int, default=16)
    a = ap.parse_args()

    torch.manual_seed(7)
    config = LlamaConfig.from_json_file(a.config)
    config._attn_implementation = "sdpa"
    t0 = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    torch.cuda.synchronize()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}, {n_params / 1e9:.2f}B parameters (bf16), built in {time.time() - t0:.0f} s")
    print("\n| framework | context | prefill tok/s | decode ms/step (median) |\n|---|---|---|---|")
    gen = torch.Generator(device="cuda").manual_seed(7)
    with torch.inference_mode():  # warm-up: cuBLAS handles, kernel selection
        warm = torch.randint(0, config.vocab_size, (1, 512), device="cuda", generator=gen)
        out = model(input_ids=warm, use_cache=True, logits_to_keep=1)
        model(input_ids=warm[:, :1], past_key_values=out.past_key_values, use_cache=True)
        torch.cuda.synchronize()
        del out
    for ctx in parse_list(a.contexts):
        ids = torch.randint(0, config.vocab_size, (1, ctx), device="cuda", generator=gen)
        with torch.inference_mode():
            torch.cuda.synchronize()
            t0 = time.time()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            torch.cuda.synchronize()
            prefill = time.time() - t0
            cache = out.past_key_values
            nxt = out.logits[:, -1:].argmax(-1)
            steps = []
            for _ in range(a.steps):
                torch.cuda.synchronize()
                t0 = time.time()
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = out.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                steps.append(time.time() - t0)
                cache = out.past_key_values
        print(f"| transformers SDPA | {ctx} | {ctx / prefill:.0f} | {1e3 * statistics.median(steps):.2f} |", flush=True)
        del out, cache
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
