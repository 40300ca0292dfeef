"""The throughput table of the README: fastmlp vs PyTorch CPU and vs the NumPy reference, 2 threads, one epoch
of 60,000 MNIST-shaped samples (synthetic digits), each trainer in its own subprocess.

    OPENBLAS_NUM_THREADS=2 .venv/bin/python benchmarks/compare.py [--repeats R] [--warmup S] [results.json]

Each pair of trainers runs R times (default 3) alternately and the medians are compared: on a shared
machine a single epoch can be 30-50% off, and alternating puts a slow moment on both sides. Each
trainer trains on a subset for --warmup seconds (default 1) before it is timed.
"""
import argparse
import json

from fastmlp import bench

CASES = [((100,), 10), ((100,), 32), ((100,), 128), ((512, 512), 128)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=bench.WARMUP_SECONDS,
                        help="seconds each trainer trains on a subset before it is timed")
    parser.add_argument("results", nargs="?", help="write every figure to this JSON file")
    args = parser.parse_args()
    rows = []
    print("| network | batch | fastmlp | PyTorch | fastmlp / PyTorch | NumPy reference | fastmlp / NumPy "
          "| fastmlp GFLOP/s (share of matmul) |")
    print("|---|---|---|---|---|---|---|---|")
    for hidden, bs in CASES:
        rt = bench.run(hidden=hidden, batch_size=bs, threads=2, vs="torch", repeats=args.repeats,
                       warmup_seconds=args.warmup)
        rn = bench.run(hidden=hidden, batch_size=bs, threads=2, vs="numpy", matmul=False,
                       repeats=args.repeats, warmup_seconds=args.warmup)
        rows.append({"vs_torch": rt, "vs_numpy": rn})
        print(f"| {rt['network']} | {bs} | {rt['fastmlp_samples_per_second']:,.0f} "
              f"| {rt['reference_samples_per_second']:,.0f} | {rt['ratio']:.2f}x "
              f"| {rn['reference_samples_per_second']:,.0f} | {rn['ratio']:.2f}x "
              f"| {rt['fastmlp_gflops']:.0f} ({100 * rt['fastmlp_share_of_matmul']:.0f}% of "
              f"{rt['matmul_gflops']:.0f}) |", flush=True)
    for row in rows:
        for key in ("vs_torch", "vs_numpy"):
            r = row[key]
            runs = ", ".join(f"{x:,.0f}" for x in r["fastmlp_runs_samples_per_second"])
            ref = ", ".join(f"{x:,.0f}" for x in r["reference_runs_samples_per_second"])
            print(f"  {r['network']} b{r['batch_size']}: fastmlp runs {runs}; {r['vs']} runs {ref}")
    if args.results:
        with open(args.results, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
