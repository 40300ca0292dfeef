"""Two source trees' cold compile time of one function, measured in alternation, so that a change of
a few percent shows on a machine whose speed drifts by more than that within a minute.

    python benchmarks/compile_ab.py OLD_TREE NEW_TREE [--function output_samples] [--dtype float32]
        [--rounds 10]
    git worktree add /tmp/old HEAD~1 && python benchmarks/compile_ab.py /tmp/old . --function driver

FUNCTION is one of the kernels the driver calls through their addresses (the fields of
fastmlp._kernels.kernels(dtype): gather, forward_block, output_samples, weight_grad, delta_cols,
update, output_activation; and forward_loops and delta_tiles, the forward_block and delta_cols of a
network without micro-kernel layers), or `driver` (_drive_plan, with the helpers it compiles inside it). Each
measurement is a new Python process with an empty NUMBA_CACHE_DIR that first compiles a trivial
function (Numba's one-time set-up of its typing context, which the first compilation of any process
pays) and then compiles FUNCTION alone: the CPU seconds of the compiling thread, inclusive of the
functions compiled inside it. The trees are measured one after the other, --rounds times, each first
in every other round; the result is the median of the pairs' ratios (NEW / OLD) with its quartiles.
Not a test: its figures depend on the machine's load; they go to benchmarks/RESULTS.md.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import os, sys, time
root, function, dtype = sys.argv[1:4]
sys.path.insert(0, os.path.abspath(root))
import numba
import numpy as np
from fastmlp import _kernels as k
assert os.path.abspath(k.__file__).startswith(os.path.abspath(root)), k.__file__
numba.njit(lambda x: x + 1)(1)
if function != "driver":
    # (forward_loops and delta_tiles, the kernels without the micro-kernel, are in no default bundle)
    refs = k._kernel_refs(dtype) if hasattr(k, "_kernel_refs") else k.kernels(dtype)._asdict()
    ref = refs[function]
    t = time.thread_time()
    ref.build()
    print(time.thread_time() - t)
    sys.exit(0)
from numba.core import event
from fastmlp.model import MLP
from fastmlp.training import train
starts = []


class Listener(event.Listener):
    def on_start(self, ev):
        starts.append(time.thread_time())

    def on_end(self, ev):
        t = starts.pop()
        if ev.data["dispatcher"].py_func is k._drive_plan.py_func:
            print(time.thread_time() - t, flush=True)
            os._exit(0)  # (the kernels, compiled next, are not measured)


event.register("numba:compile", Listener())
rng = np.random.default_rng(0)
X = rng.integers(0, 256, (64, 784), dtype=np.uint8)
y = rng.integers(0, 10, 64)
train(MLP([784, 100, 10], seed=0, dtype=dtype), X, y, epochs=1, batch_size=32, lr=0.05, verbose=False,
      threads=1)
sys.exit("the driver was not compiled (a warm cache?)")
"""

FUNCTIONS = ("gather", "forward_block", "forward_loops", "output_samples", "weight_grad", "delta_cols", "delta_tiles",
             "update", "output_activation", "driver")


def measure(root, function, dtype):
    """CPU seconds to compile `function` of the tree at root, cold, in a new process."""
    with tempfile.TemporaryDirectory(prefix="fastmlp-compile-ab-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("PYTHONPATH", None)
        r = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(root), function, dtype], env=env,
                           capture_output=True, text=True, cwd=cache)
        if r.returncode != 0:
            sys.exit(f"measuring {function} in {root} failed:\n{r.stderr[-2000:]}")
        return float(r.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--function", default="output_samples", choices=FUNCTIONS)
    ap.add_argument("--new-function", choices=FUNCTIONS, help="in NEW_TREE (default: --function)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    old, new = [], []
    for r in range(args.rounds):
        pair = [0.0, 0.0]
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):  # each tree first in every other round
            function = args.new_function if i == 1 and args.new_function else args.function
            pair[i] = measure((args.old, args.new)[i], function, args.dtype)
        old.append(pair[0])
        new.append(pair[1])
    ratios = sorted(b / a for a, b in zip(old, new))
    q = len(ratios) // 4
    name = f"{args.function} -> {args.new_function}" if args.new_function else args.function
    print(f"{name} ({args.dtype}), cold compile, CPU s (medians of {args.rounds}): "
          f"old {statistics.median(old):.2f}, new {statistics.median(new):.2f}; new / old per pair "
          f"{statistics.median(ratios):.3f} (quartiles {ratios[q]:.3f}-{ratios[-q - 1]:.3f})")


if __name__ == "__main__":
    main()
