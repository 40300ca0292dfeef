"""How much of Adam's divider work a weight-gradient tile's FMAs can hide (issue 12, item 5).

    python benchmarks/divider_overlap.py [--rounds 20] [--fmas 24,12]

Adam's step is bound by the divider (a square root and a division per parameter), plain SGD's by
memory, the gradient's tiles by the FMA pipes. Interleaving Adam's step into the tiles' sample loop
pays only as far as the divider runs while the FMAs do. Three loops in LLVM IR on float32 zmm vectors,
each timed alone (best of --rounds, the loops in turn): F FMAs on independent register accumulators (a
GATHER_ZMM tile's sample: 4 rows x 6 vectors is 24); one vector of _update_range's Adam step without
weight decay (w, g, m, v loaded from four 512 KiB streams, m and v updated and stored, the square
root, the division, w stored); and both in one iteration. Prints ns per iteration and the share of
the FMAs' time that the Adam vector hides, (fma + adam - both) / fma: 1 would make the interleaving
free, 0 worthless.
"""
import argparse
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

STREAM_BYTES = 1 << 19  # each of w, m, v, g: in L2, as a thread's share of a layer is


def loop(fmas, adam):
    """A compiled function (n, buf, streams) running n iterations of `fmas` FMAs and, with adam, one
    Adam vector at iteration i's place in the four streams (wrapping around)."""

    @intrinsic
    def body(typingctx, n, out, base):
        def codegen(context, builder, sig, args):
            n, out, base = args
            i64 = ir.IntType(64)
            vt = ir.VectorType(ir.FloatType(), 16)
            i8p = ir.IntType(8).as_pointer()
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]), "llvm.fma.v16f32")
            sqrt = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt]), "llvm.sqrt.v16f32")

            def splat(x):
                return ir.Constant(vt, [x] * 16)

            accs = [cgutils.alloca_once_value(builder, splat(float(i))) for i in range(fmas)]
            streams = builder.inttoptr(base, i8p)

            def at(i, stream):
                off = builder.add(builder.mul(builder.urem(i, ir.Constant(i64, STREAM_BYTES // 64)),
                                              ir.Constant(i64, 64)), ir.Constant(i64, stream * STREAM_BYTES))
                return builder.bitcast(builder.gep(streams, [off]), vt.as_pointer())

            with cgutils.for_range(builder, n) as it:
                if adam:
                    i = it.index
                    w, m, v, g = (builder.load(at(i, s), align=4) for s in range(4))
                    m = builder.fadd(builder.fmul(splat(0.9), m), builder.fmul(splat(0.1), g))
                    v = builder.fadd(builder.fmul(splat(0.999), v), builder.fmul(builder.fmul(splat(0.001), g), g))
                    builder.store(m, at(i, 1), align=4)
                    builder.store(v, at(i, 2), align=4)
                    d = builder.fadd(builder.fmul(builder.call(sqrt, [v]), splat(1.1)), splat(1e-8))
                    step = builder.fdiv(builder.fmul(splat(1e-3), m), d)
                    builder.store(builder.fsub(w, step), at(i, 0), align=4)
                for acc in accs:
                    builder.store(builder.call(fma, [builder.load(acc), splat(1.0001), splat(0.9999)]), acc)
            total = splat(0.0)
            for acc in accs:
                total = builder.fadd(total, builder.load(acc))
            builder.store(total, builder.bitcast(builder.inttoptr(out, i8p), vt.as_pointer()), align=4)
            return context.get_dummy_value()
        return types.none(types.int64, types.int64, types.int64), codegen

    @njit
    def run(n, out, streams):
        body(n, out.ctypes.data, streams.ctypes.data)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--fmas", default="24,12", help="FMAs per iteration, comma-separated")
    args = ap.parse_args()
    out = np.zeros(16, np.float32)
    streams = np.random.default_rng(0).random(4 * STREAM_BYTES // 4).astype(np.float32) + 1
    n = 8 * STREAM_BYTES // 64  # (eight passes over the streams, about 0.5 ms of Adam vectors)
    counts = [int(x) for x in args.fmas.split(",")]
    loops = {("adam", 0): loop(0, True)}
    for f in counts:
        loops[("fma", f)] = loop(f, False)
        loops[("both", f)] = loop(f, True)
    best = {}
    for fn in loops.values():
        fn(16, out, streams)  # compile
    for _ in range(args.rounds):  # each round times every loop, so that they share the machine's moment
        for key, fn in loops.items():
            t0 = time.perf_counter()
            fn(n, out, streams)
            best[key] = min(best.get(key, float("inf")), (time.perf_counter() - t0) / n * 1e9)
    adam = best[("adam", 0)]
    print(f"one Adam vector alone: {adam:.2f} ns an iteration")
    for f in counts:
        fma, both = best[("fma", f)], best[("both", f)]
        print(f"{f} FMAs alone {fma:.2f} ns, with the Adam vector {both:.2f} ns: the Adam vector hides "
              f"{(fma + adam - both) / fma:.0%} of the FMAs' time")


if __name__ == "__main__":
    main()
