"""fastmlp.MLPClassifier against scikit-learn's MLPClassifier on Fashion-MNIST: fit time and test accuracy.

    python benchmarks/sklearn_mlp.py [--samples N] [--max-iter M] [--repeats R] [--dtype float32|float64]

scikit-learn's defaults (hidden_layer_sizes=(100,), solver='adam', batch_size=200 ('auto'), alpha=1e-4,
learning_rate_init=1e-3) with max_iter=20 (--max-iter), random_state=0, on the first N training images (all
60,000 by default) scaled to [0, 1] as float64 (what both estimators are given), tested on the 10,000 test
images. The two fits alternate R times (default 1) in this process and the medians are compared; fastmlp's
Numba compilation (or cache load) happens in a small warm-up fit before, reported on its own line. The load
averages before and after say how busy the machine was (other processes slow both, unevenly).
The data come from the Debian files in /usr/share/datasets/fashion-mnist/ or fastmlp's data directory
(no download).
"""
import argparse
import os
import statistics
import time
import warnings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60000)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP

    import fastmlp
    from fastmlp import MLPClassifier

    warnings.simplefilter("ignore", ConvergenceWarning)
    Xtr, ytr = fastmlp.datasets.load("fashion-mnist", "train", download=False)
    Xte, yte = fastmlp.datasets.load("fashion-mnist", "test", download=False)
    Xtr = Xtr[:args.samples] / 255.0
    ytr = ytr[:args.samples]
    Xte = Xte / 255.0
    params = dict(hidden_layer_sizes=(100,), max_iter=args.max_iter, random_state=0)

    t0 = time.perf_counter()
    MLPClassifier(dtype=args.dtype, **dict(params, max_iter=1)).fit(Xtr[:1000], ytr[:1000])
    print(f"fastmlp warm-up fit (Numba compile or cache load): {time.perf_counter() - t0:.1f} s", flush=True)

    load = os.getloadavg()
    results = {"scikit-learn": [], "fastmlp": []}
    models = {}
    for _ in range(args.repeats):
        for name, make in (("scikit-learn", lambda: SkMLP(**params)),
                           ("fastmlp", lambda: MLPClassifier(dtype=args.dtype, **params))):
            est = make()
            t0 = time.perf_counter()
            est.fit(Xtr, ytr)
            results[name].append(time.perf_counter() - t0)
            models[name] = est
            print(f"  {name}: fit {results[name][-1]:.2f} s", flush=True)
    print()
    print(f"load average (1, 5, 15 min) at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; at the end: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (this machine's cores: "
          f"{os.cpu_count()})")
    print(f"Fashion-MNIST, {Xtr.shape[0]:,} training images, hidden (100,), adam, batch 200, "
          f"max_iter={args.max_iter}; fastmlp dtype {args.dtype}")
    print()
    print("| estimator | fit (s) | epochs | final loss_ | test accuracy |")
    print("|---|---|---|---|---|")
    for name in ("scikit-learn", "fastmlp"):
        est = models[name]
        print(f"| {name} | {statistics.median(results[name]):.2f} | {est.n_iter_} | {est.loss_:.4f} "
              f"| {100 * est.score(Xte, yte):.2f}% |")
    ratio = statistics.median(results["scikit-learn"]) / statistics.median(results["fastmlp"])
    gap = 100 * (models["fastmlp"].score(Xte, yte) - models["scikit-learn"].score(Xte, yte))
    print()
    print(f"fastmlp fit is {ratio:.2f}x faster; test accuracy {gap:+.2f} points")
    steps = {name: models[name].n_iter_ * -(-Xtr.shape[0] // 200) for name in results}
    print("fit time per minibatch step (everything in fit included): "
          + ", ".join(f"{name} {1e3 * statistics.median(results[name]) / steps[name]:.3f} ms" for name in results))


if __name__ == "__main__":
    main()
