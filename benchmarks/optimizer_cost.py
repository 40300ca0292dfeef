"""What an optimizer's update costs a training epoch: one optimizer against plain SGD, in one process,
in alternating pairs (issue 12, item 5: Adam's epoch >= 0.8x SGD's at 784-100-10, batch 32).

    PYTHONPATH=. python benchmarks/optimizer_cost.py [--optimizer adam] [--pairs 6] [--data fashion-mnist]

Each pair trains a fresh network (same seed) for one epoch with each optimizer (bench.train_fastmlp:
after a warm-up that loads the compiled kernels and starts the threads); the ratio of the pair
(optimizer / SGD, in samples per second) shares the machine's moment. Prints every pair and the median.
"""
import argparse
import statistics

from fastmlp import bench


def epoch_rate(X, y, optimizer, hidden, batch_size, threads, dtype):
    seconds, _, _ = bench.train_fastmlp(X, y, bench.sizes_of(hidden), batch_size, threads, optimizer=optimizer,
                                        dtype=dtype, lr=bench.default_lr(optimizer))
    return X.shape[0] / seconds


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


if __name__ == "__main__":
    main()
