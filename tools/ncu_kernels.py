#!/usr/bin/env python3
"""Sums an ncu CSV of kernel durations per kernel (plain python3, no packages).

    ncu --profile-from-start off --clock-control none --print-units base \
        --print-kernel-base function --metrics gpu__time_duration.sum --csv \
        build/bench_decode ... --ncu > step.csv
    python3 tools/ncu_kernels.py step.csv [--sequence N]

Prints one row per kernel name (calls, total us, us per call, share of the
sum), the sum of all durations (the step's time with no gaps between
kernels: set it beside the step's measured time), and with --sequence the
first N kernels in launch order (one layer's pipeline)."""
import csv
import sys


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    seq = 0
    if "--sequence" in args:
        i = args.index("--sequence")
        seq = int(args[i + 1])
        del args[i : i + 2]
    rows = []
    with open(args[0], newline="") as f:
        lines = [l for l in f if l.startswith('"')]  # ncu's own messages start with "=="
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = r.get("Metric Unit", "nsecond")
        scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}.get(unit)
        if scale is None:
            sys.exit(f"ncu_kernels: unknown unit {unit!r}")
        rows.append((int(r["ID"]), r["Kernel Name"], float(r["Metric Value"].replace(",", "")) * scale))
    if not rows:
        sys.exit("ncu_kernels: no gpu__time_duration.sum rows (was the step profiled?)")
    rows.sort()
    per = {}
    for _, name, us in rows:
        n, t = per.get(name, (0, 0.0))
        per[name] = (n + 1, t + us)
    total = sum(t for _, t in per.values())
    print("| kernel | calls | total us | us / call | share |")
    print("|---|---|---|---|---|")
    for name, (n, t) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {n} | {t:.1f} | {t / n:.2f} | {100 * t / total:.1f}% |")
    print(f"\n{len(rows)} kernels, {total / 1e3:.3f} ms of kernel time")
    if seq:
        print(f"\nthe first {seq} in launch order:")
        for i, name, us in rows[:seq]:
            print(f"  {i:5d} {us:8.2f} us  {name}")


if __name__ == "__main__":
    main()
