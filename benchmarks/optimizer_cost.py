"""What an optimizer's update costs a training epoch: one optimizer against plain SGD, in one process,
in alternating pairs (issue 12, item 5: Adam's epoch >= 0.8x SGD's at 784-100-10, batch 32).

    PYTHONPATH=. python benchmarks/optimizer_cost.py [--optimizer adam] [--pairs 6] [--data fashion-mnist]

Each pair trains a fresh network (same seed) for one epoch with each optimizer (bench.train_fastmlp:
after a warm-up that loads the compiled kernels and starts the threads); the ratio of the pair
(optimizer / SGD, in samples per second) shares the machine's moment. Prints every pair and the median.

With Adam it also times Adam's step alone over one thread's share of the parameters (_update_range, the
pass each thread runs after its gradients; a square root and a division per parameter), and prints the
ratio Adam's epoch could reach at the SGD speed just measured if its step cost nothing more than that pass:
sgd_step / (sgd_step + pass).
"""
import argparse
import statistics
import time

import numpy as np

from fastmlp import bench


def epoch_rate(X, y, optimizer, hidden, batch_size, threads, dtype):
    seconds, _, _ = bench.train_fastmlp(X, y, bench.sizes_of(hidden), batch_size, threads, optimizer=optimizer,
                                        dtype=dtype, lr=bench.default_lr(optimizer))
    return X.shape[0] / seconds


def adam_pass_seconds(share, dtype, rounds=20, calls=200):
    """Seconds of Adam's step (_update_range) over `share` parameters (one thread's): the best of `rounds`
    runs of `calls` steps."""
    from numba import njit

    from fastmlp import _kernels as k

    @njit
    def steps(p, g, m, v, hp, calls):
        for t in range(1, calls + 1):
            k._update_range(p, g, m, v, 0, p.shape[0], k.ADAM, hp, t, 1, 0)

    rng = np.random.default_rng(0)
    p = (rng.standard_normal(share) * 0.05).astype(dtype)
    g = (rng.standard_normal(share) * 0.01).astype(dtype)
    m, v = np.zeros(share, dtype), np.zeros(share, dtype)
    hp = np.zeros(k.HP_SIZE)
    hp[k.HP_LR], hp[k.HP_BETA1], hp[k.HP_BETA2], hp[k.HP_EPS] = bench.default_lr("adam"), 0.9, 0.999, 1e-8
    steps(p, g, m, v, hp, 1)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        steps(p, g, m, v, hp, calls)
        best = min(best, time.perf_counter() - t0)
    return best / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="adam", choices=["adam", "momentum", "nesterov"])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--hidden", default="100", help="comma-separated hidden sizes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--data", default="fashion-mnist", choices=bench.DATA_CHOICES)
    args = parser.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    X, y = bench.make_data(60000, data=args.data)
    rates = {args.optimizer: [], "sgd": []}
    for _ in range(args.pairs):
        for opt in rates:
            rates[opt].append(epoch_rate(X, y, opt, hidden, args.batch_size, args.threads, args.dtype))
    ratios = [a / s for a, s in zip(rates[args.optimizer], rates["sgd"])]
    for opt, r in rates.items():
        print(f"{opt:9s} samples/s: " + ", ".join(f"{x / 1e3:.0f}k" for x in r))
    print(f"{args.optimizer} / sgd per pair: " + ", ".join(f"{x:.3f}" for x in ratios))
    print(f"median {statistics.median(ratios):.3f}")
    if args.optimizer == "adam":
        sizes = bench.sizes_of(hidden)
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        share = -(-n_params // args.threads)
        step = args.batch_size / statistics.median(rates["sgd"])
        adam = adam_pass_seconds(share, np.dtype(args.dtype))
        print(f"Adam's step over a thread's {share:,} parameters: {adam * 1e6:.1f} us "
              f"({adam / share * 1e9:.2f} ns a parameter); SGD's step: {step * 1e6:.1f} us; "
              f"Adam / SGD at most {step / (step + adam):.3f} with nothing else in Adam's step")


if __name__ == "__main__":
    main()
