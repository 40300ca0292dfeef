"""Compile time per configuration, cold: each run is a fresh Python process with an empty
NUMBA_CACHE_DIR that trains one small epoch on uint8 X, then on float32 X, then on float64 X, then
evaluates, predicts and takes gradients on a test set, in that order. Each step is timed as CPU time
of the main thread (where Numba compiles), then run again warm; the difference is that step's
compile time (what it adds to what the steps before it compiled).

    PYTHONPATH=. python benchmarks/compile_time.py [--dtype float32,float64] [--runs 1]

Not a test (it takes a minute and its figures depend on the machine's load): the figures go to
benchmarks/RESULTS.md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
import numpy as np
dtype = sys.argv[1]
t0 = time.thread_time()
import fastmlp
from fastmlp.model import MLP
from fastmlp.training import train
import_s = time.thread_time() - t0
rng = np.random.default_rng(0)
X8 = rng.integers(0, 256, (256, 784), dtype=np.uint8)
y = rng.integers(0, 10, 256)
steps = [
    ("train uint8 X", lambda net: train(net, X8, y, epochs=1, batch_size=32, lr=0.05, verbose=False, threads=2)),
    ("train float32 X", lambda net: train(net, (X8 / 255).astype(np.float32), y, epochs=1, batch_size=32,
                                          lr=0.05, verbose=False, threads=2)),
    ("train float64 X", lambda net: train(net, X8 / 255, y, epochs=1, batch_size=32, lr=0.05, verbose=False,
                                          threads=2)),
    ("evaluate uint8 X", lambda net: net.evaluate(X8, y, threads=2)),
    ("predict 1 row f32 X", lambda net: net.predict((X8[0] / 255).astype(np.float32), threads=2)),
    ("predict float32 X", lambda net: net.predict((X8 / 255).astype(np.float32), threads=2)),
    ("predict uint8 X", lambda net: net.predict(X8, threads=2)),
    ("predict float64 X", lambda net: net.predict(X8 / 255, threads=2)),
    ("gradients uint8 X", lambda net: net.gradients(X8, y, threads=2)),
]
out = {"import": import_s}
for name, run in steps:
    net = MLP([784, 100, 10], seed=0, dtype=dtype)
    t = time.thread_time()
    run(net)
    cold = time.thread_time() - t
    t = time.thread_time()
    run(net)
    out[name] = cold - (time.thread_time() - t)
print(json.dumps(out))
"""


def measure(dtype):
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=ROOT)
        proc = subprocess.run([sys.executable, "-c", CHILD, dtype], env=env, capture_output=True, text=True,
                              cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32", help="network dtypes, comma-separated")
    ap.add_argument("--runs", type=int, default=1, help="fresh processes per dtype (the table shows the median)")
    args = ap.parse_args()
    for dtype in args.dtype.split(","):
        runs = [measure(dtype) for _ in range(args.runs)]
        print(f"network {dtype}: compile seconds (main-thread CPU, cold cache; median of {args.runs})")
        for key in runs[0]:
            vals = sorted(r[key] for r in runs)
            print(f"  {key:<20} {vals[len(vals) // 2]:7.2f}")


if __name__ == "__main__":
    main()
