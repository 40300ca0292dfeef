"""Two source trees' training step, measured in alternation, so that a change of a few percent shows
on a machine whose speed drifts by more than that within a minute.

    python benchmarks/ab_step.py OLD_TREE NEW_TREE [--sizes 784,100,10] [--batch 512] [--threads 2]
        [--optimizer sgd|adam] [--x uint8|float32|float64] [--data random|fashion-mnist] [--phases 2]
        [--round-trip]
    git worktree add /tmp/old HEAD~1 && python benchmarks/ab_step.py /tmp/old .

Each tree gets a worker process (its own Numba cache directory under the system's temporary
directory) that sets up `_drive` on random rows (uint8 by default; SGD by default, ReLU, softmax
cross-entropy; `--optimizer adam --x float64 --batch 200` is scikit-learn's configuration) and then,
on each request, runs it --reps times on --steps minibatches and answers with its best time per
minibatch. The two workers are asked one after the other, --rounds times: each pair shares the
machine's moment, and the median of the pairs' ratios (NEW / OLD) is the result, with its
quartiles. Two copies of the same tree gave 0.999 and 0.986 (quartiles within 0.98-1.01) on a 2-core
VM whose speed moved by 1.5x between runs: differences under about 2% are not resolved.

With --round-trip, the round trip of a cache line between two threads (core_latency.py) is measured
before and after each pair, and the ratios are also given for the pairs with both round trips those
of cores that share an L3 ("near") and with both over its range ("far"): a virtual machine's host
moves its virtual CPUs, and a change can help on one placement and not on the other.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def training_call(sizes, batch, threads, steps, optimizer="sgd", xdtype="uint8", data="random", phases=None,
                  traced=False):
    """A function that trains `steps` minibatches of `batch` rows through fastmlp's driver (the
    fastmlp that `import fastmlp` finds), on threads threads, ReLU and softmax cross-entropy: random
    pixels, or with data="fashion-mnist" the first rows of Fashion-MNIST's training split (found
    locally). phases: the indices of the plan's rows to run (default all; fastmlp._plan.describe
    names them), e.g. only the forward pass of layer 2, on the buffers the whole plan filled first.
    traced: the function returns the call's cycles per thread and slot (fastmlp._kernels._Driver.traced).
    Compiles or loads the driver and starts the threads first."""
    import numba
    import numpy as np

    from fastmlp import _kernels as k
    from fastmlp._buffers import Data, Network, OptimizerState, Results, Workspace, aligned_zeros, input_bytes, layout
    from fastmlp._plan import phase_plan

    dtype = np.float32
    n = steps * batch
    rng = np.random.default_rng(0)
    w_off, b_off, n_params = layout(sizes)
    params = aligned_zeros(n_params, dtype)  # as the trainer keeps them: every row of W starts a cache line
    params[...] = rng.standard_normal(n_params) * 0.03
    X = rng.integers(0, 256, (n, sizes[0]), dtype=np.uint8)
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    if data == "fashion-mnist":  # real pixels: ReLU units off together as in training, which kernels may skip
        from fastmlp import datasets
        X, y = datasets.load("fashion-mnist", "train", download=False, progress=False)
        X, y = np.ascontiguousarray(X[:n]), y[:n].astype(np.int64)
    divisor = 255.0
    if xdtype != "uint8":
        X = (X / 255.0).astype(xdtype)
        divisor = 1.0
    net = Network(params, w_off, b_off, np.array(sizes, dtype=np.int64), k.ACTIVATION_CODES["relu"], k.SOFTMAX)
    data = Data(*input_bytes(X), divisor, y, np.zeros((1, sizes[-1]), dtype), False, np.ones(1), False, k.CE)
    hp = np.zeros(2 * k.HP_SIZE)
    for o in (0, k.HP_SIZE):
        hp[o + k.HP_LR] = 0.001
        hp[o + k.HP_BETA1], hp[o + k.HP_BETA2], hp[o + k.HP_EPS] = 0.9, 0.999, 1e-8
    numba.set_num_threads(threads)
    ws = Workspace(sizes, dtype, batch, x_capacity=n)
    # (stats of two columns, as Trainer.fit passes: a third asks the driver for the sum of the squared
    # weights before every step, scikit-learn's L2 penalty, a pass over all of them)
    res = Results(np.zeros(max(n, batch)), np.zeros((n // batch + 1, 2)), np.zeros((0, sizes[-1]), dtype))
    size = params.size if optimizer == "adam" else 0  # Adam's moments m and v; SGD keeps none
    state = OptimizerState(np.zeros_like(params), np.zeros(size, dtype), np.zeros(size, dtype),
                           k.OPTIMIZER_CODES[optimizer], hp, 1)
    plan = phase_plan(sizes, "train")
    order = rng.permutation(n)

    def run():
        if traced:
            return k._drive.traced(plan, net, ws.buffers(), state, data, order, batch, threads, res)[1]
        k._drive(plan, net, ws.buffers(), state, data, order, batch, threads, res)

    run()  # compile or load, start the threads; every buffer filled
    if phases is not None:
        plan = plan[list(phases)]
        run()
    return run


def worker(root, sizes, batch, threads, steps, optimizer, xdtype, data, phases):
    sys.path.insert(0, os.path.abspath(root))
    run = training_call(sizes, batch, threads, steps, optimizer, xdtype, data, phases)
    print("ready", flush=True)
    for line in sys.stdin:
        best = float("inf")
        for _ in range(int(line)):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        print(1e3 * best / steps, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--sizes", default="784,100,10")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--x", default="uint8", choices=["uint8", "float32", "float64"], help="dtype of the inputs")
    ap.add_argument("--data", default="random", choices=["random", "fashion-mnist"],
                    help="the rows: random pixels, or the first of Fashion-MNIST's training split (found locally)")
    ap.add_argument("--steps", type=int, default=12, help="minibatches per timed call")
    ap.add_argument("--reps", type=int, default=3, help="timed calls per request (the best counts)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--phases", default=None,
                    help="only these rows of the training plan, e.g. 2 (0 gathers, then forward 1, ...)")
    ap.add_argument("--round-trip", action="store_true",
                    help="also the ratios of the pairs run on near cores and on far ones (core_latency.py)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        phases = None if args.phases is None else [int(p) for p in args.phases.split(",")]
        worker(args.old, sizes, args.batch, args.threads, args.steps, args.optimizer, args.x, args.data, phases)
        return
    procs = []
    with tempfile.TemporaryDirectory(prefix="fastmlp-ab-") as tmp:
        for i, root in enumerate((args.old, args.new)):
            env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, f"numba{i}"))
            cmd = [sys.executable, os.path.abspath(__file__), root, root, "--worker", "--sizes", args.sizes,
                   "--batch", str(args.batch), "--threads", str(args.threads), "--steps", str(args.steps),
                   "--optimizer", args.optimizer, "--x", args.x, "--data", args.data]
            cmd += [] if args.phases is None else ["--phases", args.phases]
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            if p.stdout.readline().strip() != "ready":
                sys.exit(f"the worker of {root} did not start")
            procs.append(p)

        def ask(p):
            p.stdin.write(f"{args.reps}\n")
            p.stdin.flush()
            return float(p.stdout.readline())

        trip = None
        if args.round_trip:
            from core_latency import placement, round_trip_ns
            round_trip_ns(200)  # compile or load
            trip = round_trip_ns()
        old, new, where = [], [], []
        for r in range(args.rounds):
            pair = [0.0, 0.0]
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):  # each tree first in every other pair
                pair[i] = ask(procs[i])
            old.append(pair[0])
            new.append(pair[1])
            if args.round_trip:
                before, trip = trip, round_trip_ns()
                where.append(placement(before, trip))
        for p in procs:
            p.stdin.close()
            p.wait()
    ratios = [b / a for a, b in zip(old, new)]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(f"{args.sizes} batch {args.batch}, {args.threads} threads, ms per minibatch (medians of {args.rounds}): "
          f"old {statistics.median(old):.3f}, new {statistics.median(new):.3f}; new / old per pair "
          f"{statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f})")
    for group in ("near", "far") if args.round_trip else ():
        picked = [i for i, w in enumerate(where) if w == group]
        if picked:
            print(f"  {group} cores ({len(picked)} pairs): old {statistics.median(old[i] for i in picked):.3f}, "
                  f"new {statistics.median(new[i] for i in picked):.3f}; new / old "
                  f"{statistics.median(ratios[i] for i in picked):.3f}")
        else:
            print(f"  {group} cores: no pair")


if __name__ == "__main__":
    main()
