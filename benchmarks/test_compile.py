"""Compile time, measured on its own: a fresh Python process with an empty NUMBA_CACHE_DIR trains
one small epoch (all the kernels a float32 training run needs compile), then a second process
with the now warm cache does the same. The times are in extra_info (cold_seconds, warm_seconds)."""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import time
t0 = time.perf_counter()
from fastmlp import bench
from fastmlp.training import Trainer
X, y = bench.make_data(600, seed=0, data="random")
net, _, _ = bench._init_weights([784, 100, 10], 0)
Trainer(net, lr=0.05, batch_size=32, threads=2).fit(X, y, 1, verbose=False)
print(time.perf_counter() - t0)
"""


def _first_epoch(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    return wall, float(out.stdout.strip().splitlines()[-1])


def test_compile_time_to_first_epoch(benchmark, tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    result = {}

    def cold_then_warm():
        for d in cache.iterdir():
            import shutil
            shutil.rmtree(d) if d.is_dir() else d.unlink()
        result["cold"] = _first_epoch(cache)
        result["warm"] = _first_epoch(cache)

    benchmark.pedantic(cold_then_warm, rounds=1, iterations=1)
    (cold_wall, cold_inside), (warm_wall, warm_inside) = result["cold"], result["warm"]
    benchmark.extra_info.update(cold_seconds=cold_wall, cold_seconds_in_process=cold_inside,
                                warm_seconds=warm_wall, warm_seconds_in_process=warm_inside)
    print(f"\nfirst epoch: cold cache {cold_wall:.1f} s, warm cache {warm_wall:.1f} s (process wall time)")
    assert warm_wall < cold_wall
