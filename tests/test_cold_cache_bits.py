"""A process that compiles the kernels (cold Numba cache) trains to the same bits as the processes
that load them from the cache afterwards (same seed, one thread). The AVX2 micro-kernel branch
(t12k-wip) breaks this: its run 1 differs from runs 2 and 3."""
import os
import subprocess
import sys

import numpy as np

from fastmlp.model import MLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cold_and_warm_processes_train_the_same_bits(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (20000, 784), dtype=np.uint8)
    y = (X[:, :16].sum(axis=1) // 200 % 10).astype(np.int64)
    np.savez(tmp_path / "big.npz", X=X, y=y)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), PYTHONPATH=ROOT)
    params = []
    for i in range(3):
        out = tmp_path / f"r{i}.npz"
        proc = subprocess.run([sys.executable, "-m", "fastmlp.cli", "train", "--data", str(tmp_path / "big.npz"),
                               "--hidden", "32", "--epochs", "2", "--threads", "1", "--quiet", "--save", str(out)],
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        params.append(MLP.load(out).params)
    assert np.array_equal(params[0], params[1]) and np.array_equal(params[1], params[2])
