"""Shared fixtures of the benchmarks (pytest-benchmark).

    pytest benchmarks/ --benchmark-group-by=param        full runs, fastmlp/PyTorch/NumPy side by side
    pytest benchmarks/ --benchmark-disable               every benchmark once, as a quick test (CI)

With --benchmark-disable the epoch benchmarks train on a few thousand samples instead of 60,000.
Each kernel is checked against NumPy before it is timed; compilation happens in a warm-up call
outside the timing and is measured on its own (test_compile.py).
"""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

THREADS = min(2, os.cpu_count() or 1)
FULL_SAMPLES = 60000
QUICK_SAMPLES = 2000


@pytest.fixture(scope="session")
def quick(request):
    """True under --benchmark-disable (or --benchmark-skip): run once, on small data."""
    return bool(request.config.getoption("benchmark_disable", False))


@pytest.fixture(scope="session")
def threads():
    import numba
    return min(THREADS, numba.config.NUMBA_NUM_THREADS)


@pytest.fixture(scope="session")
def mnist_shaped(quick):
    """(X uint8 (n, 784), y int64 (n,)): MNIST-shaped synthetic digits (bench.make_data), 60,000 samples
    (2,000 when quick)."""
    from fastmlp import bench
    return bench.make_data(QUICK_SAMPLES if quick else FULL_SAMPLES, seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
