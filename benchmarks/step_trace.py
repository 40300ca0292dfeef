"""Where a training step's time goes, slot by slot and thread by thread, on near cores and on far ones.

    PYTHONPATH=. python benchmarks/step_trace.py [--sizes 784,100,10] [--batch 32] [--threads 2]
        [--steps 128] [--seconds 40] [--data random|fashion-mnist]

Runs fastmlp's training driver (ab_step.training_call: SGD, ReLU, softmax cross-entropy) on --steps
minibatches a call, traced (`_kernels._Driver.traced`: each thread's time-stamp-counter cycles per
slot, waiting for the earlier slots and in its work units), for --seconds, and measures the round
trip of a cache line between two threads (core_latency.py) between calls. The calls with both round
trips those of cores that share an L3 ("near") and with both over that range ("far") are grouped,
and for each group it prints the median time per step and, per slot of the plan, the median cycles
per step each thread spent waiting and working. The cycles are the time-stamp counter's (a constant
rate: `grep MHz /proc/cpuinfo` gives about it on a VM). A virtual machine's host moves its virtual
CPUs between such placements; this shows which phases lose where (benchmarks/RESULTS.md).
"""
import argparse
import statistics
import time

import numpy as np

from ab_step import training_call
from core_latency import placement, round_trip_ns


def slot_names(plan):
    """The names of a plan's slots (the weight norm, then each phase and its statistics slot:
    _kernels._drive_plan), None for those that hold no work unit in training."""
    from fastmlp._plan import LOSS, OUTPUT_STEP, describe
    names = [None]  # (the weight norm: only for scikit-learn's L2 penalty)
    for row, name in zip(plan, describe(plan).splitlines()):
        names += [name, "  statistics" if row[0] in (OUTPUT_STEP, LOSS) else None]
    return names


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="784,100,10")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=128, help="minibatches a call (the trainer's chunk: 4096 samples)")
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--data", default="random", choices=["random", "fashion-mnist"])
    args = ap.parse_args()
    from fastmlp._plan import phase_plan
    sizes = [int(s) for s in args.sizes.split(",")]
    run = training_call(sizes, args.batch, args.threads, args.steps, data=args.data, traced=True)
    names = slot_names(phase_plan(sizes, "train"))
    round_trip_ns(200)  # compile or load
    groups = {"near": [], "far": []}
    trip = round_trip_ns()
    end = time.time() + args.seconds
    while time.time() < end:
        t0 = time.perf_counter()
        cycles = run()
        seconds = time.perf_counter() - t0
        before, trip = trip, round_trip_ns()
        where = placement(before, trip)
        if where:
            groups[where].append((seconds, cycles))
    print(f"{args.sizes}, batch {args.batch}, {args.threads} threads, {args.steps} minibatches a call; "
          "kcycles a step (medians), thread 0 / thread 1 / ...")
    for group, calls in groups.items():
        if not calls:
            print(f"{group} cores: no call")
            continue
        step = 1e6 * statistics.median(s for s, _ in calls) / args.steps
        print(f"{group} cores ({len(calls)} calls): {step:.1f} us a step")
        per = np.median(np.stack([c for _, c in calls]), axis=0) / args.steps / 1e3  # (threads, slots, 2)
        for slot, name in enumerate(names):
            if name is None or per[:, slot, 1].max() < 0.1:
                continue  # (no unit: e.g. the gather after a call's first minibatch)
            wait = " / ".join(f"{x:.1f}" for x in per[:, slot, 0])
            work = " / ".join(f"{x:.1f}" for x in per[:, slot, 1])
            print(f"  {name:<28} work {work:<24} wait {wait}")


if __name__ == "__main__":
    main()
