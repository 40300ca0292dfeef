"""GFLOP/s of fastmlp's GEMM-class kernels against NumPy's float32 matmul of the same shapes.

    PYTHONPATH=. python benchmarks/kernels_gflops.py [--threads 1,2] [--rounds 40] [--asm]
        [--tile-rows R --tile-bytes B --forward-samples S] [--dtype float64]

For each layer shape (M inputs -> N units at batch n) and thread count it times, on float32 (or
--dtype float64, against NumPy's float64 matmul):
  forward   out = relu(a_prev W^T + b)      (_dense_forward)      against a_prev @ W.T
  wgrad     dW += delta^T a_prev, db        (_accumulate_gradients) against delta.T @ a_prev
  delta     delta_prev = sigma'(z) delta W   (_delta_backward)     against delta @ W
Deltas are dense (no zero rows), so the work done equals the nominal 2 n N M FLOPs (and on AVX2 the
weight gradient skips nothing anyway: benchmarks/RESULTS.md, 2026-12-02 02:15). Each figure
is the best of --rounds short rounds (~4 ms each, so that on a busy machine some round runs
undisturbed; still, compare the ratios printed in one run). On one thread the clock is the
thread's CPU time, which time-sharing with other processes does not inflate. NumPy runs
with the same thread count (threadpoolctl); the BLAS kernel that ran is printed.

--asm prints, for each kernel's innermost loops that contain vector FMAs: the FMAs, their register
width, and the stack operands ((%rsp): spills and reloads) in that loop. (Numba cannot show the
assembly of cached code, so with --asm the kernels are compiled into a fresh cache directory.)

--tile-rows / --tile-bytes / --forward-samples try other register blockings than the one fastmlp
chose for this CPU (fastmlp._kernels.TILE_ROWS, TILE_BYTES, FORWARD_SAMPLES), also compiled into a
fresh cache directory.
"""
import argparse
import os
import re
import sys
import tempfile
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

if __name__ == "__main__" and any(a.startswith(("--asm", "--tile-", "--forward-samples")) for a in sys.argv):
    # before numba is imported: a fresh cache, so that nothing compiled here is reused elsewhere
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastmlp-kernels-gflops-")

import numba  # noqa: E402

from fastmlp import _kernels as P  # noqa: E402
from fastmlp._buffers import aligned_empty  # noqa: E402

PAUSE = 0.3  # seconds before a two-thread measurement

SHAPES = [  # (M inputs, N units, batch n)
    (784, 100, 32), (784, 100, 128), (784, 100, 200),
    (784, 512, 128), (512, 512, 128),
    (2048, 2048, 256),
    (784, 100, 10),  # a tiny batch (issue 12's batch-10 row)
]


def best_time(fn, rounds, clock, min_seconds=0.004):
    fn()
    reps = 1
    while True:
        t = clock()
        for _ in range(reps):
            fn()
        dt = clock() - t
        if dt >= min_seconds / 4 or reps > 1 << 16:
            break
        reps *= 2
    reps = max(1, int(reps * min_seconds / max(dt, 1e-9)))
    best = float("inf")
    for _ in range(rounds):
        t = clock()
        for _ in range(reps):
            fn()
        best = min(best, (clock() - t) / reps)
    return best


def cases(M, N, n, threads, f=np.float32):
    # Every array starts a cache line, as the trainer's buffers do (fastmlp._buffers.aligned_empty):
    # NumPy's large arrays start 16 bytes into a page, and each 64-byte vector load of their rows
    # then spans two cache lines (the forward pass ran at half its speed in the trainer's buffers).
    rng = np.random.default_rng(0)

    def aligned(x):
        y = aligned_empty(x.shape, x.dtype)
        y[...] = x
        return y

    W = aligned(rng.normal(0, 0.05, (N, M)).astype(f))
    b = aligned(rng.normal(0, 0.05, N).astype(f))
    a = aligned(rng.random((n, M)).astype(f))
    out = aligned_empty((n, N), f)
    delta = aligned(rng.normal(0, 1, (n, N)).astype(f))
    dW = aligned(np.zeros((N, M), f))
    db = aligned(np.zeros(N, f))
    z = aligned(rng.normal(0, 1, (n, M)).astype(f))
    dprev = aligned_empty((n, M), f)
    return {
        "forward": (lambda: P._dense_forward(W, b, a, out, P.RELU, threads), lambda: a @ W.T),
        "wgrad": (lambda: P._accumulate_gradients(delta, a, dW, db, threads), lambda: delta.T @ a),
        "delta": (lambda: P._delta_backward(W, delta, z, P.RELU, dprev, threads), lambda: delta @ W),
    }


def loops_with_fma(asm):
    """(fmas, width, stack operands) of each innermost loop (label .. backward jump) with FMAs."""
    lines = asm.splitlines()
    labels = {}
    loops = []
    for i, line in enumerate(lines):
        s = line.strip()
        # LLVM's labels, and the numeric local labels of inline assembly ("1:" .. "jnz 1b")
        m = re.match(r"^(\.L\w+|\d+):", s)
        if m:
            labels[m.group(1)] = i
        m = re.match(r"^j\w+\s+(\.L\w+|\d+b)\b", s)
        if m and m.group(1).rstrip("b") in labels:
            loops.append((labels[m.group(1).rstrip("b")], i))
    found = []
    for a, b in loops:
        body = lines[a:b + 1]
        fmas = [x for x in body if re.search(r"\bvfn?m(add|sub)\w*p[sd]\b", x)]
        if not fmas:
            continue
        inner = [(c, d) for c, d in loops if (c, d) != (a, b) and a <= c and d <= b]
        if any(any(re.search(r"\bvfn?m(add|sub)\w*p[sd]\b", x) for x in lines[c:d + 1]) for c, d in inner):
            continue
        width = "zmm" if any("zmm" in x for x in fmas) else "ymm" if any("ymm" in x for x in fmas) else "xmm"
        stack = sum(1 for x in body if "(%rsp)" in x)
        found.append((len(fmas), width, stack))
    return found


def report_asm():
    for name in ["_dense_forward_block", "_weight_grad_block", "_delta_backward_cols"]:
        f = getattr(P, name)
        for sig in f.signatures:
            if str(sig[0].dtype) != "float32":
                continue
            loops = loops_with_fma(f.inspect_asm(sig))
            hot = sorted(loops, reverse=True)
            desc = ", ".join(f"{k} {w} FMAs / {s} (%rsp)" for k, w, s in hot)
            print(f"  {name}: innermost FMA loops: {desc}")
            break


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--asm", action="store_true")
    ap.add_argument("--kernels", default="forward,wgrad,delta")
    ap.add_argument("--tile-bytes", type=int, help="bytes of a register tile row (default: fastmlp's choice)")
    ap.add_argument("--tile-rows", type=int, choices=[2, 4], help="rows of a register tile")
    ap.add_argument("--forward-samples", type=int, choices=[2, 4], help="samples per forward block")
    ap.add_argument("--shapes", help="only these shape indices, e.g. 0,3")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()
    if args.tile_bytes:
        P.TILE_BYTES = args.tile_bytes
    if args.tile_rows:
        P.TILE_ROWS = args.tile_rows
    if args.forward_samples:
        P.FORWARD_SAMPLES = args.forward_samples
    shapes = SHAPES if not args.shapes else [SHAPES[int(i)] for i in args.shapes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    kernels = args.kernels.split(",")
    blas = [f"{i.get('internal_api')} {i.get('architecture')}" for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"ISA {getattr(P, 'VECTOR_ISA', '?')}: TILE_ROWS {getattr(P, 'TILE_ROWS', 4)}, "
          f"TILE_BYTES {P.TILE_BYTES}, FORWARD_SAMPLES "
          f"{getattr(P, 'FORWARD_SAMPLES', 4)}; {args.dtype}; BLAS: {', '.join(blas)}; "
          f"Numba threads {numba.config.NUMBA_NUM_THREADS}")
    print(f"{'shape':>18} {'thr':>3} " + " ".join(f"{k + ' GF/s (x np)':>20}" for k in kernels) + "   numpy GF/s")
    for M, N, n in shapes:
        flops = 2.0 * M * N * n
        for t in threads:
            numba.set_num_threads(t)
            cs = cases(M, N, n, t, np.dtype(args.dtype).type)
            cells = []
            nps = []
            for k in kernels:
                ours, ref = cs[k]
                # one thread: CPU time of this thread, which the other processes of a shared
                # machine do not inflate (both run in the calling thread); two: wall time
                clock = time.thread_time if t == 1 else time.perf_counter
                # (two threads: a pause first, so that the other library's worker threads, which
                # spin for a while after their last task, have gone to sleep and leave the cores)
                with threadpool_limits(t):
                    time.sleep(PAUSE if t > 1 else 0)
                    t_np = best_time(ref, args.rounds, clock)
                time.sleep(PAUSE if t > 1 else 0)
                t_ours = best_time(ours, args.rounds, clock)
                g, gn = flops / t_ours / 1e9, flops / t_np / 1e9
                cells.append(f"{g:8.1f} ({g / gn:4.2f}x)")
                nps.append(f"{gn:.0f}")
            print(f"{f'{M}->{N} n={n}':>18} {t:>3} " + " ".join(f"{c:>20}" for c in cells) + "   " + "/".join(nps),
                  flush=True)
    if args.asm:
        report_asm()


if __name__ == "__main__":
    main()
