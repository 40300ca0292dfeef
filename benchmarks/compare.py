"""fastmlp against its peers: PyTorch eager, torch.compile, JAX (jit per step, and jit over lax.scan of
chunks of minibatches) and scikit-learn, one epoch each, 2 threads, every trainer in its own process.

    OPENBLAS_NUM_THREADS=2 python benchmarks/compare.py [--repeats R] [--data fashion-mnist] [results.json]

Every trainer starts from the same initial weights and visits the samples in the same order
(scikit-learn takes neither from outside), with the same loss, optimizer and learning rate, and its
final weights are scored on the test split: a fast trainer that learns nothing shows. Each trainer of
a row gets a process of its own (bench.MeasuringProcess) that stays for the row's rounds. In each
round every trainer warms up and trains its epoch once, one after another (each round starting one
trainer further along, each after the cores look idle again), and each figure is the median of R
rounds: with no process to start between them, the trainers' epochs follow one another within
seconds, so a slow spell of a shared machine (they last seconds) falls on all of them. The rows are
printed at the end (each one's figures on stderr as it completes). Before and after each epoch this
script measures the round trip of a cache line between two of its threads (core_latency.py), and
prints it beside the epoch's samples/s: on a virtual machine whose host moves the virtual CPUs, a
slow round shows whether they were then far apart or on one core. A second table counts only the
epochs that ran, by those round trips, on two cores sharing an L3. `--report FILE` prints the tables
of a run saved in FILE.

The ceiling is NumPy's float32 2048x2048 matmul, measured as the environment leaves OpenBLAS (some
machines pin it to an older kernel with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE) and with those two
variables removed for its subprocess; the BLAS kernel that ran is printed beside each. The unpinned
one, the ceiling, is measured before every row and the best counts.

--contention measures what one busy background process per core does to training: fastmlp with the
default thread count against one thread, 784-100-10 at batch 32. The busy processes are started and
stopped by this script (each ends by itself after a bounded time).

Peers that are not installed are skipped (pip install 'fastmlp[torch,jax,sklearn]').
"""
import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

import core_latency  # (benchmarks/, beside this script)
from fastmlp import bench
from fastmlp.errors import FastMLPError

# (hidden layers, batch size, optimizer, dtype)
CASES = [
    ((100,), 1, "sgd", "float32"),
    ((100,), 10, "sgd", "float32"),
    ((100,), 32, "sgd", "float32"),
    ((100,), 128, "sgd", "float32"),
    ((100,), 512, "sgd", "float32"),
    ((512, 512), 32, "sgd", "float32"),
    ((512, 512), 128, "sgd", "float32"),
    ((2048, 2048), 256, "sgd", "float32"),
    ((100,), 32, "adam", "float32"),
    ((100,), 32, "sgd", "float64"),
]
PEERS = ["torch", "torch-compile", "jax-jit", "jax", "sklearn"]
TITLES = {"fastmlp": "fastmlp", "torch": "PyTorch", "torch-compile": "torch.compile", "jax-jit": "JAX jit",
          "jax": "JAX scan", "sklearn": "scikit-learn"}
# scikit-learn runs its minibatch loop in Python: below this batch size an epoch takes minutes
SKLEARN_MIN_BATCH = 32


def available(peer):
    module = {"torch": "torch", "torch-compile": "torch", "jax-jit": "jax", "jax": "jax", "sklearn": "sklearn"}[peer]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def label(case):
    hidden, bs, opt, dtype = case
    extra = "".join(f", {x}" for x in (opt, dtype) if x not in ("sgd", "float32"))
    return f"784-{'-'.join(map(str, hidden))}-10, {bs}{extra}"


def measure_row(case, peers, args):
    hidden, bs, opt, dtype = case
    trainers = ["fastmlp"] + [p for p in peers if not (p == "sklearn" and bs < SKLEARN_MIN_BATCH)]
    runs = {t: [] for t in trainers}
    trips = {t: [] for t in trainers}
    accuracy = {}
    done = None
    for t, how in bench.alternate(trainers, args.repeats, args.threads):
        before = core_latency.round_trip_ns()
        try:
            r = how(hidden=hidden, batch_size=bs, threads=args.threads, n_samples=args.samples, data=args.data,
                    warmup_seconds=args.warmup, optimizer=opt, dtype=dtype)
        except FastMLPError as e:
            print(f"  {label(case)}: {t} failed: {e}", file=sys.stderr, flush=True)
            continue
        runs[t].append(r["samples_per_second"])
        trips[t].append([before, core_latency.round_trip_ns()])
        accuracy[t] = r["test_accuracy"]
        if t == "fastmlp":
            done = r["done_flops_per_sample"]
    medians = {t: statistics.median(v) for t, v in runs.items() if v}
    return {"case": label(case), "hidden": list(hidden), "batch_size": bs, "optimizer": opt, "dtype": dtype,
            "runs": runs, "round_trip_ns": trips, "samples_per_second": medians, "test_accuracy": accuracy,
            "flops_per_sample": bench.flops_per_sample(bench.sizes_of(hidden)), "done_flops_per_sample": done}


def _k(x):
    return "—" if x is None else (f"{x / 1000:.0f}k" if x >= 10000 else f"{x / 1000:.1f}k")


def _ns(x):
    return "—" if x is None else f"{x:.0f}"


def print_row(row, peers, ceiling):
    sps = row["samples_per_second"]
    f = sps.get("fastmlp")
    best = max((sps[p] for p in peers if p in sps and p != "sklearn"), default=None)
    ratio = f"{f / best:.2f}x" if f and best else "—"
    gf = f * row["flops_per_sample"] / 1e9 if f else None
    done = f * row["done_flops_per_sample"] / 1e9 if f and row["done_flops_per_sample"] else None
    share = f"{gf:.0f} ({100 * gf / ceiling:.0f}%)" if gf and ceiling else "—"
    done_share = f"{done:.0f} ({100 * done / ceiling:.0f}%)" if done and ceiling else "—"
    cells = [row["case"], _k(f)] + [_k(sps.get(p)) for p in peers] + [ratio, share, done_share]
    print("| " + " | ".join(cells) + " |", flush=True)


def near_medians(row):
    """Each trainer's median over its epochs whose round trips before and after were both those of
    two cores sharing an L3 (core_latency.shares_l3), and how many there were."""
    out = {}
    for t, v in row["runs"].items():
        near = [x for x, (a, b) in zip(v, row.get("round_trip_ns", {}).get(t, [])) if
                core_latency.shares_l3(a) and core_latency.shares_l3(b)]
        if near:
            out[t] = (statistics.median(near), len(near))
    return out


def report(out):
    """Print the tables of a run (out: what main writes to its JSON file)."""
    peers, rows, real = out["peers"], out["rows"], out["ceiling"]["unpinned"][0]
    c = out["ceiling"]
    print(f"float32 matmul, {out['threads']} threads: {c['pinned'][0]:.0f} GFLOP/s as the environment sets OpenBLAS "
          f"({c['pinned'][1]}); {real:.0f} GFLOP/s unpinned ({c['unpinned'][1]}; the best of "
          f"{len(c['unpinned_runs'])}, measured before each row: {', '.join(f'{x:.0f}' for x in c['unpinned_runs'])}"
          "): the ceiling below\n")
    print("| network, batch | " + " | ".join(TITLES[t] for t in ["fastmlp"] + peers)
          + " | fastmlp / best peer | fastmlp GFLOP/s (share of ceiling) | work done: GFLOP/s (share) |")
    print("|---" * (len(peers) + 5) + "|")
    for row in rows:
        print_row(row, peers, real)
    print("\nThe same, counting only the epochs that ran on two cores sharing an L3 (a round trip of "
          f"{core_latency.NEAR_NS[0]}-{core_latency.NEAR_NS[1]} ns before and after; core_latency.py): medians "
          "(epochs)")
    print("| network, batch | " + " | ".join(TITLES[t] for t in ["fastmlp"] + peers) + " | fastmlp / best peer |")
    print("|---" * (len(peers) + 3) + "|")
    for row in rows:
        near = near_medians(row)
        best = max((near[p][0] for p in peers if p in near and p != "sklearn"), default=None)
        f = near.get("fastmlp", (None, 0))[0]
        cells = [row["case"]] + [f"{_k(near[t][0])} ({near[t][1]})" if t in near else "—" for t in ["fastmlp"] + peers]
        print("| " + " | ".join(cells + [f"{f / best:.2f}x" if f and best else "—"]) + " |")
    print("\nTest accuracy after the epoch (%):")
    print("| network, batch | " + " | ".join(TITLES[t] for t in ["fastmlp"] + peers) + " |")
    print("|---" * (len(peers) + 2) + "|")
    for row in rows:
        acc = row["test_accuracy"]
        print("| " + " | ".join([row["case"]] + [f"{100 * acc[t]:.2f}" if acc.get(t) is not None else "—"
                                                 for t in ["fastmlp"] + peers]) + " |")
    print("\nEvery run: samples/s [the round trip of a cache line between two threads before / after the "
          "epoch, ns: core_latency.py]")
    for row in rows:
        for t, v in row["runs"].items():
            trips = row.get("round_trip_ns", {}).get(t, [(None, None)] * len(v))
            print(f"  {row['case']}: {t} " + ", ".join(f"{x:,.0f} [{_ns(a)}/{_ns(b)}]" for x, (a, b) in zip(v, trips)))


def busy(seconds):
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def contention(args):
    """fastmlp's default thread count against one thread, with one busy process per core."""
    cores = len(os.sched_getaffinity(0))
    procs = [multiprocessing.Process(target=busy, args=(args.contention_seconds,), daemon=True)
             for _ in range(cores)]
    for p in procs:
        p.start()
    try:
        out = {}
        for _ in range(args.repeats):
            for threads in (args.threads, 1):
                r = bench.measure_isolated("fastmlp", hidden=(100,), batch_size=32, threads=threads,
                                           n_samples=10000, data=args.data, warmup_seconds=args.warmup)
                out.setdefault(threads, []).append(r["samples_per_second"])
    finally:
        for p in procs:
            p.terminate()
            p.join()
    med = {t: statistics.median(v) for t, v in out.items()}
    print(f"\nUnder contention ({cores} busy processes), 784-100-10 batch 32, 10,000 samples: "
          f"{args.threads} threads {med[args.threads]:,.0f} samples/s, 1 thread {med[1]:,.0f}: "
          f"{med[args.threads] / med[1]:.2f}x")
    return {"threads": {str(t): v for t, v in out.items()}, "ratio": med[args.threads] / med[1]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each figure is the median")
    parser.add_argument("--warmup", type=float, default=bench.WARMUP_SECONDS,
                        help="seconds each trainer trains on a subset before it is timed")
    parser.add_argument("--data", default="fashion-mnist", choices=bench.DATA_CHOICES)
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default=None, help="comma-separated row numbers to run (1-based), e.g. 1,3")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    parser.add_argument("--contention", action="store_true", help="also measure under CPU contention")
    parser.add_argument("--contention-seconds", type=float, default=120.0)
    parser.add_argument("--report", metavar="FILE", help="print the tables of a run's JSON file and stop")
    parser.add_argument("results", nargs="?", help="write every figure to this JSON file")
    args = parser.parse_args()
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        saved.setdefault("threads", args.threads)
        saved.setdefault("peers", [p for p in PEERS if any(p in row["runs"] for row in saved["rows"])])
        report(saved)
        return
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            parser.error(f"--peers: unknown peer {p!r}, expected some of {', '.join(PEERS)}")
    missing = [p for p in peers if not available(p)]
    if missing:
        print(f"skipped (not installed): {', '.join(missing)}", file=sys.stderr)
    peers = [p for p in peers if p not in missing]
    cases = CASES if not args.rows else [CASES[int(i) - 1] for i in args.rows.split(",")]

    pinned, pinned_kernel = bench.matmul_gflops_isolated(args.threads)
    # The ceiling is a peak: measured before every row, the best counts, so that one slow moment of
    # a shared machine does not lower it (nor raise every share of it)
    ceilings = []
    rows = []
    for case in cases:
        ceiling, real_kernel = bench.matmul_gflops_isolated(args.threads, unpinned_blas=True)
        ceilings.append(ceiling)
        row = measure_row(case, peers, args)
        rows.append(row)
        print(f"  {row['case']}: " + ", ".join(f"{t} {_k(v)}" for t, v in row["samples_per_second"].items()),
              file=sys.stderr, flush=True)
    real = max(ceilings)
    out = {"threads": args.threads, "peers": peers,
           "ceiling": {"pinned": [pinned, pinned_kernel], "unpinned": [real, real_kernel], "unpinned_runs": ceilings},
           "rows": rows}
    report(out)
    if args.contention:
        out["contention"] = contention(args)
    if args.results:
        with open(args.results, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
