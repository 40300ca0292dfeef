"""Full-epoch training benchmarks on MNIST-shaped data (60,000 x 784 uint8, 10 classes): plain SGD,
softmax + cross-entropy, for fastmlp, PyTorch CPU (skipped when torch is missing) and a vectorised
NumPy trainer, from the same initial weights and in the same sample order.

    pytest benchmarks/test_epochs.py --benchmark-group-by=param

groups by case, so the three trainers of a case are side by side. extra_info holds samples/s and
GFLOP/s. The trainers are warmed up (compiled) before timing. fastmlp runs first: PyTorch brings
its own OpenMP runtime, whose idle threads would disturb Numba's afterwards (the isolated,
subprocess-per-trainer comparison is `fastmlp bench` / fastmlp.bench.run).
"""
import pytest

from fastmlp import bench

CASES = {
    "784-100-10-b10": ((100,), 10),
    "784-100-10-b32": ((100,), 32),
    "784-100-10-b128": ((100,), 128),
    "784-512-512-10-b128": ((512, 512), 128),
}


def _epoch(benchmark, trainer, case, data, threads, quick):
    hidden, batch = CASES[case]
    sizes = bench.sizes_of(hidden)
    X, y = data
    n = X.shape[0]
    benchmark.group = f"epoch {case}"
    trainer(X[:512], y[:512], sizes, batch, threads, warmup=False)  # compile / warm up
    result = {}

    def run():
        result["out"] = trainer(X, y, sizes, batch, threads, warmup=False)

    benchmark.pedantic(run, rounds=1 if quick else 3, iterations=1)
    seconds, Ws, bs = result["out"]
    for W in Ws:
        assert (W == W).all(), "training diverged"  # no NaN
    fps = bench.flops_per_sample(sizes)
    benchmark.extra_info.update(samples=n, batch_size=batch, network="-".join(map(str, sizes)),
                                threads=threads, flops_per_sample=fps)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.min > 0:
        sps = n / stats.stats.min
        benchmark.extra_info.update(samples_per_second=sps, gflops=sps * fps / 1e9)


@pytest.mark.parametrize("case", list(CASES))
def test_epoch_fastmlp(benchmark, case, mnist_shaped, threads, quick):
    _epoch(benchmark, bench.train_fastmlp, case, mnist_shaped, threads, quick)


@pytest.mark.parametrize("case", list(CASES))
def test_epoch_numpy(benchmark, case, mnist_shaped, threads, quick):
    _epoch(benchmark, bench.train_numpy, case, mnist_shaped, threads, quick)


@pytest.mark.parametrize("case", list(CASES))
def test_epoch_torch(benchmark, case, mnist_shaped, threads, quick):
    pytest.importorskip("torch")
    _epoch(benchmark, bench.train_torch, case, mnist_shaped, threads, quick)


@pytest.mark.parametrize("case", list(CASES))
def test_same_result_as_numpy(case, threads):
    """fastmlp and the NumPy reference trainer do the same SGD (same init, order, maths)."""
    import numpy as np
    hidden, batch = CASES[case]
    sizes = bench.sizes_of(hidden)
    X, y = bench.make_data(4 * batch + 3, seed=1)
    _, W1, b1 = bench.train_fastmlp(X, y, sizes, batch, threads, warmup=False)
    _, W2, b2 = bench.train_numpy(X, y, sizes, batch, threads, warmup=False)
    for a, b in zip(W1 + b1, W2 + b2):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
