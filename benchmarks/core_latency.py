"""The round trip of a cache line between two threads, and what it does to fastmlp's training step.

    PYTHONPATH=. python benchmarks/core_latency.py [--seconds 60]
        [--sizes 784,100,10 --batch 32 [--threads 2]]

Two threads pass a counter back and forth through two cache lines: one increments its line and
waits for the other's answer, the other waits and answers. The round trip is the time per
exchange. On two cores that share an L3 it is a little over 100 ns. A virtual machine's two
virtual CPUs can run on cores that do not share one (other core complexes, or sockets), and the
host moves them while a program runs. Each exchange then crosses the chip, and so does every cache
line that one thread writes and the other reads: a minibatch's activations and deltas, the
gathered inputs, the counters of each barrier between phases.

Alone, the script prints the round trip every half second for --seconds and their quartiles. With
--sizes, it alternates a round trip with three timed calls of fastmlp's training driver (16
minibatches of Fashion-MNIST's first rows if the dataset is installed, else random pixels; SGD,
ReLU, softmax cross-entropy), and prints the step's median time for each range of round trips.

compare.py records the round trip before every epoch it times, beside that epoch's samples/s.
"""
import argparse
import statistics
import sys
import threading
import time

import numba
import numpy as np

from fastmlp._kernels import _atomic_add, _atomic_load

# spins before a thread gives up on its partner (it cannot run: then the round trip is not measured)
SPIN_LIMIT = 1 << 31
# (first, last) bounds of the round-trip ranges the step's times are grouped by, in ns
RANGES = ((0, 70), (70, 300), (300, float("inf")))
# the round trips of two cores that share an L3 (below: one core's two SMT threads; above: cores that do not)
NEAR_NS = RANGES[1]


def shares_l3(ns):
    """Whether a round trip of ns nanoseconds (None: not measured) is that of two cores sharing an L3."""
    return ns is not None and NEAR_NS[0] <= ns < NEAR_NS[1]


def placement(before, after):
    """"near" when both round trips (ns, None: not measured) around a measurement are those of cores
    sharing an L3, "far" when both are above that range, else None (the host moved the threads, or
    they ran on one core)."""
    if shares_l3(before) and shares_l3(after):
        return "near"
    if all(t is not None and t >= NEAR_NS[1] for t in (before, after)):
        return "far"
    return None


@numba.njit(nogil=True, cache=True)
def _bounce(sync, role, start, stop):
    # exchanges start..stop-1: role 0 sets its line (sync[0]) to i + 1 and waits for role 1's
    # (sync[8], 64 bytes on) to reach i + 1; role 1 waits for role 0's, then answers. False if a
    # wait gave up.
    for i in range(start, stop):
        if role == 0:
            _atomic_add(sync, 0, 1)
        spins = 0
        while _atomic_load(sync, 8 if role == 0 else 0) <= i:
            spins += 1
            if spins > SPIN_LIMIT:
                return False
        if role == 1:
            _atomic_add(sync, 8, 1)
    return True


def round_trip_ns(count=5000, warm=200):
    """The mean time in ns of one exchange of a cache line between this thread and
    another (count exchanges after warm untimed ones); None if the other thread never ran."""
    sync = np.zeros(16, np.int64)
    other = threading.Thread(target=_bounce, args=(sync, 1, 0, warm + count), daemon=True)
    other.start()
    ok = _bounce(sync, 0, 0, warm)
    t0 = time.perf_counter()
    ok = ok and _bounce(sync, 0, warm, warm + count)
    seconds = time.perf_counter() - t0
    other.join()
    return 1e9 * seconds / count if ok else None


def training_step(sizes, batch, threads, steps=16):
    """A function that runs `steps` training minibatches through fastmlp's driver and returns the
    time per minibatch in seconds (ab_step.py's training call; Fashion-MNIST's rows when the data set
    is installed and the network takes 784 inputs, else random pixels)."""
    from ab_step import training_call  # (beside this script)

    run = None
    if sizes[0] == 784:
        try:
            run = training_call(sizes, batch, threads, steps, data="fashion-mnist")
        except Exception:  # not installed here
            pass
    if run is None:
        run = training_call(sizes, batch, threads, steps)

    def step():
        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) / steps

    return step


def quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"median {q[1]:.0f} (quartiles {q[0]:.0f}-{q[2]:.0f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--sizes", default=None, help="e.g. 784,100,10: alternate with this network's training step")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    round_trip_ns(200)  # compile or load
    end = time.monotonic() + args.seconds
    if not args.sizes:
        trips = []
        while time.monotonic() < end:
            rt = round_trip_ns()
            if rt is None:
                sys.exit("the second thread never ran: no round trip to measure")
            trips.append(rt)
            time.sleep(0.5)
        print(f"round trip (ns) every 0.5 s for {args.seconds:g} s: {quartiles(trips)}")
        print(" ".join(f"{x:.0f}" for x in trips))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    step = training_step(sizes, args.batch, args.threads)
    pairs = []
    while time.monotonic() < end:
        rt = round_trip_ns()
        if rt is None:
            sys.exit("the second thread never ran: no round trip to measure")
        pairs.append((rt, 1e6 * min(step() for _ in range(3))))
    trips = [p[0] for p in pairs]
    print(f"{len(pairs)} round trips (ns): {quartiles(trips)}")
    print(f"training step of {args.sizes} at batch {args.batch}, {args.threads} threads (us, best of 3 calls of 16 "
          "minibatches after each round trip):")
    for lo, hi in RANGES:
        times = [s for rt, s in pairs if lo <= rt < hi]
        if times:
            print(f"  round trip {lo:.0f}-{hi:.0f} ns ({100 * len(times) / len(pairs):.0f}% of the time): step "
                  f"{quartiles(times)}")


if __name__ == "__main__":
    main()
