"""Private Numba kernels. They trust their inputs: the public functions in fastmlp.kernels,
fastmlp.model and fastmlp.training validate shapes, dtypes and values before calling them.

Notation follows the lecture: layer l = 1..L, W^l has shape (N_l, N_{l-1}), z^l = W^l a^{l-1} + b^l,
a^l = sigma(z^l), delta^l = dc/dz^l. A minibatch is stored row-major: row s of A^l is a^l of sample s.

Parameters live in one flat buffer (W^1, b^1, W^2, b^2, ...); w_off[l] and b_off[l] are where W^l
and b^l start, so an optimizer, a checkpoint or a gradient check sees one array. Per-batch
activations and deltas live in flat workspaces A and D, layer l at a_off[l] (n * N_l values).

Parallel work is split so that each thread owns whole output rows or columns: in the forward pass
rows j of W^l (columns j of z^l); in the backward pass the units i of a layer l: columns i of
delta^l and rows i of dW^l and W^l (its optimizer step), and for the last hidden layer columns i of
dW^L and W^L. delta^{l-1} below a hidden-to-hidden W^l is the sum, in a fixed order, of the partial
products of ROW_PARTS fixed parts of W^l's rows (_backward_pair). When a minibatch's inputs are
large, the backward phase of layer 1 splits its samples into SAMPLE_PARTS fixed parts instead, each
summing its own gradient of layer 1, and a last phase adds them in part order (_backward_samples).
No two threads write the same element, so there are no races, and an element's value does not
depend on the thread count.

One driver, _drive (the compiled _drive_plan), runs the network for training, evaluation, forward,
predict, the loss and the gradients: it walks a plan of named phases (fastmlp._plan) for each
minibatch, and its arguments travel in the bundles of fastmlp._buffers; the big kernels it calls
travel in a bundle of their own (network_kernels(dtype, sizes)), called through their addresses. X reaches it as
bytes with a code for its dtype, so one compiled driver per network dtype serves every input dtype
and every mode.

fastmath is on for the sums (reassociation lets LLVM vectorise them) but without 'nnan'/'ninf',
so NaN and inf checks keep working.
"""
import functools
import math
import os
import queue
import threading
from collections import namedtuple

import numpy as np
from numba import carray, njit, prange, types
from numba.core import cgutils
from llvmlite import binding as llvm, ir
from numba.extending import intrinsic, typeof_impl

from ._buffers import (INPUT_FLOAT32, INPUT_FLOAT64, ROW_PARTS, SAMPLE_PARTS, SAMPLE_SPLIT_BYTES, Buffers, Network,
                       OptimizerState, Results, _Data, first_layer_by_samples, sample_partials_size)
from ._plan import (BACKWARD, BACKWARD_ACCUMULATE, BACKWARD_UPDATE, FORWARD, GATHER, GATHER_CHUNK, LOSS, OUTPUT,
                    OUTPUT_COPY, OUTPUT_STEP, SAMPLE_SUM)

IDENTITY, SIGMOID, RELU, TANH, SOFTMAX = 0, 1, 2, 3, 4
ACTIVATION_CODES = {"identity": IDENTITY, "sigmoid": SIGMOID, "relu": RELU, "tanh": TANH,
                    "softmax": SOFTMAX}
CE, MSE, BCE = 0, 1, 2
LOSS_CODES = {"ce": CE, "mse": MSE, "bce": BCE}
SGD, MOMENTUM, ADAM, NESTEROV = 0, 1, 2, 3
OPTIMIZER_CODES = {"sgd": SGD, "momentum": MOMENTUM, "adam": ADAM, "nesterov": NESTEROV}
# Not an optimizer: _update_range leaves the parameters alone (the distributed trainer's compile
# warm-up of _update_all).
GRADIENT_ONLY = 4

# Indices into the float64 hyperparameter vector passed to the update kernels. The vector holds
# two groups of HP_SIZE: the weights' (hp[:HP_SIZE]) and the biases' (hp[HP_SIZE:]), so that the
# biases can have their own weight decay (scikit-learn penalises the weights only).
HP_LR, HP_MOMENTUM, HP_WEIGHT_DECAY, HP_BETA1, HP_BETA2, HP_EPS = 0, 1, 2, 3, 4, 5
# The factor of the summed loss whose gradient _drive takes; 0 means the minibatch's own:
# 1/n, or 1/(sum of its weights). (A rank of the distributed trainer passes that of the global batch
# for its slice; evaluation passes 1/(all rows' count or weight).)
HP_GRAD_SCALE = 6
HP_SIZE = 7

# Below this many multiply-adds a layer runs on one thread: a parallel region costs ~1.5 us.
PARALLEL_MIN_WORK = 65536
# Multiply-adds charged per sample for the output activation + loss + delta when deciding whether
# the output layer is worth a parallel region (softmax-CE of 10 classes: ~0.1 us per sample, the
# time of ~5000 multiply-adds).
OUTPUT_STEP_WORK = 2048
# Rows the gather requests from memory ahead of the one it converts.
GATHER_AHEAD = 4
# Rows the threads take at a time when they gather a call's rows at its first minibatch
GATHER_BLOCK = 64
# Training gathers each minibatch's rows into rows of every thread's own (_drive_plan) from this many
# samples a minibatch, on up to PRIVATE_INPUT_THREADS threads
PRIVATE_INPUT_MIN = 8
PRIVATE_INPUT_THREADS = 2

FAST = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _jit(**kw):
    # fastmath=False is spelled out where no flags are given: Numba compiles a callee with its
    # caller's fastmath flags unless the callee sets its own, and the exact parts (the division by
    # 255, softmax and the loss) are called from fastmath kernels.
    kw.setdefault("fastmath", False)
    return njit(cache=True, nogil=True, **kw)


def _inline(**kw):
    # For helpers with few call sites: Numba inlines them into the caller before typing, so they get
    # no compiled library of their own. (Numba re-optimises and re-generates the machine code of a
    # callee in every library that calls it: each level of separately compiled functions costs
    # compile time.) The caller's fastmath flags apply to the inlined code.
    return njit(inline="always", nogil=True, **kw)


@intrinsic
def _wide_vectors(typingctx):
    # Called first in each kernel that loops over vectors: LLVM's tuning for Intel's server cores
    # with AVX-512 (Skylake-SP to Emerald Rapids) prefers 256-bit vectors, so its vectoriser split
    # the AVX-512 register tiles (VECTOR_ISA, below) into twice as many ymm accumulators, which
    # spilled to the stack in every inner iteration: the weight gradient and the delta recursion
    # ran at a third of their speed there. The function attribute "prefer-vector-width" overrides
    # that tuning for this function only (AMD's Zen 4 and 5 prefer 512 bits already). Numba compiles
    # the body of a prange loop as a function of its own, which this does not reach; the parallel
    # kernels' bodies call kernels that open with it, but for _dense_forward's (_dense_forward_rows
    # inlined: its blocks are zmm IR, _dot_4x4, and only its leftover rows are vectorised by LLVM).
    def codegen(context, builder, sig, args):
        if VECTOR_ISA == "avx512":
            # (llvmlite checks function attributes against a list of keywords, and this one is a
            # string attribute with a value: set.add skips the check, the text is emitted as it is)
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()
    return types.none(), codegen


# ---------------------------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------------------------

@_jit(fastmath=FAST)
def _activate(z, code, one):
    # scalar float32|float64 -> same; sigma(z) for an elementwise activation
    if code == RELU:
        return z if z > 0 else one - one
    if code == SIGMOID:
        return one / (one + np.exp(-z))
    if code == TANH:
        return np.tanh(z)
    return z


@_jit(fastmath=FAST)
def _activation_grad(z, code, one):
    # scalar -> sigma'(z), from z (the public activation_backward)
    if code == RELU:
        return one if z > 0 else one - one
    if code == SIGMOID:
        s = one / (one + np.exp(-z))
        return s * (one - s)
    if code == TANH:
        t = np.tanh(z)
        return one - t * t
    return one


@_jit(fastmath=FAST)
def _activation_grad_from_output(a, code, one):
    # scalar a = sigma(z) -> sigma'(z); the trainer keeps a^l only, and these forms need no exp
    if code == RELU:
        return one if a > 0 else one - one
    if code == SIGMOID:
        return a * (one - a)
    if code == TANH:
        return one - a * a
    return one


@_inline()
def _share(count, t, nthreads, unit, min_count):
    # [start, stop) of thread t's share of count items; the shares are multiples of unit items
    # when count >= min_count (a partial tail then falls on the last thread only)
    per = (count + nthreads - 1) // nthreads
    if count >= min_count:
        per = (per + unit - 1) // unit * unit
    start = min(t * per, count)
    return start, min(start + per, count)


@_jit()
def _chunk(count, t, nthreads):
    # always on multiples of 4, for the 4-row / 4-sample blocks: a share that ended mid-block
    # would put its last rows in a kernel's partial-block path, which sums in another order than
    # the full blocks, so results would change with the thread count (and the trainers choose the
    # thread count per chunk of minibatches on timing)
    return _share(count, t, nthreads, 4, 0)


@_jit()
def _chunk4(count, t, nthreads):
    # always on multiples of 4 (samples in blocks of 4)
    return _share(count, t, nthreads, 4, 0)


@_jit()
def _chunk_aligned(count, t, nthreads):
    # on multiples of 16 elements (one 64-byte line of float32) when that keeps balance, so threads
    # writing neighbouring columns of the same rows do not share cache lines
    return _share(count, t, nthreads, 16, 64 * nthreads)


@_jit()
def _region_threads(work, nthreads):
    return nthreads if work >= PARALLEL_MIN_WORK else 1


# ---------------------------------------------------------------------------------------------
# Register blocking per vector ISA
# ---------------------------------------------------------------------------------------------

def _target_features():
    # the CPU features LLVM compiles for: NUMBA_CPU_FEATURES when set, else the host's (which is
    # what Numba does, also under NUMBA_CPU_NAME alone)
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return {f[1:] for f in features.split(",") if f.startswith("+")}


def _register_blocking(features):
    # -> (vector ISA, TILE_ROWS, TILE_BYTES, FORWARD_SAMPLES) for a CPU with these features: the
    # register tiles must fit the vector register file (AVX-512: 32 zmm; AVX/AVX2, SSE: 16).
    #   avx512: tile kernels 4 rows x 256 bytes = 16 zmm accumulators (+ 4 broadcasts, 1 load);
    #           forward 4 weight rows x 4 samples = 16 accumulators + 8 loads (_dot_4x4).
    #   avx2 (any AVX, 16 ymm) and sse: tile kernels 2 rows x 6 vectors = 12 accumulators + 2
    #           broadcasts + 1 load (4 rows x 64 float32 spilled accumulators to the stack in every
    #           inner iteration; LLVM holds every broadcast of a step in a register, so more rows
    #           cost registers: 4 x 3 vectors needed 17); forward 4 rows x 2 samples = 8
    #           accumulators + 6 loads (4 x 4 spilled too).
    if "avx512f" in features:
        return "avx512", 4, 256, 4
    if "avx2" in features and "fma" in features:
        return "avx2", 6, 64, 2
    if "avx" in features:
        return "avx", 2, 192, 2
    return "sse", 2, 96, 2


# Chosen once, at import, from the CPU that LLVM targets. Kernels read these as compile-time
# constants, so they are frozen into Numba's on-disk cache; that is sound because the cache is keyed
# on the target CPU's name and features, which decide them.
VECTOR_ISA, TILE_ROWS, TILE_BYTES, FORWARD_SAMPLES = _register_blocking(_target_features())


def _micro_thresholds(isa):
    # -> (MICRO_DELTA_MIN_ROWS, MICRO_FORWARD_MIN_INPUTS): from how many rows N of W the delta
    # recursion (_delta_backward_cols), and from how many inputs M of a layer the forward pass (with
    # at least MICRO_FORWARD_MIN units and samples), take the micro-kernel; -1: never.
    # AVX2 + FMA: always (its blocking). The ISAs without FMA: never. AVX-512: the delta never (the
    # zmm gather tile, GATHER_ZMM); the forward pass from 2048 inputs, with the zmm tile
    # (_forward_micro_tile): the loops' 4 x 4 dot products read every sample's row from L2 for every
    # 4 rows of W and sum their lanes at the end; the tile packs the samples and broadcasts W. With
    # 1024 inputs or fewer the loops were as fast or faster.
    # This holds for Zen 4 too, which runs a 512-bit FMA as two 256-bit halves: it took the AVX2
    # micro-kernel for W of 2048 rows and layers of 1024 inputs until the zmm gather tiles existed,
    # which made its steps 4-29% faster (benchmarks/RESULTS.md, 2026-12-06, stop 58).
    if isa == "avx2":
        return 0, 0
    if isa == "avx512":
        return -1, 2048
    return -1, -1


# (frozen into the cache like the blocking, which is sound: the cache is keyed on the CPU's name and
# features)
MICRO_DELTA_MIN_ROWS, MICRO_FORWARD_MIN_INPUTS = _micro_thresholds(VECTOR_ISA)


# The zmm forward tile (_micro_zmm): rows of W x zmm vectors of samples
ZMM_TILE_ROWS, ZMM_TILE_VECTORS = 8, 3


def _forward_micro_tile(isa):
    # -> (FORWARD_MICRO_ZMM, FORWARD_MICRO_ROWS, FORWARD_MICRO_BYTES): the forward micro-kernel's
    # tile. AVX-512: 8 rows x 3 zmm (_micro_zmm: 24 accumulators, 3 loads and 8 broadcasts per 24
    # FMAs); elsewhere the AVX2 tile of 6 rows x 2 ymm (_micro_tile). Both sum each element over k
    # in ascending order from zero, one FMA each: the same bits.
    if isa == "avx512":
        return True, ZMM_TILE_ROWS, 64 * ZMM_TILE_VECTORS
    return False, 6, 64


FORWARD_MICRO_ZMM, FORWARD_MICRO_ROWS, FORWARD_MICRO_BYTES = _forward_micro_tile(VECTOR_ISA)
# Inputs summed at a time by the forward micro-kernel when W has more rows than the samples
# (_forward_micro): a block of the packed panels of samples (KC x 192 bytes each) stays in L2
FORWARD_MICRO_KC = 256
# On the same CPUs the weight gradient (_weight_grad_zmm) and the delta recursion (_delta_zmm_panels)
# take a micro-kernel tile in place of _tile_sums' 4 x 4 zmm: 4 rows (of dW: a group of
# _group_units; of delta^{l-1}: a group of 4 samples, so that it leaves out as much as the 4 x 4
# tile) x 6 zmm, 24 accumulators, 6 loads and 4 broadcasts per 24 FMAs, the kept rows of its panel
# gathered, in LLVM IR (_micro_zmm), where _tile_sums at that width, vectorised by LLVM, spilled.
# Same sums in the same order: the same bits.
GATHER_ZMM = FORWARD_MICRO_ZMM
GATHER_ZMM_VECTORS = 6
# With the AVX-512 tiles, a thread's share of dW^l (any layer) larger than L2 (UPDATE_SPLIT_BYTES)
# is computed and applied UPDATE_SPLIT_ROWS rows at a time (32 rows of 1,024 float32 columns:
# 128 KB, in L2), so that the optimizer step does not read it back from memory; a smaller share in
# one go (see _backward_pair; the other blockings apply it after the whole share).
UPDATE_SPLIT_ROWS = 32
UPDATE_SPLIT_BYTES = 1 << 20
# Plain SGD on a thread's share of dW^l of more than this is taken by the weight-gradient tiles
# themselves while each tile is in registers (fused: _weight_grad_block), dW^l not written; a
# smaller share is stepped by a pass over it after its gradient, which costs a call per tile less
# but reads and writes the share of W^l and dW^l again (benchmarks/RESULTS.md).
FUSED_SGD_MIN_BYTES = 1 << 16


# ---------------------------------------------------------------------------------------------
# Dense layer: forward pass
# ---------------------------------------------------------------------------------------------

def _transposed_sums(builder, vectors, lanes):
    # 16 vectors of `lanes` (16 or 8) floats -> 16 // lanes vectors whose lane p of vector o is the
    # sum of the lanes of vectors[o * lanes + p]: the halves of each pair of vectors side by side,
    # added, level by level (4 levels of 2 shuffles and an add for a pair; summing each vector
    # alone took 4 of them, each with 2 shuffles: three times the instructions)
    i32 = ir.IntType(32)
    h = lanes
    while h > 1:
        half = h // 2
        first = [m * h + q for m in range(lanes // h) for q in range(half)]
        lo = ir.Constant(ir.VectorType(i32, lanes), first + [lanes + i for i in first])
        hi = ir.Constant(ir.VectorType(i32, lanes), [i + half for i in first] + [lanes + i + half for i in first])
        vectors = [builder.fadd(builder.shuffle_vector(x, y, lo), builder.shuffle_vector(x, y, hi))
                   for x, y in zip(vectors[0::2], vectors[1::2])]
        h = half
    return vectors


@intrinsic
def _dot_4x4(typingctx, W, A, j, s, k0, k1, part, res, b, out):
    # W (N, M), A (n, M) C-contiguous float32|float64, j, s, k0, k1 int64, part (16 L,) and res
    # (16,) of W's dtype, L = the lanes of a 512-bit vector, k0 and k1 multiples of L, b (N,),
    # out (n, N) of W's dtype:
    # res[4 si + r] = sum_{k < M - M % L} W[j + r, k] A[s + si, k] for r, si < 4, summed over the
    # columns k0 <= k < k1 by this call: 16 vector accumulators, each lane summing every L-th k in
    # ascending order with one FMA each; they start from zero when k0 = 0, else from part, where
    # the call before them left them; when k1 reaches M - M % L their lanes are summed by
    # _transposed_sums (the same order for every element, whatever j, s and the split of k), else
    # they are left in part. Returns whether it finished the block: when k1 reaches M - M % L, M %
    # L = 0 and out is C-contiguous, out[s + si, j + r] = (the sum) + b[j + r] here, the 4
    # elements of a row of out in one store (16 scalar loads, adds and stores a block took a tenth
    # of the forward pass's time at 784 inputs); else, at the end, the sums go to res and the
    # caller adds the columns past them, then b.
    if W.layout != "C" or A.layout != "C" or res.dtype != W.dtype or A.dtype != W.dtype or part.dtype != W.dtype:
        return None  # (rows are read as contiguous vectors)
    if b.dtype != W.dtype or out.dtype != W.dtype or out.ndim != 2:
        return None
    finishes = out.layout == "C"
    dtype = W.dtype
    lanes = 512 // dtype.bitwidth

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ft = context.get_value_type(dtype)
        vt = ir.VectorType(ft, lanes)
        w = context.make_array(sig.args[0])(context, builder, args[0])
        a = context.make_array(sig.args[1])(context, builder, args[1])
        buf = context.make_array(sig.args[6])(context, builder, args[6])
        res_arr = context.make_array(sig.args[7])(context, builder, args[7])
        M = builder.extract_value(w.shape, 1)
        L = ir.Constant(i64, lanes)
        whole = builder.sub(M, builder.srem(M, L))
        i8p = ir.IntType(8).as_pointer()

        def row(arr, first, k):
            stride = builder.extract_value(arr.strides, 0)
            at = builder.mul(builder.add(first, ir.Constant(i64, k)), stride)
            return builder.bitcast(builder.gep(builder.bitcast(arr.data, i8p), [at]), ft.as_pointer())

        wrows = [row(w, args[2], k) for k in range(4)]
        arows = [row(a, args[3], k) for k in range(4)]
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                             f"llvm.fma.v{lanes}f{dtype.bitwidth}")
        zero = ir.Constant(vt, [ir.Constant(ft, 0.0)] * lanes)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(16)]
        finished = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(1), 0))
        size = dtype.bitwidth // 8
        saved = builder.bitcast(buf.data, ft.as_pointer())

        def vector(p, k):
            return builder.bitcast(builder.gep(p, [k]), vt.as_pointer())

        def load(p, k):
            return builder.load(vector(p, k), align=size)

        with builder.if_then(builder.icmp_signed("!=", args[4], ir.Constant(i64, 0))):
            for o, acc in enumerate(accs):
                builder.store(load(saved, ir.Constant(i64, o * lanes)), acc)
        start = builder.sdiv(args[4], L)
        with cgutils.for_range(builder, builder.sub(builder.sdiv(args[5], L), start)) as loop:
            k = builder.mul(builder.add(loop.index, start), L)
            wv = [load(p, k) for p in wrows]
            av = [load(p, k) for p in arows]
            for si in range(4):
                for r in range(4):
                    acc = accs[4 * si + r]
                    builder.store(builder.call(fma, [wv[r], av[si], builder.load(acc)]), acc)
        with builder.if_else(builder.icmp_signed(">=", args[5], whole)) as (done, partial):
            with done:
                sums = _transposed_sums(builder, [builder.load(acc) for acc in accs], lanes)
                here = builder.and_(builder.icmp_signed("==", M, whole), ir.Constant(ir.IntType(1), finishes))
                builder.store(here, finished)
                with builder.if_else(here) as (finish, leftover):
                    with finish:
                        _store_4x4(context, builder, sig, args, sums, ft, size)
                    with leftover:
                        dst = builder.bitcast(res_arr.data, ft.as_pointer())
                        for o, v in enumerate(sums):
                            builder.store(v, vector(dst, ir.Constant(i64, o * lanes)), align=size)
            with partial:
                for o, acc in enumerate(accs):
                    builder.store(builder.load(acc), vector(saved, ir.Constant(i64, o * lanes)), align=size)
        return builder.load(finished)
    return types.boolean(W, A, j, s, k0, k1, part, res, b, out), codegen


def _store_4x4(context, builder, sig, args, sums, ft, size):
    # _dot_4x4's finish: sums (16 // L vectors, lane p of vector o the sum of block element
    # o L + p = 4 si + r) + b[j:j + 4] -> out[s + si, j:j + 4], one 4-element store a sample
    i32 = ir.IntType(32)
    i64 = ir.IntType(64)
    lanes = sums[0].type.count
    bias = context.make_array(sig.args[8])(context, builder, args[8])
    out = context.make_array(sig.args[9])(context, builder, args[9])
    v4 = ir.VectorType(ft, 4)
    i8p = ir.IntType(8).as_pointer()
    b_stride = builder.extract_value(bias.strides, 0)
    b4 = ir.Constant(v4, ir.Undefined)
    for r in range(4):
        at = builder.mul(builder.add(args[2], ir.Constant(i64, r)), b_stride)
        x = builder.load(builder.bitcast(builder.gep(builder.bitcast(bias.data, i8p), [at]), ft.as_pointer()))
        b4 = builder.insert_element(b4, x, ir.Constant(i32, r))
    row_stride = builder.extract_value(out.strides, 0)
    col = builder.mul(args[2], ir.Constant(i64, size))
    for si in range(4):
        o, q = divmod(4 * si, lanes)
        part = builder.shuffle_vector(sums[o], sums[o], ir.Constant(ir.VectorType(i32, 4), [q + r for r in range(4)]))
        at = builder.add(builder.mul(builder.add(args[3], ir.Constant(i64, si)), row_stride), col)
        dst = builder.bitcast(builder.gep(builder.bitcast(out.data, i8p), [at]), v4.as_pointer())
        builder.store(builder.fadd(part, b4), dst, align=size)


# The forward pass's 4 x 4 blocks (_dot_4x4) sum rows of more than twice this many bytes in parts
# of this many bytes, each part for every group of 4 samples in turn: the block's 4 rows of W then
# stay in L1 while the samples' rows stream past them from L2. (4 rows of 2048 float32 are 32 KiB,
# two thirds of the L1 of the cores this was measured on, and their rows a power of two of bytes
# apart share the cache sets with the samples' rows: read whole, they were evicted by the samples
# and read again from L2 for every group, and the block waited on L2.)
FORWARD_PART_BYTES = 2048


@_jit(fastmath=FAST)
def _finish_4x4(W, b, a_prev, out, res, j, s, Mv):
    # the 4 x 4 block at rows j, samples s that _dot_4x4 left in res: the columns Mv.. past its
    # whole vectors, then b. Called, not inlined: its vectorised loop, inlined beside the block's,
    # never ran and yet made the forward pass at 784 inputs take a sixth longer.
    M = a_prev.shape[1]
    for i in range(4):
        x = a_prev[s + i]
        for r in range(4):
            wr = W[j + r]
            acc = res[4 * i + r]
            for k in range(Mv, M):
                acc += wr[k] * x[k]
            out[s + i, j + r] = acc + b[j + r]


@_inline(fastmath=FAST)
def _forward_4rows(W, b, a_prev, out, code, j, parts):
    # rows j..j+3 of _dense_forward_rows: samples FORWARD_SAMPLES (4: _dot_4x4, or 2) at a time,
    # then one. parts: (n // 4, 16 L) scratch of W's dtype (L = the lanes of a 512-bit vector)
    # when FORWARD_SAMPLES == 4 and a row of W is more than twice FORWARD_PART_BYTES.
    n, M = a_prev.shape
    one = W.dtype.type(1)
    zero = one - one
    w0 = W[j]
    w1 = W[j + 1]
    w2 = W[j + 2]
    w3 = W[j + 3]
    s = 0
    ptr, T = _register_tile(one)
    res = carray(ptr, (4 * T,))
    Mv = M - M % (64 // W.itemsize)
    if FORWARD_SAMPLES == 4:
        # the 4 x 4 sums in vector registers, their lanes summed together (_dot_4x4), then the
        # columns past the last whole vector; the columns in parts of FORWARD_PART_BYTES, each
        # for all groups of 4 samples (the same sums in the same order)
        groups = n // 4
        kb = FORWARD_PART_BYTES // W.itemsize if Mv * W.itemsize > 2 * FORWARD_PART_BYTES else max(Mv, 1)
        for k0 in range(0, max(Mv, 1), kb):
            k1 = min(k0 + kb, Mv)
            for g in range(groups):
                s = 4 * g
                done = _dot_4x4(W, a_prev, j, s, k0, k1, parts[min(g, parts.shape[0] - 1)], res, b, out)
                if k1 == Mv and not done:
                    _finish_4x4(W, b, a_prev, out, res, j, s, Mv)
        s = 4 * groups
    while FORWARD_SAMPLES == 2 and s + 2 <= n:
        x0 = a_prev[s]
        x1 = a_prev[s + 1]
        a00 = zero
        a01 = zero
        a10 = zero
        a11 = zero
        a20 = zero
        a21 = zero
        a30 = zero
        a31 = zero
        for k in range(M):
            p = w0[k]
            q = w1[k]
            r = w2[k]
            u = w3[k]
            x = x0[k]
            a00 += p * x
            a10 += q * x
            a20 += r * x
            a30 += u * x
            x = x1[k]
            a01 += p * x
            a11 += q * x
            a21 += r * x
            a31 += u * x
        out[s, j] = a00 + b[j]
        out[s + 1, j] = a01 + b[j]
        out[s, j + 1] = a10 + b[j + 1]
        out[s + 1, j + 1] = a11 + b[j + 1]
        out[s, j + 2] = a20 + b[j + 2]
        out[s + 1, j + 2] = a21 + b[j + 2]
        out[s, j + 3] = a30 + b[j + 3]
        out[s + 1, j + 3] = a31 + b[j + 3]
        s += 2
    while s < n:
        x0 = a_prev[s]
        a00 = zero
        a10 = zero
        a20 = zero
        a30 = zero
        for k in range(M):
            x = x0[k]
            a00 += w0[k] * x
            a10 += w1[k] * x
            a20 += w2[k] * x
            a30 += w3[k] * x
        out[s, j] = a00 + b[j]
        out[s, j + 1] = a10 + b[j + 1]
        out[s, j + 2] = a20 + b[j + 2]
        out[s, j + 3] = a30 + b[j + 3]
        s += 1


@_inline(fastmath=FAST)
def _dense_forward_rows(W, b, a_prev, out, code, j0, j1):
    # _dense_forward_block of a whole minibatch, all of rows j0:j1
    _dense_forward_block(W, b, a_prev, out, code, j0, j1, a_prev.shape[0], j0 - j0, j0 - j0 + 1)


# Rows of W (of a thread's share) and samples of a minibatch from which the forward pass uses the
# AVX2 micro-kernel: its tiles are 16 samples or rows wide (float32), and it packs one operand.
MICRO_FORWARD_MIN = 16
# Samples of a share from which a layer that takes the micro-kernel takes the gather tile instead
# (_forward_gather) on GATHER_ZMM CPUs, the threads then splitting its rows (its panels of W^T,
# which it packs for every call, cost less than a tenth of the sums from 128 samples)
FORWARD_GATHER_MIN_SAMPLES = 128
# Units, and units x samples of a minibatch, from which a layer takes the micro-kernel's bits (and
# so the gather tile) on GATHER_ZMM CPUs whatever its inputs (_forward_takes_micro). The trainer
# sorts each minibatch's samples by class (_plan.label_grouped), so that a group's 4 samples
# share more zero inputs; so grouped, from 512 units x 128 samples the gather tile takes less time
# than the dot products, with fewer units (256, 100) or samples (32) more (benchmarks/RESULTS.md).
FORWARD_GATHER_MIN_UNITS = 512
FORWARD_GATHER_MIN_WORK = 1 << 16
# From this size of a_prev the forward pass splits the threads' work by samples (_layer_forward,
# forward_split_by_samples; for layer 1 the backward phase too: _by_samples).
FORWARD_SPLIT_BYTES = SAMPLE_SPLIT_BYTES


def forward_takes_micro(N, M, batch):
    """Whether a layer of N units on M inputs, in minibatches of `batch` rows, takes the forward
    micro-kernel (a property of the layer and the batch, not of a thread's share: the micro-kernel
    and the loops sum in different orders, and a layer must get the same bits on any number of
    threads): forward_layer_takes_micro's rule for this batch (compiled as _forward_takes_micro)."""
    return (batch >= MICRO_FORWARD_MIN and N >= MICRO_FORWARD_MIN
            and (0 <= MICRO_FORWARD_MIN_INPUTS <= M
                 or (GATHER_ZMM and N >= FORWARD_GATHER_MIN_UNITS and N * batch >= FORWARD_GATHER_MIN_WORK
                     and batch >= FORWARD_GATHER_MIN_SAMPLES)))


_forward_takes_micro = _inline()(forward_takes_micro)


def forward_layer_takes_micro(N, M):
    """Whether a layer of N units on M inputs takes the forward micro-kernel (_forward_takes_micro)
    in minibatches of some size: from MICRO_FORWARD_MIN_INPUTS inputs, or on GATHER_ZMM CPUs from
    FORWARD_GATHER_MIN_UNITS units whatever the inputs, in minibatches of FORWARD_GATHER_MIN_WORK /
    N and FORWARD_GATHER_MIN_SAMPLES samples or more (the gather tile, which such a layer takes,
    packs its panels of W^T for every call and each group of 4 samples' nonzero inputs for every
    thread: with fewer units or samples that cost more than leaving out the inputs saved, against
    the 4 x 4 dot products)."""
    return N >= MICRO_FORWARD_MIN and (0 <= MICRO_FORWARD_MIN_INPUTS <= M
                                       or (GATHER_ZMM and N >= FORWARD_GATHER_MIN_UNITS))


_forward_layer_takes_micro = _inline()(forward_layer_takes_micro)


def forward_grouped_samples(N, M, n, nthreads, itemsize):
    """The samples [s0, s1) of a minibatch of n rows whose forward pass through a layer of N units
    on M inputs (itemsize-byte floats), on nthreads threads, takes the gather tile, which leaves out
    the inputs that are zero for all 4 samples of a group (groups of 4 from each range's start): a
    mirror of _dense_forward_block's choice (and of the driver's thread count for the phase), for
    counting the work done (fastmlp.bench.done_flops_per_sample)."""
    if not (GATHER_ZMM and forward_takes_micro(N, M, n)):
        return []
    T = nthreads if n * N * M >= PARALLEL_MIN_WORK else 1
    if T > 1 and forward_split_by_samples(N, n, n * M * itemsize):
        shares = [_share.py_func(n, t, T, MICRO_FORWARD_MIN, 0) for t in range(T)]
        return [(s0, s1) for s0, s1 in shares if s1 - s0 >= FORWARD_GATHER_MIN_SAMPLES]
    return [(0, n)] if n >= FORWARD_GATHER_MIN_SAMPLES else []


def forward_gathers(sizes, batch):
    """Whether the forward pass through some layer of a network with layer sizes `sizes` takes the
    gather tile in minibatches of `batch` rows, on one thread (forward_grouped_samples): where the
    trainer sorts each minibatch's samples by label (_plan.label_grouped), which the tile profits
    from and nothing else does. On any thread count the same answer, so that the order, and the
    bits it gives, do not change with the thread count."""
    return any(forward_grouped_samples(N, M, batch, 1, 4) for M, N in zip(sizes[:-1], sizes[1:]))


def forward_split_by_samples(N, n, a_bytes):
    """Whether the threads split the forward pass through a layer of N units that takes the
    micro-kernel, on n samples whose a_prev holds a_bytes, by samples (else by rows): where a_prev
    is larger than FORWARD_SPLIT_BYTES, so that each thread reads the rows of it that it gathered
    or computed itself; but not where the threads' shares would take the gather tile and the layer
    has more units than samples: each thread would then read and pack all of W^T for half the
    samples, where by rows it packs half of W^T, each panel of it serving twice the groups."""
    return a_bytes > FORWARD_SPLIT_BYTES and not (GATHER_ZMM and n >= FORWARD_GATHER_MIN_SAMPLES and N > n)


_forward_split_by_samples = _inline()(forward_split_by_samples)


@_jit(fastmath=FAST)
def _dense_forward_block(W, b, a_prev, out, code, j0, j1, batch, t, T):
    # W (N, M), b (N,), a_prev (n, M), out (n, N); float32|float64; a_prev holds n rows of a
    # minibatch of `batch` rows (which decides the loop, so that a slice of a minibatch gets the
    # bits the whole one does).
    # out[s, j] = sigma(sum_k W[j, k] a_prev[s, k] + b[j]) for rows j0 <= j < j1 of W: thread t's
    # share of them when T > 1 (below), all of them when T = 1. A layer that takes the AVX2
    # micro-kernel (_forward_takes_micro) is computed here; any other (fewer inputs, rows or samples:
    # e.g. an output layer of 10 units, or one row to predict) by _dense_forward_loops, which packs
    # nothing (a kernel of its own, called: inlined here it cost a fifth more compile time). A network
    # none of whose layers takes the micro-kernel is handed _dense_forward_loops itself
    # (kernels(dtype, ...)): the same bits, and the micro-kernel, half of this kernel's compile
    # time, is not compiled for it.
    _wide_vectors()
    n, M = a_prev.shape
    if not _forward_takes_micro(W.shape[0], M, batch):
        _dense_forward_loops(W, b, a_prev, out, code, j0, j1, batch, t, T)
        return
    # Thread t of T: where a_prev is larger than FORWARD_SPLIT_BYTES, every row for its own samples
    # (as _dense_forward_loops), unless the layer has more rows than samples and takes the gather
    # tile (_forward_split_by_samples). Else, with fewer rows per thread than samples, a share of
    # the tiles (below), unless the share takes the gather tile (GATHER_ZMM,
    # FORWARD_GATHER_MIN_SAMPLES samples or more); else its rows (_chunk).
    if T > 1 and _forward_split_by_samples(j1 - j0, n, n * M * a_prev.itemsize):
        s0, s1 = _share(n, t, T, MICRO_FORWARD_MIN, 0)
        a_prev = a_prev[s0:s1]
        out = out[s0:s1]
        n = s1 - s0
        T = t - t + 1
        t = t - t
    elif T > 1 and (n * T < j1 - j0 or (GATHER_ZMM and n >= FORWARD_GATHER_MIN_SAMPLES)):
        r0, r1 = _share(j1 - j0, t, T, 4, 0)  # (_chunk, inlined: the driver compiles _chunk)
        j0, j1 = j0 + r0, j0 + r1
        T = t - t + 1
        t = t - t
    if GATHER_ZMM and T == 1 and n >= FORWARD_GATHER_MIN_SAMPLES:
        # a share of whole rows and samples: the gather tile, which leaves out the inputs that are
        # zero for all of a group's 4 samples (the micro-kernel's bits)
        _forward_gather(W, b, a_prev, out, code, j0, j1)
        return
    # With T > 1 the threads share the tiles (panel of Pw rows of W, group of FORWARD_MICRO_ROWS
    # samples), panel-major, so that a panel that would not divide evenly between them is
    # split by samples instead of left whole to one thread (100 units on 2 threads: 3.5 panels
    # each instead of 4 and 3). Thread t's run of them is computed in at most three parts: the
    # end of its first panel, its whole panels, the start of its last panel. A part of fewer
    # rows than a tile (the last panel, or a small layer) is computed as a whole tile into a
    # buffer of its own, so that no thread writes rows another owns. Each part gets the bits
    # one thread would (the micro-kernel's elements do not depend on the split or on its
    # orientation: a part with fewer samples than rows takes the other one).
    Pw = FORWARD_MICRO_BYTES // W.itemsize
    G = (n + FORWARD_MICRO_ROWS - 1) // FORWARD_MICRO_ROWS
    tiles = (j1 - j0 + Pw - 1) // Pw * G
    u0 = t * tiles // T
    u1 = (t + 1) * tiles // T
    while u0 < u1:
        p = u0 // G
        g0 = u0 % G
        g1 = min(G, g0 + u1 - u0)
        r0 = j0 + p * Pw
        if g0 == 0 and g1 == G:
            # whole panels: every one up to the last this thread has whole (T = 1: all of them)
            r1 = min(j0 + u1 // G * Pw, j1)
            s0, s1 = g0 - g0, n
            u0 = u1 // G * G
        else:
            r1 = min(r0 + Pw, j1)
            s0, s1 = g0 * FORWARD_MICRO_ROWS, min(g1 * FORWARD_MICRO_ROWS, n)
            u0 += g1 - g0
        small = r1 - r0 < FORWARD_MICRO_ROWS
        lo = min(r0, W.shape[0] - FORWARD_MICRO_ROWS) if small else r0
        part = out[s0:s1]
        dst = np.empty(part.shape, out.dtype) if small else part
        _forward_micro(W, b, a_prev[s0:s1], dst, code, lo, max(r1, lo + FORWARD_MICRO_ROWS))
        if small:
            for s in range(s1 - s0):
                for i in range(r0, r1):
                    part[s, i] = dst[s, i]


@_inline(fastmath=FAST)
def _store_activated(o, v, bb, code):
    # o[i] = sigma(v[i] + bb[i]): a forward tile's row of sums stored with its biases
    one = o.dtype.type(1)
    zero = one - one
    if code == RELU:
        # (ReLU written out: a call of _activate per element keeps the loop scalar)
        for i in range(o.shape[0]):
            x = v[i] + bb[i]
            o[i] = x if x > 0 else zero
    else:
        for i in range(o.shape[0]):
            o[i] = _activate(v[i] + bb[i], code, one)


@_inline(fastmath=FAST)
def _forward_gather(W, b, a_prev, out, code, j0, j1):
    # _forward_micro's out[s, j] = sigma(sum_k W[j, k] a_prev[s, k] + b[j]) for rows j0 <= j < j1,
    # all samples, with the GATHER_ZMM tile: groups of 4 samples, each with the inputs k that are
    # nonzero for any of them packed (_pack_sample_groups: ReLU inputs are off for all 4 samples
    # for a fifth of k and more), times a panel of W^T (all k x 384 bytes of rows of W, packed
    # transposed), summed from zero over the kept k in ascending order, one FMA each, then b[j]
    # added and sigma applied: the micro-kernel's bits (a k left out would have added 0 * W[j, k]
    # to a sum that starts at +0 and is never -0, which leaves it as it is, W being finite).
    n, M = a_prev.shape
    lanes = 64 // W.itemsize
    one = W.dtype.type(1)
    groups = (n + 3) // 4
    d, rows, kept = _pack_sample_groups(a_prev, np.arange(n))
    panel, stage = _gather_buffers(M, W)
    T = panel.shape[1]
    _offsets_in_panel(rows, kept, groups, panel.strides[0])
    for c in range(j0, j1, T):
        e = min(c + T, j1)
        _pack_transposed(W, c, e - c, panel)
        q = (e - c + lanes - 1) // lanes
        bb = b[c:e]
        for g in range(groups):
            s = 4 * g
            _gather_zmm_tile(panel, rows, d, g, kept[g], stage, q)
            for r in range(min(4, n - s)):
                # (views that hold no reference: see _data)
                _store_activated(carray(_pointer(one, _addr(out, s + r, c)), e - c),
                                 carray(_pointer(one, _addr(stage, r, 0)), e - c), bb, code)


@_jit(fastmath=FAST)
def _dense_forward_loops(W, b, a_prev, out, code, j0, j1, batch, t, T):
    # _dense_forward_block of a layer that does not take the micro-kernel (any layer of a network
    # in which none does: see micro_layers); `batch` unused. Register blocking: four weight rows x
    # FORWARD_SAMPLES samples per pass over k. AVX-512: 4 samples (16 vector accumulators, 8 loads
    # per 16 FMAs, twice the reuse of 2 x 4, which runs out of loads first); 16-register ISAs: 2
    # samples (8 accumulators + 6 loads; 4 x 4 spilled). Leftover samples singly; the last N % 4
    # rows one at a time (few loop variants: each costs compile time).
    _wide_vectors()
    n, M = a_prev.shape
    one = W.dtype.type(1)
    zero = one - one
    # Thread t of T: where a_prev is larger than FORWARD_SPLIT_BYTES, every row for its own samples
    # (multiples of MICRO_FORWARD_MIN, so that every element is summed as on one thread): the rows
    # it gathered or computed itself, in its own cache, where a split by rows would read all of
    # a_prev from the other core and L3. Else its rows (_chunk).
    if T > 1 and n * M * a_prev.itemsize > FORWARD_SPLIT_BYTES:
        s0, s1 = _share(n, t, T, MICRO_FORWARD_MIN, 0)
        a_prev = a_prev[s0:s1]
        out = out[s0:s1]
        n = s1 - s0
    elif T > 1:
        r0, r1 = _share(j1 - j0, t, T, 4, 0)  # (_chunk, inlined: the driver compiles _chunk)
        j0, j1 = j0 + r0, j0 + r1
    lanes = 64 // W.itemsize
    parted = FORWARD_SAMPLES == 4 and (M - M % lanes) * W.itemsize > 2 * FORWARD_PART_BYTES
    parts = _line_aligned_empty(max(n // 4, 1) if parted else 1, 16 * lanes, W.dtype)
    j = j0
    while j + 4 <= j1:
        _forward_4rows(W, b, a_prev, out, code, j, parts)
        j += 4
    for j in range(j, j1):
        w0 = W[j]
        s = 0
        while s + 4 <= n:
            x0 = a_prev[s]
            x1 = a_prev[s + 1]
            x2 = a_prev[s + 2]
            x3 = a_prev[s + 3]
            a00 = zero
            a01 = zero
            a02 = zero
            a03 = zero
            for k in range(M):
                p = w0[k]
                a00 += p * x0[k]
                a01 += p * x1[k]
                a02 += p * x2[k]
                a03 += p * x3[k]
            out[s, j] = a00 + b[j]
            out[s + 1, j] = a01 + b[j]
            out[s + 2, j] = a02 + b[j]
            out[s + 3, j] = a03 + b[j]
            s += 4
        while s < n:
            x0 = a_prev[s]
            a00 = zero
            for k in range(M):
                a00 += w0[k] * x0[k]
            out[s, j] = a00 + b[j]
            s += 1
    if code != IDENTITY:
        # the activation in one pass (one inlined copy of sigma instead of one per store)
        for s in range(n):
            row = out[s, j0:j1]
            for i in range(row.shape[0]):
                row[i] = _activate(row[i], code, one)


@_jit(parallel=True, fastmath=FAST)
def _dense_forward(W, b, a_prev, out, code, nthreads):
    # W (N, M), b (N,), a_prev (n, M), out (n, N): out = sigma(a_prev W^T + b), rows of W split over threads
    _wide_vectors()
    n, M = a_prev.shape
    N = W.shape[0]
    T = _region_threads(n * N * M, nthreads)
    if T == 1:
        j0, j1 = _chunk(N, T - 1, T)
        _dense_forward_rows(W, b, a_prev, out, code, j0, j1)
    else:
        for t in prange(T):
            j0, j1 = _chunk(N, np.int64(t), T)
            _dense_forward_rows(W, b, a_prev, out, code, j0, j1)


@_jit(fastmath=FAST)
def _activation_rows(z, out, code, s0, s1):
    # z, out (n, N): out = sigma(z) for samples s0 <= s < s1; softmax per row
    _wide_vectors()
    one = z.dtype.type(1)
    N = z.shape[1]
    for s in range(s0, s1):
        if code == SOFTMAX:
            _softmax_row(z[s], out[s])
        else:
            for j in range(N):
                out[s, j] = _activate(z[s, j], code, one)


@_jit(fastmath=FAST)
def _activation_grad_rows(z, out, code):
    # z, out (n, N): out = sigma'(z) elementwise
    _wide_vectors()
    one = z.dtype.type(1)
    n, N = z.shape
    for s in range(n):
        for j in range(N):
            out[s, j] = _activation_grad(z[s, j], code, one)


@_jit()
def _softmax_row(z, out):
    # z, out (K,): out = exp(z - max z) / sum exp(z - max z); returns log sum_j exp(z_j) (float64)
    _wide_vectors()
    K = z.shape[0]
    zmax = z[0]
    for i in range(1, K):
        if z[i] > zmax:
            zmax = z[i]
    total = 0.0
    for i in range(K):
        e = np.exp(z[i] - zmax)
        out[i] = e
        total += e
    inv = z.dtype.type(1.0 / total)
    for i in range(K):
        out[i] = out[i] * inv
    return zmax + math.log(total)


@_jit()
def _output_activation(z, out, output):
    # z, out (K,) for one sample -> a^L; returns log-sum-exp(z) for softmax (else 0)
    _wide_vectors()
    one = z.dtype.type(1)
    if output == SOFTMAX:
        return _softmax_row(z, out)
    for i in range(z.shape[0]):
        out[i] = _activate(z[i], output, one)
    return 0.0


# ---------------------------------------------------------------------------------------------
# Loss and the output delta
# ---------------------------------------------------------------------------------------------

@_inline()
def _output_loss_delta(z, a, lse, label, targets, t_row, has_targets, output, loss, scale, delta):
    # One sample: z, a, delta (K,). Returns the loss c (float64) and writes delta = scale * dc/dz.
    # Output/loss pairs handled (the lecture's delta^L = sigma'(z^L) * grad_a c):
    #   softmax + ce:        c = -sum_i y_i log a_i = -log a_t;   delta = a - y
    #   softmax + mse:       c = sum_i (a_i - y_i)^2;  delta_j = sum_i da_i/dz_j 2(a_i - y_i)
    #                                                        = a_j (g_j - sum_i a_i g_i), g = 2(a - y)
    #   sigmoid + mse:       delta = 2(a - y) * a (1 - a)
    #   identity + mse:      delta = 2(a - y)
    #   sigmoid + bce:       c = -sum_i [y_i log a_i + (1 - y_i) log(1 - a_i)];   delta = a - y
    # (ce with sigmoid or identity outputs, and bce with any output but sigmoid, are rejected by
    # the callers.) scale is 1/n, or w_s / sum of the minibatch's weights with sample weights.
    # y is the one-hot of the class label, or row t_row of targets; it is written into delta first.
    K = z.shape[0]
    one = z.dtype.type(1)
    two = one + one
    for i in range(K):
        delta[i] = targets[t_row, i] if has_targets else (one if i == label else one - one)
    c = 0.0
    if loss == CE:
        # -log a_i = lse - z_i: exact for saturated softmax outputs, where log(a_i) would be -inf
        for i in range(K):
            if delta[i] != 0:
                c += delta[i] * (lse - z[i])
            delta[i] = scale * (a[i] - delta[i])
        return c
    if loss == BCE:
        # with a = sigmoid(z): c_i = log(1 + e^z) - y z, the softplus written so that it neither
        # overflows nor takes log(0) when a_i rounds to 0 or 1 (then log(a_i) would be -inf)
        for i in range(K):
            zi = np.float64(z[i])
            c += max(zi, 0.0) + math.log1p(math.exp(-abs(zi))) - np.float64(delta[i]) * zi
            delta[i] = scale * (a[i] - delta[i])
        return c
    ag = 0.0
    for i in range(K):
        diff = a[i] - delta[i]
        c += diff * diff
        delta[i] = two * diff
        ag += a[i] * delta[i]
    if output == SOFTMAX:
        agt = z.dtype.type(ag)
        for i in range(K):
            delta[i] = scale * a[i] * (delta[i] - agt)
    elif output == SIGMOID:
        for i in range(K):
            delta[i] = scale * delta[i] * a[i] * (one - a[i])
    else:
        for i in range(K):
            delta[i] = scale * delta[i]
    return c


@_inline()
def _argmax(a):
    best = 0
    for i in range(1, a.shape[0]):
        if a[i] > a[best]:
            best = i
    return best


@_inline()
def _is_correct(a, label, targets, t_row, has_targets, output):
    # One sample's prediction against its label: one sigmoid unit predicts class 1 where a > 0.5;
    # several sigmoid units with target rows (multi-label) are right when every unit is on the
    # right side of 0.5; otherwise the argmax must be the label.
    K = a.shape[0]
    if output == SIGMOID:
        if K == 1:
            return (1 if a[0] > 0.5 else 0) == label
        if has_targets:
            for i in range(K):
                if (a[i] > 0.5) != (targets[t_row, i] > 0.5):
                    return False
            return True
    return _argmax(a) == label


@_jit()
def _output_step(Z, AL, D, labels, targets, has_targets, idx, output, loss, scale, losses, weights,
                 has_weights):
    # Z, AL, D (n, K): the output layer of a minibatch whose samples are rows idx[s] of the data set.
    # Writes per-sample losses (float64, (n,); times the sample's weight with has_weights) and
    # D = scale * dc/dz^L (times the weight); returns the number of correct predictions.
    _wide_vectors()
    n = Z.shape[0]
    return _output_samples(Z, AL, D, labels, targets, has_targets, idx, output, loss, scale, losses, weights,
                           has_weights, n - n, n, n < 0)


@_jit()
def _output_samples(Z, AL, D, labels, targets, has_targets, idx, output, loss, scale, losses, weights,
                    has_weights, s0, s1, activate):
    # _output_step for samples s0 <= s < s1; with activate, AL = a^L is computed here first (the
    # softmax's exponentials then serve the loss too), else AL is given
    _wide_vectors()
    correct = 0
    for s in range(s0, s1):
        row = idx[s]
        label = labels[row]
        t_row = row if has_targets else 0
        w = weights[row] if has_weights else 1.0
        lse = 0.0
        if activate:
            lse = _output_activation(Z[s], AL[s], output)
        elif output == SOFTMAX:
            zmax = Z[s, 0]
            for i in range(1, Z.shape[1]):
                if Z[s, i] > zmax:
                    zmax = Z[s, i]
            total = 0.0
            for i in range(Z.shape[1]):
                total += math.exp(Z[s, i] - zmax)
            lse = zmax + math.log(total)
        sc = scale * Z.dtype.type(w) if has_weights else scale
        losses[s] = w * _output_loss_delta(Z[s], AL[s], lse, label, targets, t_row, has_targets,
                                           output, loss, sc, D[s])
        if _is_correct(AL[s], label, targets, t_row, has_targets, output):
            correct += 1
    return correct


# ---------------------------------------------------------------------------------------------
# Backward: the delta recursion and the gradient accumulation
# ---------------------------------------------------------------------------------------------

@_inline()
def _line_aligned_empty(rows, cols, dtype):
    # np.empty((rows, cols), dtype) whose first element starts a 64-byte cache line: Numba aligns
    # its arrays to 32 bytes, and a zmm load of a row of a buffer that starts mid-line spans two
    # lines (cols * itemsize a multiple of 64 keeps every row aligned)
    buf = np.empty(rows * cols + 16, dtype)  # (16 elements: at least 64 bytes)
    skip = (64 - buf.ctypes.data % 64) % 64 // buf.itemsize
    return buf[skip:skip + rows * cols].reshape((rows, cols))


@_inline()
def _zero_padded_columns(X, c0, m, width):
    # (rows, width) copy of columns c0:c0+m of X, zeros after them: for a register tile wider than
    # the columns it may read
    out = np.zeros((X.shape[0], width), X.dtype)
    for r in range(X.shape[0]):
        for i in range(m):
            out[r, i] = X[r, c0 + i]
    return out


# The register tile of _delta_backward_cols and _weight_grad_block: TILE_ROWS x TILE_BYTES of
# columns (set above per vector ISA): 4 x 4 zmm accumulators (64 float32 or 32 float64 columns)
# with AVX-512, 2 x 6 ymm (48 float32, 24 float64) with AVX2.


@intrinsic
def _register_tile(typingctx, like):
    # -> (pointer to an uninitialised 4 x width buffer of like's type on the stack, width), width =
    # TILE_BYTES / itemsize as a compile-time constant. Unlike a heap array, LLVM knows that nothing
    # else points there, so with constant indices it keeps the buffer in registers.
    width = TILE_BYTES * 8 // like.bitwidth
    ptr_t = types.CPointer(like)

    def codegen(context, builder, sig, args):
        ptr = cgutils.alloca_once(builder, context.get_value_type(like),
                                  size=context.get_constant(types.intp, 4 * width))
        return context.make_tuple(builder, sig.return_type,
                                  (ptr, context.get_constant(types.intp, width)))
    return types.Tuple((ptr_t, types.intp))(like), codegen


# ---------------------------------------------------------------------------------------------
# The AVX2 + FMA micro-kernel (TILE_ROWS == 6: _micro_thresholds)
# ---------------------------------------------------------------------------------------------

# A 6 x 2-vector tile, as in BLIS's Haswell kernel: 12 ymm accumulators, 2 registers for the loads
# of a step and 2 that the 6 broadcasts alternate between: all 16 ymm registers and no spill. It is
# written in assembly because LLVM, given the same loop, holds all 6 broadcasts of a step in
# registers at once (18-20 of the 16) and spills accumulators on every step.
MICRO_ROWS = 6
MICRO_BYTES = 64  # a tile row: 2 ymm registers


def _micro_tile_ends(suffix, c, c_ld, init):
    # -> (accumulators, start, end): the AT&T lines that start a 6 x 2-ymm tile (acc = 0 if the
    # operand init is nonzero, else the 6 rows of 64 bytes at operand c, c_ld bytes apart; %r9 holds
    # row 3's address) and that end it (the rows = acc)
    acc = [f"%ymm{i}" for i in range(12)]
    rows = [c, f"{c},{c_ld},1", f"{c},{c_ld},2", "%r9", f"%r9,{c_ld},1", f"%r9,{c_ld},2"]
    cs = [f"{32 * h}({row})" for row in rows for h in (0, 1)]
    start = [f"lea ({c},{c_ld},2), %r9", f"add {c_ld}, %r9", f"test {init}, {init}", "jz 3f"]
    start += [f"vxorp{suffix} {a}, {a}, {a}" for a in acc]
    start += ["jmp 4f", "3:"]
    start += [f"vmovup{suffix} {row}, {a}" for row, a in zip(cs, acc)]
    start += ["4:"]
    end = [f"vmovup{suffix} {a}, {row}" for row, a in zip(cs, acc)] + ["vzeroupper"]
    return acc, start, end


def _micro_asm(suffix, bcast):
    # AT&T assembly of the tile loop; operands $0 k, $1 x, $2 x_step, $3 d, $4 d_ld, $5 d_step, $6 c,
    # $7 c_ld, $8 init (bytes for the steps and strides). acc[r, :] = (0 if init else c[r, :]), then
    # acc[r, :] += d[k, r] * x[k, :] for k ascending; then c[r, :] = acc[r, :].
    acc, start, end = _micro_tile_ends(suffix, "$6", "$7", "$8")
    lines = ["mov $1, %rax", "mov $3, %rcx", "mov $0, %r8", "lea ($3,$4,2), %rdx", "add $4, %rdx"] + start
    lines += ["test %r8, %r8", "jle 2f", "1:", f"vmovup{suffix} (%rax), %ymm12", f"vmovup{suffix} 32(%rax), %ymm13"]
    srcs = ["(%rcx)", "(%rcx,$4,1)", "(%rcx,$4,2)", "(%rdx)", "(%rdx,$4,1)", "(%rdx,$4,2)"]
    for r, src in enumerate(srcs):
        b = f"%ymm{14 + r % 2}"
        lines += [f"{bcast} {src}, {b}",
                  f"vfmadd231p{suffix} %ymm12, {b}, {acc[2 * r]}",
                  f"vfmadd231p{suffix} %ymm13, {b}, {acc[2 * r + 1]}"]
    lines += ["add $2, %rax", "add $5, %rcx", "add $5, %rdx", "dec %r8", "jnz 1b", "2:"] + end
    return "\n\t".join(lines)


def _micro_gather_asm(suffix, bcast, size):
    # _micro_asm with x[k, :] the 64 bytes at x + offsets[k] and d[k, :] 6 contiguous elements of
    # `size` bytes; operands $0 k, $1 x, $2 offsets (address of k int64), $3 d, $4 d_step, $5 c,
    # $6 c_ld, $7 init. (One operand fewer than _micro_asm and the 6 deltas at constant offsets: its
    # loop needs two more registers, the offset and the walk along the offsets, and all 16
    # general-purpose registers would not do.)
    acc, start, end = _micro_tile_ends(suffix, "$5", "$6", "$7")
    lines = ["mov $2, %rax", "mov $3, %rcx", "mov $0, %r8"] + start
    lines += ["test %r8, %r8", "jle 2f", "1:", "mov (%rax), %r10",
              f"vmovup{suffix} ($1,%r10,1), %ymm12", f"vmovup{suffix} 32($1,%r10,1), %ymm13"]
    for r in range(MICRO_ROWS):
        b = f"%ymm{14 + r % 2}"
        lines += [f"{bcast} {r * size}(%rcx), {b}",
                  f"vfmadd231p{suffix} %ymm12, {b}, {acc[2 * r]}",
                  f"vfmadd231p{suffix} %ymm13, {b}, {acc[2 * r + 1]}"]
    lines += ["add $$8, %rax", "add $4, %rcx", "dec %r8", "jnz 1b", "2:"] + end
    return "\n\t".join(lines)


# Numba's JIT assembles inline assembly only with the native assembly parser registered (cheap, no
# compilation).
llvm.initialize_native_asmparser()

_MICRO_CLOBBERS = ",".join(["~{rax}", "~{rcx}", "~{rdx}", "~{r8}", "~{r9}"] + [f"~{{xmm{i}}}" for i in range(16)]
                           + ["~{memory}", "~{dirflag}", "~{fpsr}", "~{flags}"])


@intrinsic
def _micro_tile(typingctx, like, k, x, x_step, d, d_ld, d_step, c, c_ld, init):
    # like: float32|float64 (picks the instructions); the rest int64: addresses, byte steps.
    # c[r, :] = (0 if init else c[r, :]) + sum_{kk < k} d[kk, r] x[kk, :] for r < 6, where x[kk, :]
    # is the 64 bytes at x + kk * x_step, d[kk, r] the element at d + kk * d_step + r * d_ld and
    # c[r, :] the 64 bytes at c + r * c_ld; each element gets one FMA per kk, in ascending order.
    asm = _micro_asm("s", "vbroadcastss") if like.bitwidth == 32 else _micro_asm("d", "vbroadcastsd")
    constraint = "r,r,r,r,r,r,r,r,r," + _MICRO_CLOBBERS

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * 9)
        builder.asm(fnty, asm, constraint, list(args[1:]), True)
        return context.get_dummy_value()
    return types.none(like, *([types.int64] * 9)), codegen


@intrinsic
def _micro_tile_gather(typingctx, like, k, x, offsets, d, d_step, c, c_ld, init):
    # _micro_tile with x[kk, :] the 64 bytes at x + offsets[kk] (offsets: the address of k int64
    # byte offsets) and d[kk, r] the element at d + kk * d_step + r * (its size)
    if like.bitwidth == 32:
        asm = _micro_gather_asm("s", "vbroadcastss", 4)
    else:
        asm = _micro_gather_asm("d", "vbroadcastsd", 8)
    constraint = "r,r,r,r,r,r,r,r,~{r10}," + _MICRO_CLOBBERS.replace("~{rdx},", "")

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * 8)
        builder.asm(fnty, asm, constraint, list(args[1:]), True)
        return context.get_dummy_value()
    return types.none(like, *([types.int64] * 8)), codegen


def _micro_zmm(vectors, rows=ZMM_TILE_ROWS, gather=False):
    # -> an intrinsic with _micro_tile's contract for a tile of `rows` (8) rows x `vectors` zmm:
    # c[r, :] = (0 if init else c[r, :]) + sum_{kk < k} d[kk, r] x[kk, :] for r < rows, x[kk, :]
    # the 64 * vectors bytes at x + kk * x_step (gather: at x + offsets[kk], x_step then the
    # address of k int64 byte offsets, as _micro_tile_gather), d[kk, r] the element at
    # d + kk * d_step + r * d_ld, c[r, :] the 64 * vectors bytes at c + r * c_ld; each element gets
    # one FMA per kk, in ascending order (the AVX2 tile's bits). LLVM IR, not assembly: with 32 zmm
    # registers LLVM keeps the accumulators (24 for 8 x 3), the loads of a step and one broadcast at
    # a time in registers (kernels_gflops.py --asm).

    @intrinsic
    def tile(typingctx, like, k, x, x_step, d, d_ld, d_step, c, c_ld, init):
        lanes = 512 // like.bitwidth
        size = like.bitwidth // 8

        def codegen(context, builder, sig, args):
            i64 = ir.IntType(64)
            i8p = ir.IntType(8).as_pointer()
            ft = context.get_value_type(like)
            vt = ir.VectorType(ft, lanes)
            k, x, x_step, d, d_ld, d_step, c, c_ld, init = args[1:]
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                                 f"llvm.fma.v{lanes}f{like.bitwidth}")

            def at(base, offset, ty):
                return builder.bitcast(builder.gep(builder.inttoptr(base, i8p), [offset]), ty.as_pointer())

            zero = ir.Constant(vt, [ir.Constant(ft, 0.0)] * lanes)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(rows * vectors)]
            cells = [builder.add(builder.mul(ir.Constant(i64, r), c_ld), ir.Constant(i64, 64 * v))
                     for r in range(rows) for v in range(vectors)]
            with builder.if_then(builder.icmp_signed("==", init, ir.Constant(i64, 0))):
                for acc, cell in zip(accs, cells):
                    builder.store(builder.load(at(c, cell, vt), align=size), acc)
            d_rows = [builder.mul(ir.Constant(i64, r), d_ld) for r in range(rows)]
            undef = ir.Constant(vt, ir.Undefined)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
            with cgutils.for_range(builder, k) as loop:
                if gather:
                    xo = builder.load(at(x_step, builder.mul(loop.index, ir.Constant(i64, 8)), i64), align=8)
                else:
                    xo = builder.mul(loop.index, x_step)
                do = builder.mul(loop.index, d_step)
                xv = [builder.load(at(x, builder.add(xo, ir.Constant(i64, 64 * v)), vt), align=size)
                      for v in range(vectors)]
                for r in range(rows):
                    e = builder.load(at(d, builder.add(do, d_rows[r]), ft), align=size)
                    b = builder.shuffle_vector(builder.insert_element(undef, e, ir.Constant(ir.IntType(32), 0)),
                                               undef, splat)
                    for v in range(vectors):
                        acc = accs[r * vectors + v]
                        builder.store(builder.call(fma, [xv[v], b, builder.load(acc)]), acc)
            for acc, cell in zip(accs, cells):
                builder.store(builder.load(acc), at(c, cell, vt), align=size)
            return context.get_dummy_value()
        return types.none(like, *([types.int64] * 9)), codegen
    return tile


# the zmm forward tiles: 3 vectors for whole panels, 2 or 1 for a last panel that needs no more
_micro_zmm3, _micro_zmm2, _micro_zmm1 = _micro_zmm(3), _micro_zmm(2), _micro_zmm(1)
# the weight gradient's and the delta recursion's (GATHER_ZMM): 4 rows x 6 vectors, gathered rows of
# the panel; 1 to 5 vectors for a last panel
_gather_zmm1, _gather_zmm2, _gather_zmm3, _gather_zmm4, _gather_zmm5, _gather_zmm6 = (
    _micro_zmm(v, 4, True) for v in range(1, GATHER_ZMM_VECTORS + 1))


def _transpose8_asm():
    # AT&T assembly: the 8 x 8 float32 block at $0 (rows $1 bytes apart) transposed into 8 rows of
    # 32 bytes at $2, $3 bytes apart (a panel's rows): 8 row loads, the usual unpack / shuffle /
    # 128-bit permute network, 8 stores.
    lines = ["lea ($0,$1,2), %rax", "lea (%rax,$1,2), %rcx", "vmovups ($0), %ymm0", "vmovups ($0,$1,1), %ymm1",
             "vmovups (%rax), %ymm2", "vmovups (%rax,$1,1), %ymm3", "vmovups (%rcx), %ymm4",
             "vmovups (%rcx,$1,1), %ymm5", "lea (%rcx,$1,2), %rax", "vmovups (%rax), %ymm6",
             "vmovups (%rax,$1,1), %ymm7"]
    for h in range(4):  # rows 2h, 2h+1 interleaved: a0 b0 a1 b1 | a4 b4 a5 b5 and a2 b2 a3 b3 | ...
        lines += [f"vunpcklps %ymm{2 * h + 1}, %ymm{2 * h}, %ymm{8 + 2 * h}",
                  f"vunpckhps %ymm{2 * h + 1}, %ymm{2 * h}, %ymm{9 + 2 * h}"]
    for q in range(2):  # four rows' element pairs: a0 b0 c0 d0 | a4 b4 c4 d4 and so on
        for h in range(2):
            lines += [f"vshufps $$0x44, %ymm{10 + 4 * q + h}, %ymm{8 + 4 * q + h}, %ymm{4 * q + 2 * h}",
                      f"vshufps $$0xEE, %ymm{10 + 4 * q + h}, %ymm{8 + 4 * q + h}, %ymm{4 * q + 2 * h + 1}"]
    for col in range(8):  # column col of the block: the 128-bit halves of rows 0-3 and 4-7
        lines += [f"vperm2f128 $${'0x20' if col < 4 else '0x31'}, %ymm{4 + col % 4}, %ymm{col % 4}, %ymm{8 + col}"]
    lines += ["mov $2, %rax"]
    for col in range(8):
        lines += [f"vmovups %ymm{8 + col}, (%rax)"] + (["add $3, %rax"] if col < 7 else [])
    lines += ["vzeroupper"]
    return "\n\t".join(lines)


def _transpose4d_asm():
    # AT&T assembly: the 4 x 4 float64 block at $0 (rows $1 bytes apart) transposed into 4 rows of
    # 32 bytes at $2, $3 bytes apart (a panel's rows): 4 row loads, unpack, 128-bit permutes, 4 stores.
    lines = ["lea ($0,$1,2), %rax", "vmovupd ($0), %ymm0", "vmovupd ($0,$1,1), %ymm1", "vmovupd (%rax), %ymm2",
             "vmovupd (%rax,$1,1), %ymm3",
             "vunpcklpd %ymm1, %ymm0, %ymm4", "vunpckhpd %ymm1, %ymm0, %ymm5",  # a0 b0 a2 b2, a1 b1 a3 b3
             "vunpcklpd %ymm3, %ymm2, %ymm6", "vunpckhpd %ymm3, %ymm2, %ymm7",  # c0 d0 c2 d2, c1 d1 c3 d3
             "vperm2f128 $$0x20, %ymm6, %ymm4, %ymm0", "vperm2f128 $$0x20, %ymm7, %ymm5, %ymm1",
             "vperm2f128 $$0x31, %ymm6, %ymm4, %ymm2", "vperm2f128 $$0x31, %ymm7, %ymm5, %ymm3"]
    lines += ["mov $2, %rax"]
    for col in range(4):
        lines += [f"vmovupd %ymm{col}, (%rax)"] + (["add $3, %rax"] if col < 3 else [])
    lines += ["vzeroupper"]
    return "\n\t".join(lines)


@intrinsic
def _transpose_tile(typingctx, like, src, src_ld, dst, dst_ld):
    # like: float32|float64 (picks the block); the rest int64 addresses and byte strides. float32:
    # dst[k * dst_ld + 4 i] = src[i * src_ld + 4 k], i, k < 8; float64: dst[k * dst_ld + 8 i] =
    # src[i * src_ld + 8 k], i, k < 4
    if like.bitwidth == 32:
        asm, scratch = _transpose8_asm(), ["~{rax}", "~{rcx}"] + [f"~{{xmm{i}}}" for i in range(16)]
    else:
        asm, scratch = _transpose4d_asm(), ["~{rax}"] + [f"~{{xmm{i}}}" for i in range(8)]
    constraint = "r,r,r,r," + ",".join(scratch + ["~{memory}", "~{dirflag}", "~{fpsr}", "~{flags}"])

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(64)] * 4)
        builder.asm(fnty, asm, constraint, list(args[1:]), True)
        return context.get_dummy_value()
    return types.none(like, types.int64, types.int64, types.int64, types.int64), codegen


@_inline(fastmath=FAST)
def _micro(like, k, x, x_step, d, d_ld, d_step, c, c_ld, init):
    _micro_tile(like, np.int64(k), np.int64(x), np.int64(x_step), np.int64(d), np.int64(d_ld), np.int64(d_step),
                np.int64(c), np.int64(c_ld), np.int64(init))


@_inline(fastmath=FAST)
def _micro_forward(like, k, x, x_step, d, d_ld, d_step, c, c_ld, init, used):
    # the forward micro-kernel's tile (FORWARD_MICRO_ROWS x FORWARD_MICRO_BYTES: _forward_micro_tile)
    # of which the first `used` bytes of each row are needed: the zmm tile sums only the vectors that
    # holds (the rest of c is left as it was), so that a last panel of 32 of 48 float32 columns, as
    # 128 samples leave, costs 2/3 of a whole one
    if FORWARD_MICRO_ZMM:
        if used > 128:
            _micro_zmm3(like, np.int64(k), np.int64(x), np.int64(x_step), np.int64(d), np.int64(d_ld),
                        np.int64(d_step), np.int64(c), np.int64(c_ld), np.int64(init))
        elif used > 64:
            _micro_zmm2(like, np.int64(k), np.int64(x), np.int64(x_step), np.int64(d), np.int64(d_ld),
                        np.int64(d_step), np.int64(c), np.int64(c_ld), np.int64(init))
        else:
            _micro_zmm1(like, np.int64(k), np.int64(x), np.int64(x_step), np.int64(d), np.int64(d_ld),
                        np.int64(d_step), np.int64(c), np.int64(c_ld), np.int64(init))
    else:
        _micro(like, k, x, x_step, d, d_ld, d_step, c, c_ld, init)


@_inline(fastmath=FAST)
def _micro_gather(like, k, x, offsets, d, d_step, c, c_ld, init):
    _micro_tile_gather(like, np.int64(k), np.int64(x), np.int64(offsets), np.int64(d), np.int64(d_step), np.int64(c),
                       np.int64(c_ld), np.int64(init))


@intrinsic
def _data(typingctx, a):
    # the address of a's first element, as an int64: what a.ctypes.data gives, without the ctypes
    # object, which takes a reference to the array: an atomic increment and decrement of its count,
    # in the tiles' loops once per tile, on the arrays a kernel allocates itself (the driver's own
    # arguments have no owner: _unowned)
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))
    return types.int64(a), codegen


@intrinsic
def _pointer(typingctx, like, addr):
    # addr (an integer) as a pointer to like's type, for carray: a view that holds no reference
    # (a slice takes one, as a.ctypes does: see _data)
    ptr_t = types.CPointer(like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[1], context.get_value_type(ptr_t))
    return ptr_t(like, addr), codegen


@intrinsic
def _magnitude_bits(typingctx, x):
    # x's bits less its sign, as an unsigned integer of its width: nonzero iff x != 0 (NaN
    # included, +0 and -0 not). An integer OR of these tells whether any of several floats is
    # nonzero in fewer instructions than a float compare each (x86 adds a parity test to every
    # compare, for NaN's unordered result).
    width = x.bitwidth
    rt = types.uint32 if width == 32 else types.uint64

    def codegen(context, builder, sig, args):
        it = ir.IntType(width)
        return builder.and_(builder.bitcast(args[0], it), ir.Constant(it, (1 << (width - 1)) - 1))
    return rt(x), codegen


@_inline()
def _addr(a, r, c):
    # address of a[r, c] (2-D, rows strided, columns contiguous)
    return _data(a) + r * a.strides[0] + c * a.itemsize


@_inline()
def _pack_panel(X, rows, c, e, out):
    # out[r, :] = X[r, c:e] followed by zeros, r < rows: a panel of _micro_tile's x operand,
    # contiguous (read in place, rows a power of two bytes apart share a few L1 sets and evict
    # each other)
    zero = out.dtype.type(0)
    w = e - c
    T = out.shape[1]
    for r in range(rows):
        src = X[r, c:e]
        dst = out[r]
        for i in range(w):
            dst[i] = src[i]
        for i in range(w, T):
            dst[i] = zero


# Column panels that the delta micro-kernel packs in one pass over the rows of W. Packed one panel
# at a time, each row of W gave one 64-byte line from a page far from the next row's, and a W
# larger than the caches kept the packing waiting for memory; eight panels read 512 contiguous
# bytes of each row.
PACK_PANELS = 8
# Rows of W ahead of the one it copies that _pack_panels asks the CPU to load
PACK_AHEAD = 4
# A panel's bytes per block of rows of W in the delta micro-kernel: 128 rows of 64 bytes, so that
# the block's packed panels and its deltas (n x 128) leave room in L2 for the partial sums that
# its tiles load and store. (The blocking does not change the order of the sums.)
MICRO_DELTA_BLOCK_BYTES = 8192


@_inline()
def _pack_panels(X, r0, r1, c, e, pn, out):
    # out[q (r1 - r0) + r, :] = X[r0 + r, c + q T:c + (q + 1) T] followed by zeros past column e, for
    # q < pn and r < r1 - r0: pn consecutive panels of _micro_tile's x operand, row by row of X.
    # (Each copy reads a slice: indexing src[cq + i] would check every index for wraparound, and the
    # loop would not vectorise. out is 2-D, as the kernel's other buffers: each array rank of
    # np.empty is compiled apart.)
    zero = out.dtype.type(0)
    T = out.shape[1]
    rows = r1 - r0
    for r in range(rows):
        src = X[r0 + r]
        if r + PACK_AHEAD < rows:
            # (rows of W are far apart, and the hardware prefetchers do not follow from one to the
            # next: each row's first load would wait for memory)
            ahead = X[r0 + r + PACK_AHEAD]
            for q in range(pn):
                _prefetch(ahead, min(c + q * T, X.shape[1] - 1))
        for q in range(pn):
            cq = c + q * T
            w = min(T, e - cq)
            dst = out[q * rows + r]
            s = src[cq:cq + w]
            for i in range(w):
                dst[i] = s[i]
            for i in range(w, T):
                dst[i] = zero


@_jit()
def _bias_sums(d, db, j, rn, n, accumulate):
    # d (>= n, R) packed deltas of rows j..j+rn-1, db (N,): db[j + r] (+)= sum_s d[s, r], the samples
    # in ascending order. Not fastmath: reassociated, LLVM vectorised this sum differently in the
    # process that compiled it and in the processes that load it from the cache, so their biases
    # differed in the last bits.
    _wide_vectors()
    for r in range(rn):
        acc = db[j + r] if accumulate else d.dtype.type(0)
        for s in range(n):
            acc += d[s, r]
        db[j + r] = acc


@_inline(fastmath=FAST)
def _weight_grad_micro(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias):
    # _weight_grad_block with TILE_ROWS == 6 (AVX2 + FMA): tiles of 6 rows x 64 bytes of dW summed
    # over all samples by _micro_tile, starting from dW (accumulate) or zero. The deltas of each
    # group of 6 rows are packed first (sample-major, 6 per sample; zeros for the rows past j1 of a
    # last partial group) and db summed from them; then per column panel (all samples x 64 bytes of
    # a_prev, packed contiguous with zeros past c1, in L1) every group's tile, in place in dW when
    # whole, else through a zero-padded copy. Each element is dW's (or zero) plus the products of
    # the samples in ascending order, one FMA each, whatever the split of rows or columns. No sample
    # is skipped (the 4-row path leaves out samples whose deltas are all zero): all 6 deltas of a
    # group are rarely zero in training, so skipping would not pay for its branch, and the work
    # done is the nominal 2 n N M.
    n, M = a_prev.shape
    one = dW.dtype.type(1)
    zero = one - one
    R = MICRO_ROWS
    T = MICRO_BYTES // dW.itemsize
    size = dW.itemsize
    groups = (j1 - j0 + R - 1) // R
    if groups <= 0:
        return
    d = np.zeros((groups, max(n, 1), R), dW.dtype)
    for g in range(groups):
        jg = j0 + g * R
        rn = min(R, j1 - jg)
        dg = d[g]
        if rn == R:
            for s in range(n):
                e = delta[s, jg:jg + R]
                q = dg[s]
                q[0] = e[0]
                q[1] = e[1]
                q[2] = e[2]
                q[3] = e[3]
                q[4] = e[4]
                q[5] = e[5]
        else:
            for s in range(n):
                for r in range(rn):
                    dg[s, r] = delta[s, jg + r]
        if with_bias:
            _bias_sums(dg, db, jg, rn, n, accumulate)
    x = np.empty((max(n, 1), T), dW.dtype)
    tile = np.empty((R, T), dW.dtype)
    init = 0 if accumulate else 1
    # a_prev's column panels are read in place when its rows are an odd number of cache lines apart
    # (then a panel's lines spread over every L1 set and stay there for all the groups of rows):
    # packing them costs a copy of a_prev per call
    stride = a_prev.strides[0]
    in_place = stride % 64 == 0 and (stride // 64) % 2 == 1
    for c in range(c0, c1, T):
        w = min(c + T, c1) - c
        xa, xs = _addr(x, 0, 0), T * size
        if in_place and w == T:
            xa, xs = _addr(a_prev, 0, c), stride
        else:
            _pack_panel(a_prev, n, c, c + w, x)
        for g in range(groups):
            jg = j0 + g * R
            rn = min(R, j1 - jg)
            # (the next tile's rows of dW, 6 lines far apart, requested while this one is summed)
            if g + 1 < groups:
                for r in range(min(R, j1 - jg - R)):
                    _prefetch(dW[jg + R + r], c)
            if rn == R and w == T:
                _micro(one, n, xa, xs, _addr(d[g], 0, 0), size, R * size, _addr(dW, jg, c), dW.strides[0], init)
            else:
                for r in range(R):
                    for i in range(T):
                        tile[r, i] = dW[jg + r, c + i] if accumulate and r < rn and i < w else zero
                _micro(one, n, xa, xs, _addr(d[g], 0, 0), size, R * size, _addr(tile, 0, 0), T * size, 0)
                for r in range(rn):
                    for i in range(w):
                        dW[jg + r, c + i] = tile[r, i]


@_inline(fastmath=FAST)
def _delta_backward_micro(W, delta, a_prev, code, from_output, delta_prev, i0, i1, samples):
    # _delta_backward_cols with the AVX2 micro-kernel (see MICRO_DELTA_MIN_ROWS): tiles of 6 samples
    # x 64 bytes of columns summed over j by _micro_tile_gather (_micro_tile where a block keeps every
    # j: the gather's index load costs a few percent). The deltas of each group of 6 samples (6 in a
    # row of `samples`, a permutation of the rows of delta) are packed first (j-major, 6 per j;
    # zeros for samples past n), leaving out the j whose 6 deltas are all zero (a ReLU unit off for
    # all 6 samples: in a trained 2048-unit layer a fifth of the j in the minibatch's order, over a
    # quarter by label, where independent units would give 1/64), each kept j's byte offset in a
    # panel beside it (scalar indexing in that pass: a row view per j made it cost a quarter of the
    # kernel); then per block of MICRO_DELTA_BLOCK_BYTES of rows j of W (the block's deltas, n x KC,
    # stay in L2), per column panel (W[jb:je, c:c + 64 bytes] packed contiguous, PACK_PANELS at a time, zeros
    # past i1: no column outside i0:i1 is read, other threads may be updating them), every group's
    # tile over its kept j of the block, summed in place in sums (padded to whole tiles), whose
    # partial sums wait there between blocks. Then delta_prev = sums times sigma'. Each element is
    # summed over j in ascending order from zero, one FMA each, whatever the split; a j left out
    # would have added 0 * W[j, i] (+-0) to a sum that starts at +0 and is never -0, which leaves
    # it as it is.
    n, N = delta.shape
    one = W.dtype.type(1)
    R = MICRO_ROWS
    T = MICRO_BYTES // W.itemsize
    size = W.itemsize
    m = i1 - i0
    groups = (n + R - 1) // R
    if m <= 0 or groups == 0:
        return
    KC = max(MICRO_DELTA_BLOCK_BYTES // (T * size), 1)
    blocks = max((N + KC - 1) // KC, 1)
    d = np.empty((groups, max(N, 1), R), W.dtype)
    offsets = np.empty((groups, max(N, 1)), np.int64)
    starts = np.empty((groups, blocks + 1), np.int64)  # starts[g, b]: group g's first kept j of block b
    none = np.zeros(max(N, 1), W.dtype)  # the deltas of a sample past n
    for g in range(groups):
        s = g * R
        # (the 6 rows read side by side in one pass: copying each into d first and then packing
        # took half as long again)
        e0 = delta[samples[s]]
        e1 = delta[samples[s + 1]] if s + 1 < n else none
        e2 = delta[samples[s + 2]] if s + 2 < n else none
        e3 = delta[samples[s + 3]] if s + 3 < n else none
        e4 = delta[samples[s + 4]] if s + 4 < n else none
        e5 = delta[samples[s + 5]] if s + 5 < n else none
        dg = d[g]
        kept = 0
        og = offsets[g]
        for b in range(blocks):
            starts[g, b] = kept
            for j in range(b * KC, min(b * KC + KC, N)):
                v0 = e0[j]
                v1 = e1[j]
                v2 = e2[j]
                v3 = e3[j]
                v4 = e4[j]
                v5 = e5[j]
                # (stored whatever the deltas, kept by advancing kept: no unpredictable branch)
                dg[kept, 0] = v0
                dg[kept, 1] = v1
                dg[kept, 2] = v2
                dg[kept, 3] = v3
                dg[kept, 4] = v4
                dg[kept, 5] = v5
                og[kept] = (j - b * KC) * T * size
                kept += (_magnitude_bits(v0) | _magnitude_bits(v1) | _magnitude_bits(v2) | _magnitude_bits(v3)
                         | _magnitude_bits(v4) | _magnitude_bits(v5)) != 0
        starts[g, blocks] = kept
    panels = (m + T - 1) // T
    PP = PACK_PANELS
    x = np.empty((PP * max(min(N, KC), 1), T), W.dtype)
    # (rows an odd number of 64-byte tiles apart: rows a power of two bytes apart would share a few
    # cache sets and evict each other)
    sums = np.empty((groups * R, (panels | 1) * T), W.dtype)
    for jb in range(0, max(N, 1), KC):
        je = min(jb + KC, N)
        b = jb // KC
        for p0 in range(0, panels, PP):
            pn = min(PP, panels - p0)
            _pack_panels(W, jb, je, i0 + p0 * T, i1, pn, x)
            for q in range(pn):
                p = p0 + q
                xq = _addr(x, q * (je - jb), 0)
                for g in range(groups):
                    k0 = starts[g, b]
                    kn = starts[g, b + 1] - k0
                    if kn == je - jb:
                        _micro(one, kn, xq, T * size, _addr(d[g], k0, 0), size, R * size,
                               _addr(sums, g * R, p * T), sums.strides[0], 1 if jb == 0 else 0)
                    else:
                        _micro_gather(one, kn, xq, _addr(offsets, g, k0), _addr(d[g], k0, 0), R * size,
                                      _addr(sums, g * R, p * T), sums.strides[0], 1 if jb == 0 else 0)
    for s in range(n):
        o = delta_prev[samples[s], i0:i1]
        v = sums[s]
        for i in range(m):
            o[i] = v[i]
    for s in range(n):
        _scale_by_activation_grad(delta_prev[s, i0:i1], a_prev[s, i0:i1], code, from_output)


@_jit()
def _pack_transposed(X, r0, w, q):
    # X (rows, M), q (M, T): q[k, i] = X[r0 + i, k] for i < w <= T, zeros for w <= i < T: rows of W
    # or samples of a_prev as a panel of the forward micro-kernel. Blocks of 8 x 8 float32 or 4 x 4
    # float64 transposed in registers (_transpose_tile), a store of 32 bytes per row of the block
    # where the loop below makes scattered single-element stores. (Compiled once for both operands,
    # not inlined twice.)
    _wide_vectors()
    M = X.shape[1]
    T = q.shape[1]
    zero = q.dtype.type(0)
    B = 8 if X.itemsize == 4 else 4  # the block: 8 x 8 float32 or 4 x 4 float64, 32-byte rows
    KB = M // B * B
    i0 = w // B * B if KB > 0 else 0
    for i in range(0, i0, B):
        for k in range(0, KB, B):
            _transpose_tile(zero, np.int64(_addr(X, r0 + i, k)), np.int64(X.strides[0]), np.int64(_addr(q, k, i)),
                            np.int64(q.strides[0]))
        for k in range(KB, M):
            for r in range(i, i + B):
                q[k, r] = X[r0 + r, k]
    for i in range(i0, w):
        row = X[r0 + i]
        for k in range(M):
            q[k, i] = row[k]
    for k in range(M):
        for i in range(w, T):
            q[k, i] = zero


@_inline(fastmath=FAST)
def _forward_micro(W, b, a_prev, out, code, j0, j1):
    # out[s, j] = sigma(sum_k W[j, k] a_prev[s, k] + b[j]) for rows j0 <= j < j1 (j1 - j0 >= R) of
    # W, all samples, by the micro-kernel (see _forward_takes_micro): tiles of R rows of W x T
    # columns of samples summed over k by _micro_forward (AVX2: R = 6, 64 bytes, _micro_tile; zmm: R
    # = 8, 192 bytes, _micro_zmm), with W read in place (R rows: in L1) and a_prev packed transposed
    # into panels of T samples (zeros past n), or, with at least as many samples as rows, tiles of
    # R samples (read in place) x T rows of W packed transposed.
    # A last group of rows or samples is moved to end at j1 or n (its overlap is recomputed
    # identically). Each element is summed over k in ascending order from zero, then b[j] added and
    # sigma applied as the tile is stored (while it is in L1), whatever the split of rows or samples
    # and the orientation.
    n, M = a_prev.shape
    one = W.dtype.type(1)
    zero = one - one
    R = FORWARD_MICRO_ROWS
    T = FORWARD_MICRO_BYTES // W.itemsize
    size = W.itemsize
    panels = (n + T - 1) // T
    if panels == 0:
        return
    if n >= j1 - j0:
        # fewer rows than samples: the other way round (6 samples x 64 bytes of rows, W^T packed),
        # so that the smaller operand is the one transposed; the same FMAs in the same order. All of
        # W^T is packed first and each group of samples (in L1) meets every panel (in L2), so that
        # a_prev, which may not fit in L2, is read once.
        wp = (j1 - j0 + T - 1) // T
        wt = _line_aligned_empty(wp * M, T, W.dtype)
        for c in range(j0, j1, T):
            q = (c - j0) // T * M
            _pack_transposed(W, c, min(c + T, j1) - c, wt[q:q + M])
        tile = _line_aligned_empty(R, T, W.dtype)
        done = 0
        for g in range(0, n, R):
            sg = min(g, n - R)
            for c in range(j0, j1, T):
                e = min(c + T, j1)
                _micro_forward(one, M, _addr(wt, (c - j0) // T * M, 0), T * size, _addr(a_prev, sg, 0),
                               a_prev.strides[0], size, _addr(tile, 0, 0), T * size, 1, (e - c) * size)
                bb = b[c:e]
                for r in range(done - sg, R):
                    _store_activated(out[sg + r, c:e], tile[r], bb, code)
            done = sg + R
        return
    p = _line_aligned_empty(panels * M, T, W.dtype)
    for pi in range(panels):
        _pack_transposed(a_prev, pi * T, min(T, n - pi * T), p[pi * M:pi * M + M])
    groups = (j1 - j0 + R - 1) // R
    KC = FORWARD_MICRO_KC
    if M > KC:
        # the sums over k in blocks of KC inputs: each block's rows of every panel stay in L2 while
        # all the groups of rows of W meet them (summed over all of k at once, the panels, larger
        # than L2 with 2048 inputs, came from L3 again for every group), each tile's partial sums
        # waiting in `sums` between blocks (init 0 continues them: the same FMAs in the same order)
        sums = _line_aligned_empty(groups * panels * R, T, W.dtype)
        for k0 in range(0, M, KC):
            kc = min(KC, M - k0)
            for gi in range(groups):
                jg = min(j0 + gi * R, j1 - R)
                for pi in range(panels):
                    _micro_forward(one, kc, _addr(p, pi * M + k0, 0), T * size, _addr(W, jg, k0), W.strides[0],
                                   size, _addr(sums, (gi * panels + pi) * R, 0), T * size, 1 if k0 == 0 else 0,
                                   min(T, n - pi * T) * size)
    else:
        sums = _line_aligned_empty(R, T, W.dtype)
    done = j0
    for gi in range(groups):
        jg = min(j0 + gi * R, j1 - R)
        for pi in range(panels):
            if M > KC:
                tile = sums[(gi * panels + pi) * R:(gi * panels + pi + 1) * R]
            else:
                tile = sums
                _micro_forward(one, M, _addr(p, pi * M, 0), T * size, _addr(W, jg, 0), W.strides[0], size,
                               _addr(tile, 0, 0), T * size, 1, min(T, n - pi * T) * size)
            s0 = pi * T
            for r in range(done - jg, R):
                j = jg + r
                bj = b[j]
                v = tile[r]
                if code == RELU:
                    for col in range(min(T, n - s0)):
                        x = v[col] + bj
                        out[s0 + col, j] = x if x > 0 else zero
                else:
                    for col in range(min(T, n - s0)):
                        out[s0 + col, j] = _activate(v[col] + bj, code, one)
        done = jg + R


@_jit(fastmath=FAST)
def _delta_backward_cols(W, delta, a_prev, code, from_output, delta_prev, i0, i1, samples):
    # W = W^l (N, M), delta = delta^l (n, N), a_prev = a^{l-1} or z^{l-1} (n, M), delta_prev (n, M),
    # samples (n,) int64 a permutation of 0..n-1. Columns i0 <= i < i1:
    # delta^{l-1}[s, i] = sigma'(z^{l-1}[s, i]) * sum_j W[j, i] delta^l[s, j]
    # (the lecture's delta^l = sigma'(z^l) * (W^{l+1})^T delta^{l+1}, one layer down).
    # The tiles take the samples in the order of `samples` (_sample_order: by label, so that a tile's
    # samples are more often all off together; the order changes no bit of the result).
    # GEMM micro-kernel (AVX-512; 16-register ISAs: _delta_backward_panels): a tile acc of 4
    # samples x T columns (T = 64 float32, 32 float64) is summed over all j in 16 zmm registers:
    # per j, 4 vector loads of the row segment W[j, tile] and 4 broadcast deltas feed 16 vector
    # FMAs, and nothing is stored until the tile is done. Each tile's columns of W are copied into
    # a contiguous panel first (see _delta_backward_tiles). Loops over the tile have the
    # constant trip count T, so that LLVM keeps acc in registers: a last narrower tile is moved left
    # to end at i1 (its overlap is recomputed identically), and when i1 - i0 < T the columns i0:i1
    # of W are copied into a zero-padded T-column buffer (so no column outside i0:i1 is read). A
    # last partial block of samples repeats rows of delta and drops their results. sigma' is
    # applied in one pass over the rows at the end.
    # (the micro-kernel and the tiles give the same bits: each element summed over j in ascending
    # order from zero, one FMA each)
    # (MICRO_DELTA_MIN_ROWS == 0, a comparison of constants, is decided at compile time: on AVX2 the
    # tiles are not compiled at all, which saves a second of compile time)
    # Without the micro-kernel: _delta_backward_tiles (a kernel of its own, called: inlined here it
    # cost a sixth more compile time). A network none of whose W^{l+1} takes the micro-kernel is
    # handed _delta_backward_tiles itself (kernels(dtype, ...)): the same bits, without the
    # micro-kernel's compile time.
    _wide_vectors()
    if MICRO_DELTA_MIN_ROWS == 0 or 0 <= MICRO_DELTA_MIN_ROWS <= delta.shape[1]:
        _delta_backward_micro(W, delta, a_prev, code, from_output, delta_prev, i0, i1, samples)
        return
    _delta_backward_tiles(W, delta, a_prev, code, from_output, delta_prev, i0, i1, samples)


@_inline(fastmath=FAST)
def _tile_sums(acc, src, u, d, rows, cnt, T):
    # The AVX-512 register tile of the delta recursion and the weight gradient: acc[r, :T] =
    # sum_{p < cnt} d[p, r] src[rows[p], u:u + T] for r < 4, each element summed over p in
    # ascending order from zero, one FMA each (T a constant, so that acc stays in registers)
    zero = acc.dtype.type(0)
    a0 = acc[0]
    a1 = acc[1]
    a2 = acc[2]
    a3 = acc[3]
    for i in range(T):
        a0[i] = zero
        a1[i] = zero
        a2[i] = zero
        a3[i] = zero
    for p in range(cnt):
        x = src[rows[p], u:u + T]
        d0 = d[p, 0]
        d1 = d[p, 1]
        d2 = d[p, 2]
        d3 = d[p, 3]
        for i in range(T):
            v = x[i]
            a0[i] += d0 * v
            a1[i] += d1 * v
            a2[i] += d2 * v
            a3[i] += d3 * v


# From this many groups of 4 samples (a call's share) _delta_backward_tiles copies each column
# tile's panel of W into a contiguous buffer (which costs about 2 / groups of the loads and stores
# of summing over it; with fewer groups W is read in place).
DELTA_PACK_MIN_GROUPS = 16


@_jit(fastmath=FAST)
def _delta_tiles_of_panel(src, u, d, rows, kept, delta_prev, samples, c, c1, t):
    # _delta_backward_tiles' tiles of one column tile, columns u:u + T of src (rows j of W: the
    # panel, or W in place), for every group g of 4 samples: acc = sum over its kept j of
    # d[g, p, :] x src[rows[g, p], u:u + T], in registers, stored into delta_prev[samples[4 g + r],
    # c:c1] from column c - t of acc. (A function of its own, called with the panel or with W:
    # a branch between the two around the loop made LLVM spill the accumulators.)
    _wide_vectors()
    n = samples.shape[0]
    one = src.dtype.type(1)
    ptr, T = _register_tile(one)
    acc = carray(ptr, (4, T))
    for g in range(kept.shape[0]):
        s = 4 * g
        _tile_sums(acc, src, u, d[g], rows[g], kept[g], T)
        for r in range(min(4, n - s)):
            o = delta_prev[samples[s + r], c:c1]
            v = acc[r, c - t:c1 - t]
            for i in range(c1 - c):
                o[i] = v[i]


@_inline(fastmath=FAST)
def _delta_zmm_panels(W, d, rows, kept, delta_prev, samples, i0, i1):
    # _delta_backward_tiles' sums with the zmm micro-kernel: per column panel of W (N rows x 384
    # bytes, copied contiguous with zeros past i1), every group g of 4 samples' tile, 4 samples x
    # as many zmm as the panel needs, summed from zero over its kept j (rows of the panel gathered
    # by byte offsets: rows[g, :kept[g]] becomes them) into stage, then stored into
    # delta_prev[samples[4 g + r], c:c1]
    n = samples.shape[0]
    one = W.dtype.type(1)
    groups = kept.shape[0]
    panel, stage = _gather_buffers(W.shape[0], W)
    T = panel.shape[1]
    _offsets_in_panel(rows, kept, groups, panel.strides[0])
    for c in range(i0, i1, T):
        c1 = min(c + T, i1)
        w = c1 - c
        q = _copy_gather_panel(W, c, c1, panel)
        for g in range(groups):
            s = 4 * g
            _gather_zmm_tile(panel, rows, d, g, kept[g], stage, q)
            for r in range(min(4, n - s)):
                # (views that hold no reference: see _data)
                o = carray(_pointer(one, _addr(delta_prev, samples[s + r], c)), w)
                v = carray(_pointer(one, _addr(stage, r, 0)), w)
                for i in range(w):
                    o[i] = v[i]


@intrinsic
def _pack_group_zmm(typingctx, e0, e1, e2, e3, j, dg, rg, k):
    # _pack_sample_groups' loop over 16 columns j:j+16 of the 4 rows e0..e3 at once (float32 on
    # AVX-512 CPUs; any other returns -1 and the caller packs them one by one): the columns with
    # any of the 4 entries nonzero (their magnitude bits) compressed to the front (vcompressps),
    # their 4 entries interleaved into dg[k:], 4 per column, and the columns into rg[k:]; returns
    # how many were kept. It stores all 16 columns' slots (64 floats, 16 int64 from k): the caller
    # keeps j + 16 <= N, so they lie inside the group's buffers, and the slots past the kept ones
    # are written over or never read, as the loop's. (The loop, scalar, took a tenth of the forward
    # gather tile's time at 512 units: each thread packs every sample of its share.)
    vector = (VECTOR_ISA == "avx512" and e0.dtype == types.float32
              and all(a.layout == "C" for a in (e0, e1, e2, e3, dg, rg)))

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        if not vector:
            return ir.Constant(i64, -1)
        i32, f32, i1 = ir.IntType(32), ir.FloatType(), ir.IntType(1)
        v16f, v16i, v16b = ir.VectorType(f32, 16), ir.VectorType(i32, 16), ir.VectorType(i1, 16)
        jj, kk = args[4], args[7]
        vs = []
        for t, a in zip(sig.args[:4], args[:4]):
            ary = context.make_array(t)(context, builder, a)
            ptr = builder.gep(ary.data, [jj])
            vs.append(builder.load(builder.bitcast(ptr, v16f.as_pointer()), align=4))
        bits = [builder.bitcast(v, v16i) for v in vs]
        anyb = builder.or_(builder.or_(bits[0], bits[1]), builder.or_(bits[2], bits[3]))
        mag = builder.and_(anyb, ir.Constant(v16i, [0x7FFFFFFF] * 16))
        mask = builder.icmp_unsigned("!=", mag, ir.Constant(v16i, [0] * 16))
        cf = builder.module.declare_intrinsic("llvm.x86.avx512.mask.compress.v16f32", fnty=ir.FunctionType(
            v16f, [v16f, v16f, v16b]))
        ci = builder.module.declare_intrinsic("llvm.x86.avx512.mask.compress.v16i32", fnty=ir.FunctionType(
            v16i, [v16i, v16i, v16b]))
        zf = ir.Constant(v16f, [0.0] * 16)
        cs = [builder.call(cf, [v, zf, mask]) for v in vs]
        ab = builder.shuffle_vector(cs[0], cs[1], ir.Constant(ir.VectorType(i32, 32), list(range(32))))
        cd = builder.shuffle_vector(cs[2], cs[3], ir.Constant(ir.VectorType(i32, 32), list(range(32))))
        inter = builder.shuffle_vector(ab, cd, ir.Constant(ir.VectorType(i32, 64),
                                                           [(i % 4) * 16 + i // 4 for i in range(64)]))
        dary = context.make_array(sig.args[5])(context, builder, args[5])
        dptr = builder.gep(dary.data, [builder.mul(kk, ir.Constant(i64, 4))])
        builder.store(inter, builder.bitcast(dptr, ir.VectorType(f32, 64).as_pointer()), align=4)
        jv = builder.insert_element(ir.Constant(v16i, ir.Undefined), builder.trunc(jj, i32), ir.Constant(i32, 0))
        jv = builder.shuffle_vector(jv, jv, ir.Constant(v16i, [0] * 16))
        cols = builder.add(jv, ir.Constant(v16i, list(range(16))))
        kept = builder.sext(builder.call(ci, [cols, ir.Constant(v16i, [0] * 16), mask]), ir.VectorType(i64, 16))
        rary = context.make_array(sig.args[6])(context, builder, args[6])
        rptr = builder.gep(rary.data, [kk])
        builder.store(kept, builder.bitcast(rptr, ir.VectorType(i64, 16).as_pointer()), align=8)
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [i64])
        return builder.call(ctpop, [builder.zext(builder.bitcast(mask, ir.IntType(16)), i64)])
    return types.int64(e0, e1, e2, e3, j, dg, rg, k), codegen


@_inline()
def _pack_sample_groups(X, samples):
    # X (n, N) -> (d, rows, kept): the rows of X in groups of 4 in the order `samples` (a last
    # partial group repeats its last sample), each group's columns j with any of its 4 entries
    # nonzero packed: d[g, :kept[g]] their 4 entries (j-major), rows[g, :kept[g]] their j
    n, N = X.shape
    groups = (n + 3) // 4
    d = np.empty((max(groups, 1), max(N, 1), 4), X.dtype)
    rows = np.empty((max(groups, 1), max(N, 1)), np.int64)
    kept = np.zeros(max(groups, 1), np.int64)
    for g in range(groups):
        s = 4 * g
        e0 = X[samples[s]]
        e1 = X[samples[min(s + 1, n - 1)]]
        e2 = X[samples[min(s + 2, n - 1)]]
        e3 = X[samples[min(s + 3, n - 1)]]
        dg = d[g]
        rg = rows[g]
        k = 0
        j0 = 0
        while j0 + 16 <= N:
            c = _pack_group_zmm(e0, e1, e2, e3, j0, dg, rg, k)
            if c < 0:
                break
            k += c
            j0 += 16
        for j in range(j0, N):
            v0 = e0[j]
            v1 = e1[j]
            v2 = e2[j]
            v3 = e3[j]
            # (stored whatever the entries, kept by advancing k: no unpredictable branch)
            dg[k, 0] = v0
            dg[k, 1] = v1
            dg[k, 2] = v2
            dg[k, 3] = v3
            rg[k] = j
            k += (_magnitude_bits(v0) | _magnitude_bits(v1) | _magnitude_bits(v2) | _magnitude_bits(v3)) != 0
        kept[g] = k
    return d, rows, kept


@_jit(fastmath=FAST)
def _delta_backward_tiles(W, delta, a_prev, code, from_output, delta_prev, i0, i1, samples):
    # _delta_backward_cols of a W that does not take the micro-kernel (any W^{l+1} of a network in
    # which none does: see micro_layers), by the register tiles. With the 4-sample tiles, the
    # deltas of each group of 4 samples (4 in a row of `samples`) are packed first (j-major, 4 per
    # j; a last partial group repeats its last sample), leaving out the j whose 4 deltas are all
    # zero (ReLU units off for all 4: a quarter of them in trained layers), each kept j beside
    # them; a left-out j would have added 0 * W[j, i] to a sum that starts at +0 and is never -0,
    # which leaves it as it is. With DELTA_PACK_MIN_GROUPS groups or more on the GATHER_ZMM CPUs,
    # the zmm micro-kernel sums them (_delta_zmm_panels). Else per column tile, with enough groups,
    # its panel of W (N rows x T columns) is copied into a contiguous buffer, which every group
    # reads (_delta_tiles_of_panel): read in place, rows of W a power of two of bytes apart (2048
    # float32: 8 KiB) fall into a sixteenth of L2's sets, and the panel (512 KiB), which fits in
    # L2, was read from L3 again for every group.
    _wide_vectors()
    if TILE_ROWS == 2:
        _delta_backward_panels(W, delta, a_prev, code, from_output, delta_prev, i0, i1)
        return
    n = delta.shape[0]
    groups = (n + 3) // 4
    d, rows, kept = _pack_sample_groups(delta, samples)
    if GATHER_ZMM and groups >= DELTA_PACK_MIN_GROUPS:
        _delta_zmm_panels(W, d, rows, kept, delta_prev, samples, i0, i1)
    else:
        _delta_tile_panels(W, d, rows, kept, delta_prev, samples, i0, i1)
    for s in range(n):
        _scale_by_activation_grad(delta_prev[s, i0:i1], a_prev[s, i0:i1], code, from_output)


@_inline(fastmath=FAST)
def _delta_tile_panels(W, d, rows, kept, delta_prev, samples, i0, i1):
    # _delta_backward_tiles' sums with the 4 x 4 zmm tiles (16-register ISAs: never called), per
    # column tile of W, from a copy of its panel with DELTA_PACK_MIN_GROUPS groups or more, else
    # from W in place (_delta_tiles_of_panel)
    N = W.shape[0]
    groups = kept.shape[0]
    T = TILE_BYTES // W.itemsize
    m = i1 - i0
    if m < T:
        src = _zero_padded_columns(W, i0, m, T)
        off = i0
    else:
        src = W
        off = 0
    pack = groups >= DELTA_PACK_MIN_GROUPS
    panel = _line_aligned_empty(N if pack else 0, T, W.dtype)
    for c in range(i0, i1, T):
        c1 = min(c + T, i1)
        t = max(min(c, i1 - T), off)
        if pack:
            for j in range(N):
                w = src[j, t - off:t - off + T]
                q = panel[j]
                for i in range(T):
                    q[i] = w[i]
            _delta_tiles_of_panel(panel, 0, d, rows, kept, delta_prev, samples, c, c1, t)
        else:
            _delta_tiles_of_panel(src, t - off, d, rows, kept, delta_prev, samples, c, c1, t)


# Bytes of the rows of W that _delta_backward_panels keeps in L1 while it sums over them for
# every pair of samples (16 KiB, half of L1).
L1_BLOCK_BYTES = 16384


@_inline(fastmath=FAST)
def _delta_backward_panels(W, delta, a_prev, code, from_output, delta_prev, i0, i1):
    # _delta_backward_cols with TILE_ROWS == 2 (16-register ISAs): 2 samples x T columns in 12
    # ymm registers (per j: T/8 loads of W[j, tile], 2 broadcasts, T/4 FMAs). The rows j of W are
    # summed in blocks of L1_BLOCK_BYTES, each block for all pairs of samples while it is in L1;
    # between blocks a tile's partial sums wait in buf (n, T) (stored and reloaded exactly, so each
    # element is still summed over j in ascending order from zero, as in the 4-row path).
    n, N = delta.shape
    one = W.dtype.type(1)
    zero = one - one
    buf = np.empty((n + 1, TILE_BYTES // W.itemsize), W.dtype)  # (the tile's width)
    ptr, T = _register_tile(one)
    acc = carray(ptr, (4, T))
    m = i1 - i0
    if m < T:
        src = _zero_padded_columns(W, i0, m, T)
        off = i0
    else:
        src = W
        off = 0
    JB = max(L1_BLOCK_BYTES // (T * W.itemsize), 1)
    a0 = acc[0]
    a1 = acc[1]
    for c in range(i0, i1, T):
        c1 = min(c + T, i1)
        t = max(min(c, i1 - T), off)
        for s in range(n + 1):
            for i in range(T):
                buf[s, i] = zero
        for jb in range(0, N, JB):
            je = min(jb + JB, N)
            Wb = src[jb:je]
            for s in range(0, n, 2):
                e0 = delta[s, jb:je]
                e1 = delta[min(s + 1, n - 1), jb:je]
                p0 = buf[s]
                p1 = buf[s + 1]  # (row n when n is odd: a scratch row)
                for i in range(T):
                    a0[i] = p0[i]
                    a1[i] = p1[i]
                for j in range(je - jb):  # (from 0: no negative-index handling in the loop)
                    w = Wb[j, t - off:t - off + T]
                    d0 = e0[j]
                    d1 = e1[j]
                    for i in range(T):
                        x = w[i]
                        a0[i] += d0 * x
                        a1[i] += d1 * x
                for i in range(T):
                    p0[i] = a0[i]
                    p1[i] = a1[i]
        for s in range(n):
            o = delta_prev[s, c:c1]
            v = buf[s, c - t:c1 - t]
            for i in range(c1 - c):
                o[i] = v[i]
    for s in range(n):
        _scale_by_activation_grad(delta_prev[s, i0:i1], a_prev[s, i0:i1], code, from_output)


@_inline(fastmath=FAST)
def _scale_by_activation_grad(out, x, code, from_output):
    # out *= sigma'(z), from x = a (from_output) or x = z
    one = out.dtype.type(1)
    zero = one - one
    if code == RELU:
        # (sigma' of ReLU written out, from a or z alike: a call per element keeps the loop scalar)
        for i in range(out.shape[0]):
            out[i] *= one if x[i] > 0 else zero
    elif from_output:
        for i in range(out.shape[0]):
            out[i] *= _activation_grad_from_output(x[i], code, one)
    else:
        for i in range(out.shape[0]):
            out[i] *= _activation_grad(x[i], code, one)


# Units among which _group_units chooses each group of 4: aligned blocks, so that a thread's
# share of a layer's units and the blocks of rows the update splits a large share into (multiples
# of UPDATE_SPLIT_ROWS from a share's start) hold whole blocks where they start on a multiple of it.
GROUP_BLOCK = 32


@intrinsic
def _popcount(typingctx, x):
    # the number of set bits of a uint64 (llvm.ctpop: one instruction with POPCNT)
    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@_jit()
def _group_units(delta, order):
    # delta (n, N) of a layer, order (N,) int64: per aligned block of GROUP_BLOCK units, the block's
    # units reordered so that each 4 in a row (a tile of _weight_grad_panels) are often all off
    # (delta 0) for the same samples. Greedy: the lowest unit not yet placed starts a group, then
    # three times the unit off for the most samples on which the group is all off (the lowest of
    # equals) joins it. Any order gives the same gradients; this one leaves out more samples.
    _wide_vectors()
    n, N = delta.shape
    B = GROUP_BLOCK
    words = max((n + 63) // 64, 1)
    off = np.zeros((N, words), np.uint64)
    zero = delta.dtype.type(0)
    for s in range(n):
        row = delta[s]
        shift = np.uint64(s % 64)
        w = s // 64
        for u in range(N):
            # (no branch: whether a ReLU unit is off is a coin toss the branch predictor loses)
            off[u, w] |= np.uint64(row[u] == zero) << shift
    mask = np.empty(words, np.uint64)
    placed = np.zeros(N, np.bool_)
    for b0 in range(0, N, B):
        b1 = min(b0 + B, N)
        p = b0
        for first in range(b0, b1):
            if placed[first]:
                continue
            placed[first] = True
            order[p] = first
            p += 1
            for w in range(words):
                mask[w] = off[first, w]
            for _ in range(3):
                best = -1
                best_count = -1
                for u in range(b0, b1):
                    if placed[u]:
                        continue
                    count = 0
                    for w in range(words):
                        count += _popcount(mask[w] & off[u, w])
                    if np.int64(count) > best_count:
                        best = u
                        best_count = np.int64(count)
                if best < 0:
                    break
                placed[best] = True
                order[p] = best
                p += 1
                for w in range(words):
                    mask[w] &= off[best, w]


def group_units(work, sizes, n):
    """Regroup the units of each hidden layer of work.units (a Workspace's Buffers, for a network of
    layer sizes `sizes`) from the deltas its last minibatch, of n samples, left in work.D
    (_group_units): the next minibatches' weight gradients then leave out more samples of ReLU
    layers. The gradients do not change. Nothing to do where the weight gradient leaves out no
    sample (the AVX2 micro-kernel, TILE_ROWS == 6) or there is no hidden layer."""
    if n <= 0 or TILE_ROWS == 6:
        return
    u0 = sizes[0]
    for l in range(1, len(sizes) - 1):
        N = sizes[l]
        start = work.a_off[l]
        _group_units(work.D[start:start + n * N].reshape(n, N), work.units[u0:u0 + N])
        u0 += N


def compile_group_units(dtype):
    """Compile (or load from the cache) what group_units runs for a network of `dtype`, on 4 units of
    one sample: Trainer.compile, so that a fit compiles nothing more."""
    if TILE_ROWS != 6:
        _group_units(np.zeros((1, 4), dtype), np.arange(4))


@_jit(fastmath=FAST)
def _weight_grad_block(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, W, lr, wd, fused):
    # delta (n, N), a_prev (n, M), dW (N, M), db (N,): for rows j0 <= j < j1, columns c0 <= i < c1
    # dW[j, i] (+)= sum_s delta[s, j] a_prev[s, i], and with with_bias db[j] (+)= sum_s delta[s, j]
    # (the lecture's dC/dw_ij = a_j^{l-1} delta_i^l summed over the minibatch).
    # order (N,) int64: the rows grouped 4 at a time, each aligned block of GROUP_BLOCK entries a
    # permutation of its rows (_group_units; np.arange(N) keeps them in place). It decides only
    # which rows share a tile, and so which samples a tile leaves out: not the results.
    # fused (AVX-512 tiles only: TILE_ROWS == 4): instead of storing dW, each tile takes plain SGD's
    # step on its elements of W (N, M), W -= lr (dW (+ wd W)) (_sgd_tile: _update_range's
    # roundings), while the tile is in registers and the rows of W in L1, and dW is not written:
    # at 784-2048-2048-10 the stores of dW and the update's pass over W and dW moved 70 MB a step
    # through memory (a tenth of the step), and the caller skips that pass. lr, wd: float64, as in
    # hp; W, lr and wd are not read unless fused.
    # GEMM micro-kernel like _delta_backward_cols (_weight_grad_panels; AVX2 + FMA:
    # _weight_grad_micro). AVX-512: a tile acc of 4 rows x T columns (T = 64
    # float32, 32 float64) is summed over the samples in 16 zmm registers (per sample: 4 vector
    # loads of a_prev[s, tile], 4 broadcast deltas, 16 FMAs), then stored into dW, or added to it,
    # once. First, per group of 4 rows, one pass over delta sums db and packs the 4 deltas of each
    # sample into d[g] (contiguous), leaving out samples whose 4 deltas are all zero (ReLU units off
    # for that sample); rows[g, p] is packed entry p's sample. Then per column panel of a_prev (all
    # samples x T columns, copied into a contiguous buffer: in L1 or L2) every group's tile, so
    # that a_prev is read from memory once per call, not once per group of rows (512 samples of 784
    # float32 inputs are 1.6 MB, more than L2). (Read in place, rows of a_prev a power of two of
    # bytes apart, 2048 float32, share a sixteenth of L2's sets, and the panel was read from L3
    # again for every group.) A panel of at most 3/4 of T columns (the last) takes a tile of as
    # many vectors per
    # row as it needs (_weight_grad_tile_narrow). A tile that would end past M is moved left to end
    # at M (it may start left of c0: a_prev is only read, and only columns c0:c1 of the tile are
    # stored); when M < T, a_prev is copied into a zero-padded T-column buffer. A last partial
    # group repeats row j1 - 1 and drops its results.
    # Every element is summed over s in ascending order, whatever the split of rows or columns.
    # LLVM keeps acc in registers only with this exact shape: heap buffers allocated before the
    # tile, no branch in the sample loop, and the store as one loop with a select (an
    # `if accumulate:` around two store loops made it store acc to the stack on every sample).
    _wide_vectors()
    if TILE_ROWS == 6:
        _weight_grad_micro(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias)
        return
    if GATHER_ZMM:
        _weight_grad_zmm(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, W, lr, wd, fused)
        return
    _weight_grad_panels(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, W, lr, wd, fused)


@_inline(fastmath=FAST)
def _pack_row_group(delta, db, d, rows, sel, i, r, accumulate, with_bias, unit):
    # For the r <= 4 rows sel[i:i+r] (a partial group repeats row sel[i+r-1]): db (+)= sum_s
    # delta[s, row] (with_bias), and the 4 deltas of each sample with any of them nonzero packed
    # into d[cnt, :], its sample times unit into rows[cnt] (1: the sample; a panel's row bytes:
    # the offset of its row there); returns cnt
    n = delta.shape[0]
    zero = d.dtype.type(0)
    q0 = sel[i]
    q1 = sel[i + min(1, r - 1)]
    q2 = sel[i + min(2, r - 1)]
    q3 = sel[i + min(3, r - 1)]
    b0 = db[q0] if accumulate else zero
    b1 = db[q1] if accumulate else zero
    b2 = db[q2] if accumulate else zero
    b3 = db[q3] if accumulate else zero
    cnt = 0
    for s in range(n):
        e = delta[s]
        d0 = e[q0]
        d1 = e[q1]
        d2 = e[q2]
        d3 = e[q3]
        b0 += d0
        b1 += d1
        b2 += d2
        b3 += d3
        # (stored whatever the deltas, and kept by advancing cnt: behind a branch, which is
        # unpredictable on ReLU deltas, the loads of the samples' rows, far apart in delta when
        # it is wide, ran one at a time and the pass waited on memory)
        d[cnt, 0] = d0
        d[cnt, 1] = d1
        d[cnt, 2] = d2
        d[cnt, 3] = d3
        rows[cnt] = s * unit
        cnt += (_magnitude_bits(d0) | _magnitude_bits(d1) | _magnitude_bits(d2) | _magnitude_bits(d3)) != 0
    if with_bias:
        db[q3] = b3  # (a repeated row gets the same value twice)
        db[q2] = b2
        db[q1] = b1
        db[q0] = b0
    return cnt


@_inline(fastmath=FAST)
def _packed_row_groups(delta, db, j0, j1, order, accumulate, with_bias, unit):
    # -> (groups, d, rows, cnts, sel): the rows j0:j1 in order's order (sel), 4 at a time, each
    # group's deltas packed by _pack_row_group into d[g, :cnts[g]] and their samples times unit
    # into rows[g] (db summed on the way)
    n = delta.shape[0]
    groups = (j1 - j0 + 3) // 4
    d = np.empty((max(groups, 1), n, 4), delta.dtype)
    rows = np.empty((max(groups, 1), n), np.int64)
    cnts = np.empty(max(groups, 1), np.int64)
    sel = np.empty(max(j1 - j0, 1), np.int64)
    _ordered_rows(order, j0, j1, sel)
    for g in range(groups):
        cnts[g] = _pack_row_group(delta, db, d[g], rows[g], sel, 4 * g, min(4, j1 - j0 - 4 * g), accumulate,
                                  with_bias, unit)
    return groups, d, rows, cnts, sel


@_inline()
def _ordered_rows(order, j0, j1, sel):
    # sel[:j1 - j0] = the rows j0:j1 in order's order (order: each aligned block of GROUP_BLOCK
    # entries a permutation of its rows, so j0:j1's rows are all in the blocks that overlap it)
    B = GROUP_BLOCK
    k = 0
    for p in range(j0 // B * B, min(order.shape[0], (j1 + B - 1) // B * B)):
        u = order[p]
        if u >= j0 and u < j1:
            sel[k] = u
            k += 1


@_inline(fastmath=FAST)
def _weight_grad_panels(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, W, lr, wd, fused):
    # _weight_grad_block with TILE_ROWS == 4 (AVX-512) or 2 (16-register ISAs). All groups of 4 rows
    # are packed first; then per column panel (all samples x T columns of a_prev: in L1 up to ~128
    # samples, else in L2) every group's tile is summed: four rows at once (_weight_grad_tile_4rows)
    # or two at a time (a 2 x T tile: 2 broadcasts, T/8 loads, T/4 FMAs per sample). The panel is
    # read from memory once instead of once per group. Same sums in the same order either way:
    # each element over the packed samples, ascending. The groups are the rows j0:j1 4 at a time
    # in order's order: units of a ReLU layer chosen to be off for the same samples (_group_units)
    # leave out about three times as many samples as 4 neighbouring rows do. A sample left out of
    # a row adds delta * a = 0 to it, so the grouping changes no bit of the results.
    n, M = a_prev.shape
    one = dW.dtype.type(1)
    groups, d, rows, cnts, sel = _packed_row_groups(delta, db, j0, j1, order, accumulate, with_bias, 1)
    lrd, wdd = dW.dtype.type(lr), dW.dtype.type(wd)
    size, ld = W.itemsize, W.strides[0]
    ptr, T = _register_tile(one)
    acc = carray(ptr, (4, T))
    stage = _line_aligned_empty(4, T, dW.dtype)  # (fused: a tile's gradient on its way to _sgd_tile)
    if M < T:
        src = _zero_padded_columns(a_prev, 0, M, T)
    else:
        src = a_prev
    last = src.shape[1] - T
    panel = _line_aligned_empty(n, T, dW.dtype)
    for c in range(c0, c1, T):
        e1 = min(c + T, c1)
        t = min(c, last)
        for s in range(n):
            x = src[s, t:t + T]
            q = panel[s]
            for i in range(T):
                q[i] = x[i]
        for g in range(groups):
            r = min(4, j1 - j0 - 4 * g)
            if TILE_ROWS == 4:
                if fused and g + 1 < groups:
                    # (the next tile's rows of W, far apart, requested while this one is summed)
                    rn = min(4, j1 - j0 - 4 * g - 4)
                    _prefetch_tile(_data(W) + c * size, _tile_offsets(sel, 4 * g + 4, rn, ld), rn, (e1 - c) * size)
                if e1 - c <= 3 * T // 4:
                    # a last panel of at most 3 of the tile's 4 vectors per row (784 columns: 12
                    # panels of 64, then 16, which a whole tile summed four times over)
                    _weight_grad_tile_narrow(panel, t, d[g], rows[g], cnts[g], dW, sel, 4 * g, r, c, e1, accumulate,
                                             stage, fused)
                else:
                    _weight_grad_tile_4rows(panel, t, d[g], rows[g], cnts[g], dW, acc, sel, 4 * g, r, c, e1, t,
                                            accumulate, stage, fused, T)
                if fused:
                    _sgd_tile(one, _data(W) + c * size, _tile_offsets(sel, 4 * g, r, ld), r, _data(stage),
                              stage.strides[0], e1 - c, lrd, wdd)
            else:
                _weight_grad_tile_2rows(src, d[g], rows[g], cnts[g], dW, acc, sel, 4 * g, r, c, e1, t, accumulate)


@_inline(fastmath=FAST)
def _weight_grad_zmm(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, W, lr, wd, fused):
    # _weight_grad_panels with the zmm micro-kernel (GATHER_ZMM): the same groups of 4 rows in
    # order's order, the same packed deltas and samples left out (_pack_row_group), each group's
    # kept samples as byte offsets of their rows in the panel. Per column panel (all samples x
    # 384 bytes of a_prev, copied contiguous with zeros past c1: L1 holds it up to 128 samples)
    # every group's tile of 4 rows x as many zmm as the panel's columns need, summed from zero into
    # stage (_micro_zmm: each element over the kept samples in ascending order, one FMA each, as
    # _tile_sums), then stored into dW, or added to it, or (fused) plain SGD's step on W from it.
    zero = dW.dtype.type(0)
    panel, stage = _gather_buffers(a_prev.shape[0], dW)
    T = panel.shape[1]
    # (each kept sample as the byte offset of its row in the panel)
    groups, d, rows, cnts, sel = _packed_row_groups(delta, db, j0, j1, order, accumulate, with_bias, panel.strides[0])
    lrd, wdd = dW.dtype.type(lr), dW.dtype.type(wd)
    size, ld = W.itemsize, W.strides[0]
    for c in range(c0, c1, T):
        e1 = min(c + T, c1)
        w = e1 - c
        q = _copy_gather_panel(a_prev, c, e1, panel)
        for g in range(groups):
            r = min(4, j1 - j0 - 4 * g)
            if fused and g + 1 < groups:
                # (the next tile's rows of W, far apart, requested while this one is summed)
                rn = min(4, j1 - j0 - 4 * g - 4)
                _prefetch_tile(_data(W) + c * size, _tile_offsets(sel, 4 * g + 4, rn, ld), rn, (e1 - c) * size)
            _gather_zmm_tile(panel, rows, d, g, cnts[g], stage, q)
            if fused:
                _sgd_tile(zero, _data(W) + c * size, _tile_offsets(sel, 4 * g, r, ld), r, _data(stage),
                          stage.strides[0], w, lrd, wdd)
            else:
                for k in range(r):
                    # (views that hold no reference: see _data)
                    gk = carray(_pointer(zero, _addr(dW, sel[4 * g + k], c)), w)
                    v = carray(_pointer(zero, _addr(stage, k, 0)), w)
                    for i in range(w):
                        gk[i] = (gk[i] if accumulate else zero) + v[i]


@_inline()
def _gather_buffers(rows, like):
    # -> (panel, stage): a GATHER_ZMM panel of `rows` rows x 384 bytes and the tile's 4-row staging
    # buffer, both line-aligned, of like's dtype (an array)
    T = 64 * GATHER_ZMM_VECTORS // like.itemsize
    return _line_aligned_empty(max(rows, 1), T, like.dtype), _line_aligned_empty(4, T, like.dtype)


@_inline()
def _offsets_in_panel(rows, counts, groups, row_bytes):
    # rows[g, :counts[g]] (rows of a GATHER_ZMM panel) -> their byte offsets in it, g < groups
    for g in range(groups):
        r = rows[g]
        for p in range(counts[g]):
            r[p] *= row_bytes


@_inline(fastmath=FAST)
def _copy_gather_panel(X, c, e, panel):
    # panel[r, :] = X[r, c:e] followed by zeros up to a whole zmm vector, r < X.shape[0]; -> the
    # vectors a row (the GATHER_ZMM tile's q)
    lanes = 64 // X.itemsize
    w = e - c
    q = (w + lanes - 1) // lanes
    zero = panel.dtype.type(0)
    for r in range(X.shape[0]):
        x = X[r, c:e]
        y = panel[r]
        for i in range(w):
            y[i] = x[i]
        for i in range(w, q * lanes):
            y[i] = zero
    return q


@_inline()
def _gather_zmm_tile(panel, rows, d, g, k, stage, q):
    # stage[r, :q vectors] = sum_{p < k} d[g, p, r] panel's row at byte offset rows[g, p], r < 4,
    # summed from zero: the GATHER_ZMM tile of q <= GATHER_ZMM_VECTORS vectors a row (by addresses,
    # not the slices d[g] and rows[g], which would take references: see _data)
    a = (panel.dtype.type(1), np.int64(k), _data(panel), _data(rows) + g * rows.strides[0],
         _data(d) + g * d.strides[0], np.int64(panel.itemsize), np.int64(d.strides[1]), _data(stage),
         np.int64(stage.strides[0]), np.int64(1))
    if q == 6:
        _gather_zmm6(*a)
    elif q == 5:
        _gather_zmm5(*a)
    elif q == 4:
        _gather_zmm4(*a)
    elif q == 3:
        _gather_zmm3(*a)
    elif q == 2:
        _gather_zmm2(*a)
    else:
        _gather_zmm1(*a)


@_inline(fastmath=FAST)
def _weight_grad_tile_4rows(src, o, d, rows, cnt, dW, acc, sel, i0, r, c, e1, t, accumulate, stage, fused, T):
    # _weight_grad_block's tile with TILE_ROWS == 4: the group's rows sel[i0:i0+r] summed over the
    # packed samples in the first T columns of acc's 4 rows at once (T a constant: columns t:t + T
    # of src), stored into dW or (fused) into stage[:r, :e1 - c]
    zero = acc.dtype.type(0)
    _tile_sums(acc, src, t - o, d, rows, cnt, T)
    for k in range(r):
        # (one store loop for both destinations: two loops behind a branch made LLVM keep acc on
        # the stack)
        g = stage[k, :e1 - c] if fused else dW[sel[i0 + k], c:e1]
        v = acc[k, c - t:e1 - t]
        for i in range(e1 - c):
            g[i] = (g[i] if accumulate else zero) + v[i]


@_jit(fastmath=FAST)
def _weight_grad_tile_narrow(src, o, d, rows, cnt, dW, sel, i0, r, c, e1, accumulate, stage, fused):
    # _weight_grad_tile_4rows for columns c:e1 of at most 3/4 of a tile: as many vectors per row as
    # they need, the tile moved left to end at e1 when src ends there. Same sums in the same order.
    # (A function of its own, and a buffer per width: inlined into the panel loop, or sharing one
    # buffer, the tiles' accumulators no longer stayed in registers.)
    _wide_vectors()
    one = dW.dtype.type(1)
    ptr, T = _register_tile(one)
    Q = T // 4
    q = (e1 - c + Q - 1) // Q
    t = min(c, o + src.shape[1] - q * Q)
    if q == 1:
        acc = carray(ptr, (4, T))
        _weight_grad_tile_4rows(src, o, d, rows, cnt, dW, acc, sel, i0, r, c, e1, t, accumulate, stage, fused, Q)
    elif q == 2:
        ptr2, _ = _register_tile(one)
        acc = carray(ptr2, (4, T))
        _weight_grad_tile_4rows(src, o, d, rows, cnt, dW, acc, sel, i0, r, c, e1, t, accumulate, stage, fused, 2 * Q)
    else:
        ptr3, _ = _register_tile(one)
        acc = carray(ptr3, (4, T))
        _weight_grad_tile_4rows(src, o, d, rows, cnt, dW, acc, sel, i0, r, c, e1, t, accumulate, stage, fused, 3 * Q)


@intrinsic
def _sgd_row(typingctx, like, p, g, w, lr, wd):
    # P[i] -= lr (G[i] (+ wd P[i])), i < w, for the w elements of like's dtype at addresses p (a row
    # segment of W) and g (of a tile's gradient); the wd term only when wd != 0. _update_range's
    # plain SGD step with its roundings: every product rounded before it is added (zmm vectors,
    # then element by element).
    lanes = 512 // like.bitwidth
    size = like.bitwidth // 8

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ft = context.get_value_type(like)
        vt = ir.VectorType(ft, lanes)
        p, g, w, lr, wd = args[1:]
        nv = builder.sdiv(w, ir.Constant(i64, lanes))

        def splat(x):
            v = ir.Constant(vt, ir.Undefined)
            for i in range(lanes):
                v = builder.insert_element(v, x, ir.Constant(ir.IntType(32), i))
            return v

        def rounded(v):
            # v as an opaque value (an empty asm): the caller's fast-math flags, which Numba puts on
            # every floating-point instruction of the function, cannot fuse its product into an FMA
            return builder.asm(ir.FunctionType(v.type, [v.type]), "", "=v,0", [v], False)

        def step(at_p, at_g, lr_, wd_, decay):
            x = builder.load(at_p, align=size)
            y = builder.load(at_g, align=size)
            if decay:
                y = builder.fadd(y, rounded(builder.fmul(wd_, x)))
            builder.store(builder.fsub(x, rounded(builder.fmul(lr_, y))), at_p, align=size)

        def at(base, i, ty):
            addr = builder.add(base, builder.mul(i, ir.Constant(i64, size)))
            return builder.inttoptr(addr, ty.as_pointer())

        def loops(decay):
            lr_v, wd_v = splat(lr), splat(wd)
            with cgutils.for_range(builder, nv) as loop:
                i = builder.mul(loop.index, ir.Constant(i64, lanes))
                step(at(p, i, vt), at(g, i, vt), lr_v, wd_v, decay)
            with cgutils.for_range_slice(builder, builder.mul(nv, ir.Constant(i64, lanes)), w,
                                         ir.Constant(i64, 1), inc=True) as (i, _):
                step(at(p, i, ft), at(g, i, ft), lr, wd, decay)

        with builder.if_else(builder.fcmp_ordered("==", wd, ir.Constant(ft, 0.0))) as (plain, decayed):
            with plain:
                loops(False)
            with decayed:
                loops(True)
        return context.get_dummy_value()
    return types.none(like, types.int64, types.int64, types.int64, like, like), codegen


@_inline()
def _tile_offsets(sel, i0, r, row_bytes):
    # the byte offsets of rows sel[i0:i0 + r], r <= 4, as a 4-tuple (a partial group repeats its
    # last row)
    return (sel[i0] * row_bytes, sel[i0 + min(1, r - 1)] * row_bytes, sel[i0 + min(2, r - 1)] * row_bytes,
            sel[i0 + min(3, r - 1)] * row_bytes)


@_inline()
def _sgd_tile(like, w_at, offsets, r, g_at, g_step, w, lr, wd):
    # the w elements of like's dtype at w_at + offsets[k] (a row segment of W) -= lr (the tile's
    # gradient at g_at + k g_step (+ wd W)), k < r (addresses and offsets in bytes: no array
    # arguments, which an inlined function takes references to, see _data): _update_range's
    # plain SGD step on a tile of W, with the same roundings (_sgd_row: no fused multiply-add, so
    # the weights are the bits the separate pass gives)
    for k in range(r):
        _sgd_row(like, w_at + offsets[k], g_at + k * g_step, w, lr, wd)


@_inline(fastmath=FAST)
def _weight_grad_tile_2rows(src, d, rows, cnt, dW, acc, sel, i0, r, c, e1, t, accumulate):
    # _weight_grad_block's tile with TILE_ROWS == 2: the group's rows sel[i0:i0+r] two at a time, each
    # pair summed over the packed samples in acc rows 0 and 1 (same samples, same order)
    zero = acc.dtype.type(0)
    T = acc.shape[1]
    a0 = acc[0]
    a1 = acc[1]
    for h in range(0, r, 2):
        for i in range(T):
            a0[i] = zero
            a1[i] = zero
        for p in range(cnt):
            x = src[rows[p], t:t + T]
            d0 = d[p, h]
            d1 = d[p, h + 1]
            for i in range(T):
                u = x[i]
                a0[i] += d0 * u
                a1[i] += d1 * u
        for k in range(min(2, r - h)):
            g = dW[sel[i0 + h + k], c:e1]
            v = acc[k, c - t:e1 - t]
            for i in range(e1 - c):
                g[i] = (g[i] if accumulate else zero) + v[i]


@_jit(parallel=True, fastmath=FAST)
def _accumulate_gradients(delta, a_prev, dW, db, nthreads):
    # delta (n, N), a_prev (n, M), dW (N, M), db (N,): dW += delta^T a_prev, db += sum_s delta
    n, M = a_prev.shape
    N = dW.shape[0]
    T = _region_threads(n * N * M, nthreads)
    # (0 and True computed, not literals: a Literal[int] or Literal[bool] argument would compile
    # _weight_grad_block again, besides the training kernel's signature)
    yes = M >= 0
    if T == 1:
        j0, j1 = _chunk(N, T - 1, T)
        _weight_grad_block(delta, a_prev, dW, db, j0, j1, M - M, M, yes, yes, np.arange(N), dW, 0.0, 0.0, M < 0)
    else:
        order = np.arange(N)
        for t in prange(T):
            j0, j1 = _chunk(N, np.int64(t), T)
            _weight_grad_block(delta, a_prev, dW, db, j0, j1, M - M, M, yes, yes, order, dW, 0.0, 0.0, M < 0)


@_jit(parallel=True, fastmath=FAST)
def _delta_backward(W_next, delta_next, z, code, delta, nthreads):
    # W_next (N, M), delta_next (n, N), z (n, M) -> delta (n, M) = sigma'(z) * delta_next W_next
    n, N = delta_next.shape
    M = W_next.shape[1]
    T = _region_threads(n * N * M, nthreads)
    no = M < 0  # computed, not a literal False (see _accumulate_gradients)
    samples = np.arange(n)
    if T == 1:
        i0, i1 = _chunk_aligned(M, T - 1, T)
        _delta_backward_cols(W_next, delta_next, z, code, no, delta, i0, i1, samples)
    else:
        for t in prange(T):
            i0, i1 = _chunk_aligned(M, np.int64(t), T)
            _delta_backward_cols(W_next, delta_next, z, code, no, delta, i0, i1, samples)


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------

# MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6) bits (x86 only)
_MXCSR_FTZ_DAZ = 0x8040


def _mxcsr_intrinsics():
    # -> (_flush_subnormals, _restore_mxcsr): set FTZ and DAZ in the calling thread's MXCSR,
    # returning its old value (int64; 0 off x86, where both do nothing), and put that value back.
    # For the optimizers that keep state: a moment whose gradient is zero step after step (an input
    # pixel that is 0 in every sample, a unit that is off) decays geometrically into subnormal
    # floats, and on Intel cores every vector instruction that reads or makes one takes a microcode
    # assist of about a hundred cycles: on Fashion-MNIST, momentum and Adam trained at about half
    # of plain SGD's speed (benchmarks/RESULTS.md). With both bits set such values are zero: terms
    # under 1.2e-38 (float32) that no weight of a normal size can register. XLA's CPU runtime runs
    # with the same bits set. (Plain SGD keeps no state, and keeps IEEE arithmetic: the fused
    # tiles' bits, _sgd_tile.)
    x86 = llvm.get_process_triple().startswith(("x86_64", "i386", "i686"))

    def call(builder, name, slot):
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p]), name)
        builder.call(fn, [builder.bitcast(slot, i8p)])

    @intrinsic
    def flush(typingctx):
        def codegen(context, builder, sig, args):
            i32 = ir.IntType(32)
            if not x86:
                return ir.Constant(ir.IntType(64), 0)
            slot = cgutils.alloca_once(builder, i32)
            call(builder, "llvm.x86.sse.stmxcsr", slot)
            old = builder.load(slot)
            builder.store(builder.or_(old, ir.Constant(i32, _MXCSR_FTZ_DAZ)), slot)
            call(builder, "llvm.x86.sse.ldmxcsr", slot)
            return builder.zext(old, ir.IntType(64))
        return types.int64(), codegen

    @intrinsic
    def restore(typingctx, old):
        def codegen(context, builder, sig, args):
            if x86:
                i32 = ir.IntType(32)
                slot = cgutils.alloca_once(builder, i32)
                builder.store(builder.trunc(args[0], i32), slot)
                call(builder, "llvm.x86.sse.ldmxcsr", slot)
            return context.get_dummy_value()
        return types.none(types.int64), codegen

    return flush, restore


_flush_subnormals, _restore_mxcsr = _mxcsr_intrinsics()

# error_model="numpy": the default ("python") guards every division against zero, and that
# branch keeps LLVM from vectorising Adam's loop (eps > 0, so the divisor is never zero anyway).
# No fastmath: each element's update must round the same whichever thread's range holds it. With
# contraction and reassociation allowed, Adam's float64 step, inlined into the training kernel on an
# AVX-512 CPU, rounded a few elements differently on one thread and on two (tests/test_driver.py and
# tests/test_pacer.py caught it). The loop is elementwise: it vectorises without those flags.
@_jit(error_model="numpy")
def _update_range(params, grads, m, v, p0, p1, optimizer, hp, step, rows, stride):
    # params, grads, m, v flat (P,): one optimizer step on params[p0 + r stride:p1 + r stride] for
    # r < rows (a block of columns of a row-major matrix in one call: called per row, the driver's
    # step on a thread's columns of W^{l+1} cost a call per row), PyTorch's semantics:
    #   sgd:      p -= lr (g + wd p)
    #   momentum: v = mu v + (g + wd p);  p -= lr v
    #   nesterov: v = mu v + g';  p -= lr (g' + mu v),  g' = g + wd p
    #   adam:     m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;
    #             p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps),  g' = g + wd p
    # all but sgd with subnormal inputs and results taken as zero (_flush_subnormals)
    # (Loops over slices from 0, so that Numba drops negative-index handling and LLVM vectorises.)
    _wide_vectors()
    if optimizer == GRADIENT_ONLY:
        return
    stateful = optimizer != SGD
    mxcsr = _flush_subnormals() if stateful else 0
    dt = params.dtype.type
    lr = dt(hp[HP_LR])
    wd = dt(hp[HP_WEIGHT_DECAY])
    count = p1 - p0
    mu = dt(hp[HP_MOMENTUM])
    beta1 = hp[HP_BETA1]
    beta2 = hp[HP_BETA2]
    b1 = dt(beta1)
    b2 = dt(beta2)
    one = dt(1)
    eps = dt(hp[HP_EPS])
    step_size = dt(hp[HP_LR] / (1.0 - beta1 ** step)) if optimizer == ADAM else one
    inv_sqrt_bc2 = dt(1.0 / math.sqrt(1.0 - beta2 ** step)) if optimizer == ADAM else one
    for r in range(rows):
        q0 = p0 + r * stride
        P = params[q0:q0 + count]
        G = grads[q0:q0 + count]
        if optimizer == SGD:
            if hp[HP_WEIGHT_DECAY] == 0.0:
                for p in range(count):
                    P[p] -= lr * G[p]
            else:
                for p in range(count):
                    P[p] -= lr * (G[p] + wd * P[p])
        elif optimizer == MOMENTUM:
            V = v[q0:q0 + count]
            for p in range(count):
                V[p] = mu * V[p] + (G[p] + wd * P[p])
                P[p] -= lr * V[p]
        elif optimizer == NESTEROV:
            V = v[q0:q0 + count]
            for p in range(count):
                g = G[p] + wd * P[p]
                V[p] = mu * V[p] + g
                P[p] -= lr * (g + mu * V[p])
        else:
            Mm = m[q0:q0 + count]
            V = v[q0:q0 + count]
            for p in range(count):
                g = G[p] + wd * P[p]
                Mm[p] = b1 * Mm[p] + (one - b1) * g
                V[p] = b2 * V[p] + (one - b2) * g * g
                P[p] -= step_size * Mm[p] / (np.sqrt(V[p]) * inv_sqrt_bc2 + eps)
    if stateful:
        _restore_mxcsr(mxcsr)


@_jit(parallel=True, fastmath=FAST)
def _update_all(params, grads, m, v, w_off, b_off, sizes, optimizer, hp, step, nthreads):
    # params, grads, m, v flat (P,): the optimizer step on every parameter (_update_range), the
    # weights of each layer with hp[:HP_SIZE] and its biases with hp[HP_SIZE:], each range split into
    # blocks of whole cache lines over threads. Elementwise, so the result does not depend on the
    # split: equal to the step fused into _drive's backward phases.
    L = sizes.shape[0] - 1
    T = _region_threads(16 * params.shape[0], nthreads)
    for t in prange(T):
        tt = np.int64(t)
        for l in range(1, L + 1):
            p0, p1 = _chunk_aligned(sizes[l] * sizes[l - 1], tt, T)
            _update_range(params, grads, m, v, w_off[l] + p0, w_off[l] + p1, optimizer, hp, step, 1, 0)
            q0, q1 = _chunk_aligned(sizes[l], tt, T)
            _update_range(params, grads, m, v, b_off[l] + q0, b_off[l] + q1, optimizer, hp[HP_SIZE:], step, 1,
                          0)


@_inline()
def _update_layer_rows(update, params, grads, m, v, w_off, b_off, sizes, l, j0, j1, optimizer, hp, step):
    # the optimizer step on rows j0:j1 of W^l and b^l (update: _update_range or a pointer to it)
    M = sizes[l - 1]
    update(params, grads, m, v, w_off[l] + j0 * M, w_off[l] + j1 * M, optimizer, hp, step, 1, 0)
    update(params, grads, m, v, b_off[l] + j0, b_off[l] + j1, optimizer, hp[HP_SIZE:], step, 1, 0)


# ---------------------------------------------------------------------------------------------
# The network: forward, backward (+ fused update), and the minibatch training loop
# ---------------------------------------------------------------------------------------------

@intrinsic
def _view2d(typingctx, buf, start, rows, cols):
    # buf (K,) C-contiguous, start, rows, cols integers -> buf[start:start + rows * cols] as a
    # (rows, cols) C-contiguous view (a new reference to buf's memory). What .reshape of the slice
    # gives, without its checks, which cannot fail here and which compile into a call of their own
    # and its error paths at every use.
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        return None
    ret = types.Array(buf.dtype, 2, "C", readonly=not buf.mutable, aligned=buf.aligned)

    def codegen(context, builder, sig, args):
        from numba.core.imputils import impl_ret_borrowed
        from numba.np.arrayobj import populate_array
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(ret)(context, builder)
        i0, r, c = (context.cast(builder, a, t, types.intp) for a, t in zip(args[1:], sig.args[1:]))
        size = src.itemsize
        populate_array(out, data=builder.gep(src.data, [i0]), shape=[r, c], strides=[builder.mul(c, size), size],
                       itemsize=size, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, ret, out._getvalue())
    return ret(buf, start, rows, cols), codegen


@_jit()
def _weights(params, w_off, sizes, l):
    # W^l (N_l, N_{l-1}), a view of the flat parameters
    return _view2d(params, w_off[l], sizes[l], sizes[l - 1])


@_jit()
def _biases(params, b_off, sizes, l):
    return params[b_off[l]:b_off[l] + sizes[l]]


@_jit()
def _units(units, sizes, l):
    # layer l's N_l entries of a Workspace's units (N_0 + ... + N_L, layer after layer)
    start = 0
    for i in range(l):
        start += sizes[i]
    return units[start:start + sizes[l]]


@_jit()
def _rows(buf, a_off, sizes, l, n):
    # layer l's (n, N_l) block of a flat per-batch workspace
    return _view2d(buf, a_off[l], n, sizes[l])


@_jit()
def _gather_range(X, xcode, idx, divisor, out, s0, s1):
    # X (N, M * itemsize) uint8: the bytes of the data set's rows, whose values are uint8, float32
    # or float64 by xcode (INPUT_CODES), so that one compiled kernel reads every input dtype;
    # idx (n,), out (n, M) float: out[s] = X[idx[s]] / divisor for s0 <= s < s1. No fastmath: the
    # division must round exactly like NumPy's X / 255 (the float32 quotient of a byte by 255
    # equals NumPy's float64 quotient rounded to float32 for all 256 values, checked
    # exhaustively), and vector division of 16 float32 lanes is faster here than a float64
    # multiply by 1/255 (8.2 against 5.3 G elements/s on one core).
    _wide_vectors()
    M = out.shape[1]
    dt = out.dtype.type
    div = dt(divisor)
    for s in range(s0, min(s0 + GATHER_AHEAD, s1)):
        _prefetch_row(X[idx[s]], 64)
    for s in range(s0, s1):
        if s + GATHER_AHEAD < s1:
            _prefetch_row(X[idx[s + GATHER_AHEAD]], 64)
        dst = out[s]
        if xcode == INPUT_FLOAT32:
            src32 = X[idx[s]].view(np.float32)
            for k in range(M):
                dst[k] = dt(src32[k]) / div
        elif xcode == INPUT_FLOAT64:
            src64 = X[idx[s]].view(np.float64)
            for k in range(M):
                dst[k] = dt(src64[k]) / div
        else:
            src = X[idx[s]]
            for k in range(M):
                dst[k] = dt(src[k]) / div


@_inline()
def _prefetch_tile(w_at, offsets, r, nbytes):
    # the nbytes at w_at + offsets[k], k < r: the rows of W that the next tile steps, far apart,
    # requested while the tile before them is summed (by address: see _data)
    for k in range(r):
        for i in range(0, nbytes, 64):
            _prefetch_address(w_at + offsets[k] + i)


@_inline()
def _prefetch_row(row, line):
    # row: bytes; one hint per cache line of `line` bytes
    for k in range(0, row.shape[0], line):
        _prefetch(row, k)


def _emit_prefetch(builder, ptr):
    # llvm.prefetch (read, high locality, data) of the cache line that holds ptr
    i8p = ir.IntType(8).as_pointer()
    fn = builder.module.declare_intrinsic("llvm.prefetch", fnty=ir.FunctionType(
        ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)]))
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(ir.IntType(32), 0),
                      ir.Constant(ir.IntType(32), 3), ir.Constant(ir.IntType(32), 1)])


@intrinsic
def _prefetch_address(typingctx, addr):
    # _prefetch of the cache line at address addr (an integer)
    def codegen(context, builder, sig, args):
        _emit_prefetch(builder, builder.inttoptr(args[0], ir.IntType(8).as_pointer()))
        return context.get_dummy_value()
    return types.none(addr), codegen


@intrinsic
def _prefetch(typingctx, arr, i):
    # a hint to the CPU to load the cache line of arr[i] (1-D, contiguous): the gather's rows are
    # random rows of a data set in main memory, and without it each row waits for its loads
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        _emit_prefetch(builder, builder.gep(ary.data, [args[1]]))
        return context.get_dummy_value()
    return types.none(arr, i), codegen


# Atomic operations on elements of an int64 array, for the driver's threads to claim work units and
# wait for each other (sequentially consistent: what a thread wrote before it counts a unit done is
# seen by every thread that sees the count).

def _int64_ptr(context, builder, arrty, arr, i):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.gep(ary.data, [i])


@intrinsic
def _atomic_load(typingctx, arr, i):
    # arr[i] (arr int64, 1-D, contiguous), read atomically
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_int64_ptr(context, builder, sig.args[0], args[0], args[1]), "seq_cst", 8)
    return types.int64(arr, i), codegen


@intrinsic
def _atomic_add(typingctx, arr, i, value):
    # arr[i] += value atomically; returns the value before
    def codegen(context, builder, sig, args):
        ptr = _int64_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")
    return types.int64(arr, i, value), codegen


@intrinsic
def _atomic_cas(typingctx, arr, i, expected, value):
    # arr[i] = value if arr[i] == expected, atomically; returns whether it did
    def codegen(context, builder, sig, args):
        ptr = _int64_ptr(context, builder, sig.args[0], args[0], args[1])
        pair = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return types.boolean(arr, i, expected, value), codegen


@intrinsic
def _unowned(typingctx, arr):
    # arr as an array without its memory's owner (meminfo NULL): Numba's increfs and decrefs of it
    # and of every view of it are then no-ops. Every call of a compiled function increfs its array
    # arguments on entry and decrefs them on return, atomically, on the owner's counter, which all
    # views of one buffer share: two threads calling kernels on views of the same buffers passed
    # that cache line between their cores dozens of times a step. The caller keeps arr alive.
    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        out = context.make_array(sig.return_type)(context, builder)
        for name in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(out, name, getattr(src, name))
        out.meminfo = cgutils.get_null_value(out.meminfo.type)
        out.parent = cgutils.get_null_value(out.parent.type)
        return out._getvalue()
    return arr(arr), codegen


@intrinsic
def _spin_pause(typingctx):
    # the x86 spin-wait hint (PAUSE) in a busy-wait loop; nothing on other targets
    def codegen(context, builder, sig, args):
        if builder.module.triple.startswith(("x86_64", "i686", "i386")):
            asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "pause", "~{memory}", side_effect=True)
            builder.call(asm, [])
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def _cycles(typingctx):
    # the processor's time-stamp counter (x86: rdtsc), for _Driver.traced
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@_inline()
def _claim(sync, i, generation):
    # whether this thread takes work unit sync[i] for `generation` (units only move up: a unit not
    # yet at generation is free, and one compare-and-swap from its current value takes it)
    old = _atomic_load(sync, i)
    return old < generation and _atomic_cas(sync, i, old, generation)


# Spins a thread waits for the owner of a work unit to take it before it takes it itself
CLAIM_GRACE = 64


@_inline()
def _wait_until(sync, i, count, stop):
    # busy-wait until sync[i] >= count, or sync[stop] is set
    while _atomic_load(sync, i) < count and _atomic_load(sync, stop) == 0:
        _spin_pause()


@_inline(fastmath=FAST)
def _layer_forward(kern, t, T, W, b, a_prev, out, code):
    # z^l = W^l a^{l-1} + b^l, a^l = sigma(z^l): W (N_l, N_{l-1}), b (N_l,), a_prev (n, N_{l-1}),
    # out (n, N_l); thread t of T's share (its rows, samples or tiles: _dense_forward_block chooses,
    # so that the driver's parallel loop, the first run's longest compile, holds one call).
    kern.forward_block(W, b, a_prev, out, code, t - t, W.shape[0], a_prev.shape[0], t, T)


@_inline()
def _last_layer_samples(kern, W, b, a_prev, Z, AL, D, labels, targets, has_targets, idx, output, loss, scale,
                        losses, weights, has_weights, s0, s1):
    # the output delta, delta^L = dc/dz^L (_output_loss_delta), of samples s0 <= s < s1, with
    # z^L = W^L a^{L-1} + b^L and a^L computed here first: Z, AL, D (n, K); returns the number of
    # correct predictions
    zero = s1 - s1  # computed, not a literal 0: no Literal[int] re-specialisation of the callees
    if s1 > s0:
        kern.forward_block(W, b, a_prev[s0:s1], Z[s0:s1], zero + IDENTITY, zero, W.shape[0], a_prev.shape[0], zero,
                           zero + 1)
    return kern.output_samples(Z, AL, D, labels, targets, has_targets, idx, output, loss, scale, losses, weights,
                               has_weights, s0, s1, s1 >= s0)


@_inline(fastmath=FAST)
def _weight_gradient(kern, delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, W, hp, fused):
    # dC/dW^l = delta^l (a^{l-1})^T and dC/db^l = delta^l, summed over the minibatch: delta (n, N_l),
    # a_prev (n, N_{l-1}), dW (N_l, N_{l-1}), db (N_l,); rows j0:j1 and columns c0:c1 of dW (db with
    # with_bias), overwritten or, with accumulate, added to; order: layer l's units grouped
    # (_group_units), which changes the speed only; fused: plain SGD's step on W = W^l with the
    # weights' hyperparameters hp instead of writing dW (_weight_grad_block)
    kern.weight_grad(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, W, hp[HP_LR],
                     hp[HP_WEIGHT_DECAY], fused)


@_jit()
def _sample_order(labels, idx, n, classes, has_targets):
    # -> (n,) int64: 0..n-1 sorted by label, labels[idx[s]] (stable: a counting sort; in order with
    # targets instead of labels). The delta recursion's tiles take the samples in this order: in a
    # trained ReLU layer samples of one class have many units off together, which the tiles leave
    # out (784-2048-2048-10: a unit off for all 6 samples of a tile for 21% of the pairs in the
    # minibatch's order, 28% in this one). Any order gives the same bits.
    _wide_vectors()
    out = np.arange(n)
    if has_targets or n < 2:
        return out
    label = np.empty(n, np.int64)
    counts = np.zeros(classes + 1, np.int64)
    for s in range(n):
        label[s] = min(max(labels[idx[s]], 0), classes - 1)
        counts[label[s] + 1] += 1
    for c in range(classes):
        counts[c + 1] += counts[c]
    for s in range(n):
        out[counts[label[s]]] = s
        counts[label[s]] += 1
    return out


@_inline(fastmath=FAST)
def _delta_recursion(kern, W_next, delta_next, a, code, delta, c0, c1, samples):
    # delta^l = sigma'(z^l) * (W^{l+1})^T delta^{l+1}: W_next (N_{l+1}, N_l), delta_next (n, N_{l+1}),
    # a = a^l (n, N_l) (sigma' from the activation's output), delta (n, N_l); columns c0:c1; the
    # tiles take the samples in the order `samples` (_sample_order)
    # (from_output is c1 >= c0, always true: a literal True would compile the tile kernel a second
    # time, for a Literal[bool] signature)
    kern.delta_cols(W_next, delta_next, a, code, c1 >= c0, delta, c0, c1, samples)


@_inline()
def _split_rows(rows, row_bytes):
    # rows of a thread's share of a weight gradient (rows x row_bytes) to compute and step at a time
    # with the AVX-512 tiles: all of them (at least 1, a range step) when they fit in L2
    # (UPDATE_SPLIT_BYTES), else UPDATE_SPLIT_ROWS
    return UPDATE_SPLIT_ROWS if rows * row_bytes > UPDATE_SPLIT_BYTES else max(rows, 1)


# ROW_PARTS (fastmlp._buffers): the fixed number of parts into which _backward_pair splits a
# hidden-to-hidden W^l by rows; delta^{l-1} is the sum of one partial product per part, added in
# part order, so that its bits do not depend on how many threads compute the parts.

@_inline()
def _row_part(N, p):
    # [start, stop) of part p of ROW_PARTS of N rows: the split of the forward pass's rows on
    # ROW_PARTS threads (_chunk, inlined: a literal thread count would compile _chunk again), so
    # that each thread steps the rows of W it reads there
    return _share(N, p, ROW_PARTS, 4, 0)


@_inline()
def _partial_offset(sizes, n, k, p):
    # where, past the extra base, part p's partial product of layer k (n, N_k) lies (the parts of
    # layer 1 first, then layer 2's, ...; Workspace sizes the region by its capacity)
    off = 0
    for l in range(1, k):
        off += ROW_PARTS * n * sizes[l]
    return off + p * n * sizes[k]


@_inline()
def _partials_size(sizes, n):
    # the elements of the partial products of every hidden layer that takes them (1 .. L - 2)
    L = sizes.shape[0] - 1
    return _partial_offset(sizes, n, max(L - 1, 1), 0)


@_jit(fastmath=FAST)
def _sum_partials(D, o, stride, parts, a, code, delta, c0, c1):
    # delta (n, N), a (n, N), D flat: delta[:, c0:c1] = sigma'(z) * (P_0 + P_1 + ...)[:, c0:c1], the
    # `parts` partial products of (W^{l+1})^T delta^{l+1} (n, N) at D[o + p * stride:], added in
    # part order (sigma' from a = a^l): the lecture's delta^l = sigma'(z^l) * (W^{l+1})^T delta^{l+1}
    # with its sum over the rows of W^{l+1} taken part by part (_backward_pair)
    _wide_vectors()
    n, N = delta.shape
    for s in range(n):
        row = delta[s, c0:c1]
        src = D[o + s * N + c0:o + s * N + c1]
        for i in range(c1 - c0):
            row[i] = src[i]
        for p in range(1, parts):
            src = D[o + p * stride + s * N + c0:o + p * stride + s * N + c1]
            for i in range(c1 - c0):
                row[i] += src[i]
        _scale_by_activation_grad(row, a[s, c0:c1], code, c1 >= c0)


@_inline(fastmath=FAST)
def _rows_gradient(kern, k, params, grads, m, v, w_off, b_off, sizes, delta, a_prev, units, c0, c1, accumulate,
                   update, optimizer, hp, step, sgd):
    # dW^k, db^k rows c0:c1 from delta^k[:, c0:c1] and a_prev = a^{k-1} (X for k = 1), and with
    # update the step on them, block by block while they are in cache
    # (with_bias is always true here, but computed: a literal True would compile the tile
    # kernel a second time, for a Literal[bool] signature)
    dW = _weights(grads, w_off, sizes, k)
    db = _biases(grads, b_off, sizes, k)
    Wk = _weights(params, w_off, sizes, k)
    M = sizes[k - 1]
    fused = sgd and (c1 - c0) * M * params.itemsize > FUSED_SGD_MIN_BYTES
    if fused:
        # the tiles step W^k (dW^k not written); then the step on b^k's rows
        _weight_gradient(kern, delta, a_prev, dW, db, c0, c1, M - M, M, accumulate, c0 <= c1,
                         _units(units, sizes, k), Wk, hp, fused)
        kern.update(params, grads, m, v, b_off[k] + c0, b_off[k] + c1, optimizer, hp[HP_SIZE:], step, 1, 0)
    elif update and TILE_ROWS == 4:
        # (in one go when the share of dW^k fits in L2, else by blocks of UPDATE_SPLIT_ROWS rows,
        # as dW^{k+1} in _backward_pair: blocks small enough for L1 saved the step less than the
        # extra calls of the two kernels cost, most of all Adam's)
        rb = _split_rows(c1 - c0, M * params.itemsize)
        for r0 in range(c0, c1, rb):
            r1 = min(r0 + rb, c1)
            _weight_gradient(kern, delta, a_prev, dW, db, r0, r1, M - M, M, accumulate, r0 < r1,
                             _units(units, sizes, k), Wk, hp, fused)
            _update_layer_rows(kern.update, params, grads, m, v, w_off, b_off, sizes, k, r0, r1, optimizer, hp,
                               step)
    else:
        # (the 16-register kernels pack the column panels of a_prev once per call: called per
        # block of rows, they would pack it again for each block, which costs more than the
        # update gains from finding its rows of dW in L1; the AVX-512 tiles read it in place)
        _weight_gradient(kern, delta, a_prev, dW, db, c0, c1, M - M, M, accumulate, c0 <= c1,
                         _units(units, sizes, k), Wk, hp, fused)
        if update:
            _update_layer_rows(kern.update, params, grads, m, v, w_off, b_off, sizes, k, c0, c1, optimizer, hp,
                               step)


@_inline(fastmath=FAST)
def _backward_pair(kern, t, T, k, params, grads, m, v, w_off, b_off, sizes, hidden, X, A, D, a_off, units, n,
                   accumulate, update, optimizer, hp, step, samples, extra):
    # Thread t of T in the backward region of layer k (k == L only for a network without hidden
    # layers: then just dW^1 below). The thread owns units c0:c1 of layer k: rows of W^k, dW^k,
    # and columns of delta^k, which it computes first, with delta^{k+1} complete:
    #   k == L - 1: from W^{k+1}[:, c0:c1] (before the step changes them, W^L being small and read
    #            by every thread in the output step); then dW^{k+1}[:, c0:c1] and (the first part)
    #            db^{k+1}, from these columns of a^k, and (update) the optimizer step on W^{k+1}[:, c0:c1]
    #            (only this thread reads or writes those columns here), by blocks of rows while
    #            they are in its cache (plain SGD on a share larger than FUSED_SGD_MIN_BYTES: by the
    #            tiles, dW not written), and, the first part, on b^{k+1};
    #   k < L - 1: as the sum of the partial products that the parts of W^{k+1} left (in the
    #            region of D at `extra`), in part order.
    # Then dW^k, db^k rows c0:c1 from delta^k[:, c0:c1] and a^{k-1} (X for k == 1), with update the
    # step on them; and for k > 1 first, from the rows c0:c1 of W^k before that step, this part's
    # partial product delta^k[:, c0:c1] W^k[c0:c1, :] for delta^{k-1}.
    # For k > 1 the units are the ROW_PARTS fixed parts of _row_part (a thread takes all parts
    # when T == 1), whatever the thread count, so that the sum of partial products has the same
    # bits on any number of threads; for k == 1 the share of thread t of T.
    # So every W^l but W^L is read and written by rows, by the thread whose share of the forward
    # pass reads those rows: no thread writes lines of W that the other has just read. (Split by
    # columns, as the transposed product would have it, each step moved half of every W^l between
    # the cores: on cores that share no L3, that doubled the backward phase of 784-512-512-10.)
    L = sizes.shape[0] - 1
    if k > 1:
        p0, p1 = (t, t + 1) if T > 1 else (0, ROW_PARTS)
    else:
        p0, p1 = 0, 1
    delta = _rows(D, a_off, sizes, k, n)
    # plain SGD taken by the weight-gradient tiles themselves (dW not written: _weight_grad_block) for
    # a share of W larger than FUSED_SGD_MIN_BYTES, which the separate pass would read and write
    # again; a smaller share is stepped in one pass after its gradient, which saves a call per tile
    sgd = update and optimizer == SGD and TILE_ROWS == 4 and not accumulate
    for p in range(p0, p1):
        c0, c1 = _row_part(sizes[k], p) if k > 1 else _chunk(sizes[k], t, T)
        first = p == 0 if k > 1 else t == 0  # (db^{k+1} and its step: one unit's)
        if k == L - 1:
            delta_next = _rows(D, a_off, sizes, k + 1, n)
            a_k = _rows(A, a_off, sizes, k, n)
            dW = _weights(grads, w_off, sizes, k + 1)
            db = _biases(grads, b_off, sizes, k + 1)
            W = _weights(params, w_off, sizes, k + 1)
            N = sizes[k + 1]
            M = sizes[k]
            # delta^k first: it reads W^{k+1}[:, c0:c1] before the step below changes them
            _delta_recursion(kern, W, delta_next, a_k, hidden, delta, c0, c1, samples)
            # dW^{k+1} and the step on W^{k+1}: plain SGD by the tiles (fused, above
            # FUSED_SGD_MIN_BYTES); else in blocks of UPDATE_SPLIT_ROWS rows when the share is
            # larger than L2, else in one go; the step on a block's rows of these columns in one call
            fused = sgd and N * (c1 - c0) * params.itemsize > FUSED_SGD_MIN_BYTES
            rb = _split_rows(N, (c1 - c0) * params.itemsize) if update and TILE_ROWS == 4 and not fused else N
            for j in range(0, N, rb):
                r1 = min(j + rb, N)
                _weight_gradient(kern, delta_next, a_k, dW, db, j, r1, c0, c1, accumulate, first,
                                 _units(units, sizes, k + 1), W, hp, fused)
                if update and not fused:
                    base = w_off[k + 1] + j * M
                    kern.update(params, grads, m, v, base + c0, base + c1, optimizer, hp, step, r1 - j, M)
            if update and first:
                kern.update(params, grads, m, v, b_off[k + 1], b_off[k + 1] + N, optimizer, hp[HP_SIZE:], step, 1, 0)
        elif k < L - 1:
            kern.sum_partials(D, extra + _partial_offset(sizes, n, k, 0), n * sizes[k], ROW_PARTS,
                              _rows(A, a_off, sizes, k, n), hidden, delta, c0, c1)
        if k > 1:
            # this part's partial product for delta^{k-1}, from its rows of W^k before their step:
            # its columns of delta^k packed side by side (the kernel takes a whole delta), then
            # (delta^k)[:, c0:c1] W^k[c0:c1, :] over every column of layer k - 1
            w = c1 - c0
            E = D[extra + _partials_size(sizes, n) + p * n * sizes[k]:][:n * w].reshape((n, w))
            for s in range(n):
                for i in range(w):
                    E[s, i] = delta[s, c0 + i]
            M = sizes[k - 1]
            P = D[extra + _partial_offset(sizes, n, k - 1, p):][:n * M].reshape((n, M))
            Wk = _weights(params, w_off, sizes, k)
            # (IDENTITY: sigma' is applied to the sum of the parts, by _sum_partials)
            kern.delta_cols(Wk[c0:c1], E, P, IDENTITY, c1 >= c0, P, M - M, M, samples)
        _rows_gradient(kern, k, params, grads, m, v, w_off, b_off, sizes, delta,
                       X if k == 1 else _rows(A, a_off, sizes, k - 1, n), units, c0, c1, accumulate, update,
                       optimizer, hp, step, sgd)


# SAMPLE_PARTS (fastmlp._buffers): the fixed number of parts into which _backward_samples splits
# a minibatch's samples in the backward phase of layer 1 when its inputs are large (_by_samples);
# the gradients are the sum of one per part, added in part order, whatever the thread count.

# whether the backward phase of layer 1 splits a minibatch of n samples by samples
# (_by_samples(sizes, n, itemsize): _backward_samples), and the elements of one part's gradients:
# the rules by which Workspace sizes D, compiled into the driver, so that the two cannot disagree
_by_samples = _inline()(first_layer_by_samples)
_sample_partials_size = _inline()(sample_partials_size)


@_inline()
def _sample_part(n, p):
    # [start, stop) of part p of SAMPLE_PARTS of a minibatch's n samples: the forward pass's split of
    # them on SAMPLE_PARTS threads (_dense_forward_block), so that each part's rows of X and a^1 are
    # the ones its thread gathered and computed
    return _share(n, p, SAMPLE_PARTS, MICRO_FORWARD_MIN, 0)


@_inline()
def _sample_partials(sizes, D, p):
    # part p's gradients, flat in the parameters' layout (layer 1, and with one hidden layer layer 2),
    # at the end of D
    size = _sample_partials_size(sizes)
    return D[D.shape[0] - (SAMPLE_PARTS - p) * size:][:size]


@_inline(fastmath=FAST)
def _backward_samples(kern, t, T, params, w_off, b_off, sizes, hidden, X, A, D, a_off, units, n, labels, idx,
                      has_targets, hp, extra):
    # Thread t of T in the backward phase of layer 1 of a minibatch split by samples (_by_samples):
    # for each of its parts (one per thread; all of them when T == 1), the samples s0:s1 alone:
    #   delta^1 rows s0:s1: with one hidden layer from W^2 and delta^2's rows, else as the sum of the
    #            partial products that W^2's row parts left (_backward_pair);
    #   the part's gradients, summed over its samples, into its own buffer (_sample_partials): dW^1
    #            and db^1 from delta^1 and X, and with one hidden layer dW^2 and db^2 from delta^2
    #            and a^1 (rows s0:s1).
    # The SAMPLE_SUM phase then adds the parts in part order and takes the step. The rows of X and
    # a^1 that a part reads are the ones its thread gathered and computed: split by units, as in
    # _backward_pair, each thread read all of X, half of it written by the other core, and where
    # the two cores share no L3 every such line crossed the chip (benchmarks/RESULTS.md).
    L = sizes.shape[0] - 1
    zero = n - n  # (computed, not a literal: no Literal[int] re-specialisation of the callees)
    one, two = zero + 1, zero + 2  # (the layers)
    p0, p1 = (t, t + 1) if T > 1 else (zero, zero + SAMPLE_PARTS)
    for p in range(p0, p1):
        s0, s1 = _sample_part(n, p)
        G = _sample_partials(sizes, D, p)
        delta = _rows(D, a_off, sizes, one, n)[s0:s1]
        a1 = _rows(A, a_off, sizes, one, n)[s0:s1]
        if L == 2:
            delta_next = _rows(D, a_off, sizes, two, n)[s0:s1]
            W2 = _weights(params, w_off, sizes, two)
            samples = _sample_order(labels, idx[s0:s1], s1 - s0, sizes[L], has_targets)
            _delta_recursion(kern, W2, delta_next, a1, hidden, delta, zero, sizes[1], samples)
            _weight_gradient(kern, delta_next, a1, _weights(G, w_off, sizes, two), _biases(G, b_off, sizes, two), zero,
                             sizes[2], zero, sizes[1], s1 < s0, s0 <= s1, _units(units, sizes, two), W2, hp, s1 < s0)
        else:
            kern.sum_partials(D, extra + _partial_offset(sizes, n, one, zero) + s0 * sizes[1], n * sizes[1], ROW_PARTS,
                              a1, hidden, delta, zero, sizes[1])
        _weight_gradient(kern, delta, X[s0:s1], _weights(G, w_off, sizes, one), _biases(G, b_off, sizes, one), zero,
                         sizes[1], zero, sizes[0], s1 < s0, s0 <= s1, _units(units, sizes, one),
                         _weights(params, w_off, sizes, one), hp, s1 < s0)


@_jit(fastmath=FAST)
def _add_parts(G0, G1, out, accumulate):
    # out (+)= G0 + G1, all (m,): the two sample parts' gradients, in part order
    _wide_vectors()
    zero = out.dtype.type(0)
    for i in range(out.shape[0]):
        g = G0[i] + G1[i]
        out[i] = (out[i] if accumulate else zero) + g


@_inline(fastmath=FAST)
def _sample_sum(kern, u, T, params, grads, m, v, w_off, b_off, sizes, D, accumulate, update, optimizer, hp, step):
    # Unit u of T of the SAMPLE_SUM phase (_backward_samples): rows r0:r1, its share of layer 1 (and,
    # with one hidden layer, of layer 2): dW, db (+)= the sample parts' gradients in part order, and
    # with update the step on those rows, UPDATE_SPLIT_ROWS rows at a time while they are in cache
    zero = u - u  # (computed, not a literal: no Literal[int] re-specialisation of the callees)
    G0 = _sample_partials(sizes, D, zero)
    G1 = _sample_partials(sizes, D, zero + 1)
    for l in range(1, 3 if sizes.shape[0] == 3 else 2):
        M = sizes[l - 1]
        r0, r1 = _chunk(sizes[l], u, T)
        for j0 in range(r0, r1, UPDATE_SPLIT_ROWS):
            j1 = min(j0 + UPDATE_SPLIT_ROWS, r1)
            q0, q1 = w_off[l] + j0 * M, w_off[l] + j1 * M
            _add_parts(G0[q0:q1], G1[q0:q1], grads[q0:q1], accumulate)
            q0, q1 = b_off[l] + j0, b_off[l] + j1
            _add_parts(G0[q0:q1], G1[q0:q1], grads[q0:q1], accumulate)
            if update:
                _update_layer_rows(kern.update, params, grads, m, v, w_off, b_off, sizes, l, j0, j1, optimizer, hp,
                                   step)


@_jit()
def _backward_pair_work(sizes, k, n):
    # multiply-adds of _backward_pair for layer k: (k == L - 1) delta^k and dW^{k+1}; dW^k, and for
    # k > 1 the partial products for delta^{k-1}
    _wide_vectors()
    L = sizes.shape[0] - 1
    above = 2 * sizes[k + 1] if k == L - 1 else 0
    return n * sizes[k] * (above + (2 * sizes[k - 1] if k > 1 else sizes[0]))


@_jit()
def _phase_threads(kind, layer, sizes, n, nthreads, itemsize):
    # the threads of one phase of a plan for a minibatch of n samples (n rows to gather) of
    # itemsize-byte floats: 1 when its work would not pay for a parallel region; SAMPLE_SUM: 0 (no
    # work) unless the minibatch is split by samples
    L = sizes.shape[0] - 1
    if kind == GATHER:
        return _region_threads(n * sizes[0], nthreads)
    if kind == FORWARD:
        return _region_threads(n * sizes[layer] * sizes[layer - 1], nthreads)
    if kind == OUTPUT_STEP:
        T = _region_threads(n * (sizes[L] * sizes[L - 1] + OUTPUT_STEP_WORK), nthreads)
        # (few samples: on this thread, without a parallel region, ~1.2 us)
        return T if n >= 8 * T else 1
    if kind == BACKWARD:
        T = _region_threads(_backward_pair_work(sizes, layer, n), nthreads)
        # (layers above the first: one unit per part of W^layer's rows, _backward_pair; layer 1 split
        # by samples: one per part of the samples, _backward_samples)
        if layer > 1:
            return min(T, ROW_PARTS)
        return min(T, SAMPLE_PARTS) if _by_samples(sizes, n, itemsize) else T
    if kind == SAMPLE_SUM:
        return _region_threads(16 * sizes[1] * sizes[0], nthreads) if _by_samples(sizes, n, itemsize) else 0
    return 1


@_inline(fastmath=FAST)
def _squared_weights(params, w_off, sizes):
    # sum over l of ||W^l||^2 (every weight, no bias), each square and the sum in float64: for
    # float32 weights every square is exact. On the calling thread, so the sum does not depend on
    # the thread count.
    L = sizes.shape[0] - 1
    total = 0.0
    for l in range(1, L + 1):
        Wl = params[w_off[l]:w_off[l] + sizes[l] * sizes[l - 1]]
        part = 0.0
        for i in range(Wl.shape[0]):
            x = np.float64(Wl[i])
            part += x * x
        total += part
    return total


@_inline(fastmath=FAST)
def _phase_unit(kern, net, work, opt, data, results, kind, layer, flags, u, T, n, rows, chunked, order, idx, Xb, Zb,
                AL, DL, losses, scale, counts, s0, hp, step, gathered):
    # Work unit u of T of one phase (kind, layer, flags: a row of the plan) of a minibatch of n
    # samples, rows s0: of the call (idx: their data set rows; losses their slice of the losses), in
    # _drive_plan (which describes the bundles): thread u of T's share of the phase as a region of
    # its own would split it. (At most 30 arguments: CPython passes more as a tuple, which Numba
    # cannot inline.)
    params, w_off, b_off, sizes, hidden, output = net
    Xbuf, A, D, Z, a_off, units = work
    grads, m, v, optimizer, _, _ = opt
    X, xcode, divisor, labels, targets, has_targets, weights, has_weights, loss = data
    outputs = results[2]
    L = sizes.shape[0] - 1
    wl = max(layer, 1)  # the layer whose parameters the phase reads (GATHER: any)
    W = _weights(params, w_off, sizes, wl)
    b = _biases(params, b_off, sizes, wl)
    a_prev = Xb if wl == 1 else _rows(A, a_off, sizes, wl - 1, n)
    out = Zb if wl == L else _rows(A, a_off, sizes, wl, n)
    code = IDENTITY if wl == L else hidden
    extra = a_off[L] + Z.shape[0] * sizes[L]  # (backward: where D's region past the deltas starts)
    if kind == GATHER:
        if chunked:
            # every row of the call at its first minibatch (rows is then the call's count), in blocks
            # of GATHER_BLOCK rows that the units take in turn from the count gathered[0] (which
            # starts at 0), so that a thread that runs slower gathers fewer: on an idle virtual CPU
            # the second thread's share took up to twice as long as the first's, and the first
            # waited for it
            r0 = _atomic_add(gathered, 0, GATHER_BLOCK)
            while r0 < rows:
                kern.gather(X, xcode, order, divisor, Xbuf[:rows], r0, min(r0 + GATHER_BLOCK, rows))
                r0 = _atomic_add(gathered, 0, GATHER_BLOCK)
        else:
            # the minibatch's rows: the forward pass's split of its samples (_sample_part)
            r0, r1 = _share(rows, u, T, MICRO_FORWARD_MIN, 0)
            kern.gather(X, xcode, idx, divisor, Xb, r0, r1)
    elif kind == FORWARD:
        _layer_forward(kern, u, T, W, b, a_prev, out, code)
    elif kind == OUTPUT_STEP:
        c0, c1 = _chunk4(n, u, T)
        counts[u] = _last_layer_samples(kern, W, b, a_prev, Zb, AL, DL, labels, targets, has_targets, idx, output,
                                        loss, scale, losses, weights, has_weights, c0, c1)
    elif kind == OUTPUT:
        # a^L = sigma(z^L) per sample (softmax), and into outputs
        for s in range(n):
            kern.output_activation(Zb[s], AL[s], output)
        if (flags & OUTPUT_COPY) != 0:
            # element by element: Numba compiles a slice assignment into far more code (seconds of
            # compile time) than this loop
            for s in range(n):
                for i in range(AL.shape[1]):
                    outputs[s0 + s, i] = AL[s, i]
    elif kind == LOSS:
        counts[0] = kern.output_samples(Zb, AL, DL, labels, targets, has_targets, idx, output, loss, scale, losses,
                                        weights, has_weights, n - n, n, n < 0)
    elif kind == SAMPLE_SUM:
        _sample_sum(kern, u, T, params, grads, m, v, w_off, b_off, sizes, D, (flags & BACKWARD_ACCUMULATE) != 0,
                    (flags & BACKWARD_UPDATE) != 0, optimizer, hp, step)
    elif layer == 1 and _by_samples(sizes, n, params.itemsize):
        _backward_samples(kern, u, T, params, w_off, b_off, sizes, hidden, Xb, A, D, a_off, units, n, labels, idx,
                          has_targets, hp, extra)
    else:
        # (the order is computed by each unit: a counting sort of n labels, cheaper than a barrier)
        samples = _sample_order(labels, idx, n, sizes[L], has_targets)
        _backward_pair(kern, u, T, layer, params, grads, m, v, w_off, b_off, sizes, hidden, Xb, A, D, a_off, units, n,
                       (flags & BACKWARD_ACCUMULATE) != 0, (flags & BACKWARD_UPDATE) != 0, optimizer, hp, step,
                       samples, extra)


@_jit(fastmath=FAST)
def _drive_plan(plan, net, work, opt, data, order, batch_size, nthreads, results, kern, me, sync):
    # The one driver of training, evaluation, forward, predict, loss and gradients: the minibatches
    # of order (data set rows; already this call's slice of the epoch's permutation), batch_size at
    # a time, the last possibly smaller, each through the phases of plan (rows (kind, layer, flags),
    # fastmlp._plan); as thread `me` of nthreads, which all run this function at once on the same
    # arguments and sync (_Driver: the calling thread and _Workers' threads). The bundles
    # (fastmlp._buffers):
    #   net     Network(params, w_off, b_off, sizes, hidden, output): the parameters, flat;
    #   work    Buffers(X, A, D, Z, a_off, units): gathered inputs, a^l, delta^l, z^L, and each layer's
    #           units grouped for the weight gradients (Workspace.group_units);
    #   opt     OptimizerState(grads, m, v, optimizer, hp, step): hp holds the learning rate and the
    #           optimizer's other hyperparameters; step is the optimizer step of the first minibatch;
    #           hp is one row of 2 * HP_SIZE values, or one row per minibatch of the call, back to
    #           back (minibatch k reads row k, and the last row serves any minibatch past the table),
    #           for a schedule that changes every step (scikit-learn's Adam epsilon and decay);
    #   data    Data(X, xcode, divisor, labels, targets, has_targets, weights, has_weights, loss): X as
    #           bytes (_buffers.input_bytes) and the code of its dtype; with has_weights, weights (N,)
    #           float64 per data set row: the cost of a minibatch is then sum_s w_s c_s / sum_s w_s
    #           (its per-sample losses w_s c_s); hp[HP_GRAD_SCALE], when not 0, replaces the
    #           minibatch's 1/n (or 1/sum of weights) as the factor of the summed loss;
    #   kern    _Kernels (network_kernels(dtype, sizes)): the big kernels the phases call, as first-class functions
    #           (called through their addresses: see _KernelRef);
    #   results Results(losses, stats, outputs): per-sample losses, at their position in order when
    #           losses holds len(order) values, else the minibatch's at the front; stats[k] = (sum of
    #           the per-sample losses, correct count) of minibatch k, and when stats has a third
    #           column, stats[k, 2] = the sum of the squares of every weight (not bias) before
    #           minibatch k's update, summed in float64 (scikit-learn's L2 penalty); a^L at its
    #           position in order (OUTPUT_COPY).
    # Returns the number of minibatches completed: an OUTPUT_STEP (training) whose loss is not
    # finite stops before that minibatch's backward phases.
    # Every phase kind is one branch of the inlined _phase_unit, compiled once, in this function:
    # no parallel loop (Numba compiles each prange into a gufunc and two wrappers, each
    # re-optimising every function the loop body calls).
    _wide_vectors()
    params, w_off, b_off, sizes, hidden, output = net
    Xbuf, A, D, Z, a_off, units = work
    grads, m, v, optimizer, hp, step0 = opt
    X, xcode, divisor, labels, targets, has_targets, weights, has_weights, loss = data
    losses, stats, outputs = results
    # (every array without its owner: no atomic reference counts shared between the threads)
    params, w_off, b_off, sizes = _unowned(params), _unowned(w_off), _unowned(b_off), _unowned(sizes)
    Xbuf, A, D, Z = _unowned(Xbuf), _unowned(A), _unowned(D), _unowned(Z)
    a_off, units = _unowned(a_off), _unowned(units)
    grads, m, v, hp = _unowned(grads), _unowned(m), _unowned(v), _unowned(hp)
    X, labels, targets, weights = _unowned(X), _unowned(labels), _unowned(targets), _unowned(weights)
    losses, stats, outputs, order = _unowned(losses), _unowned(stats), _unowned(outputs), _unowned(order)
    plan = _unowned(plan)
    net = Network(params, w_off, b_off, sizes, hidden, output)
    work = Buffers(Xbuf, A, D, Z, a_off, units)
    opt = OptimizerState(grads, m, v, optimizer, hp, step0)
    data = _Data(X, xcode, divisor, labels, targets, has_targets, weights, has_weights, loss)
    results = Results(losses, stats, outputs)
    L = sizes.shape[0] - 1
    count = order.shape[0]
    nsteps = (count + batch_size - 1) // batch_size
    chunked = False  # gather every row at the first step (else each minibatch's)
    for p in range(plan.shape[0]):
        if plan[p, 0] == GATHER and (plan[p, 2] & GATHER_CHUNK) != 0:
            chunked = True
    if _by_samples(sizes, min(batch_size, count), params.itemsize):
        # each thread gathers, per minibatch, the rows its part of the samples reads
        # (_backward_samples): gathered ahead by blocks, half of them by the other thread
        chunked = False
    # From PRIVATE_INPUT_MIN samples a minibatch, on up to PRIVATE_INPUT_THREADS threads, training
    # gathers instead each minibatch's rows into rows of each thread's own (Xbuf[me * batch_size:]),
    # before the first unit of layer 1 the thread runs: the phases of layer 1 then read X from
    # their own cache, not half of it from the other core's and the rest from L3 or memory (a
    # call's rows, gathered at its first minibatch); gathering every row twice costs less. (Below 8
    # samples it did not pay.)
    private = (chunked and nthreads <= PRIVATE_INPUT_THREADS and min(batch_size, count) >= PRIVATE_INPUT_MIN
               and Xbuf.shape[0] >= nthreads * batch_size)
    if private:
        chunked = False
    Xmine = Xbuf[me * batch_size:][:batch_size] if private else Xbuf[:0]
    mine = -1  # the minibatch whose rows Xmine holds
    per_row_losses = losses.shape[0] >= count
    hp_width = 2 * HP_SIZE
    hp_rows = hp.shape[0] // hp_width
    with_norm = stats.shape[1] > 2
    # The threads share the work without a parallel region per phase. Each minibatch k is a
    # sequence of slots: the weight norm (with_norm), then per phase of the plan the phase and,
    # after an output step or a loss, its statistics. A slot is split into work units (a phase into
    # the T threads' shares that _phase_threads decides; every other slot is one unit), and every
    # thread walks the slots in order, takes the units not yet taken (its own unit first, so that
    # with all threads running each keeps the share, and the data in its cache, that it would have
    # in a region of its own), and before it computes one waits until every unit of the earlier
    # slots is done. So a thread that is descheduled (another process has its core) or not yet
    # started holds nobody up unless it holds a unit: the others take its share. A unit computes
    # the same thing whichever thread runs it, so results do not depend on who runs what, nor on
    # the thread count (the trainers change it between chunks). The waits spin: the work units
    # last microseconds, less than a thread takes to sleep and wake.
    # sync (_sync_size(plan, nthreads) int64, zeros): [claims (one per unit: the minibatch that last
    # took it, + 1), units done, stop, counts (one per thread of an output step), rows gathered],
    # and for a traced call (_Driver.traced) a row of _trace_width(plan) per thread after
    # _sync_size's, where the thread adds up, per slot, the time-stamp counter's cycles it spent
    # waiting for the earlier slots and in the slot's units
    nslots = 2 * plan.shape[0] + 1
    DONE = nslots * nthreads
    STOP = DONE + 1
    counts = sync[STOP + 1:STOP + 1 + nthreads]
    gathered = sync[STOP + 1 + nthreads:STOP + 2 + nthreads]
    width = _trace_width(plan)
    traced = sync.shape[0] >= STOP + 2 + nthreads + nthreads * width
    trace = sync[STOP + 2 + nthreads + me * width + TRACE_PAD:][:width - TRACE_PAD]
    before = 0  # the units of the slots before the current one
    stopped = False
    for k in range(nsteps):
        s0 = k * batch_size
        s1 = min(s0 + batch_size, count)
        n = s1 - s0
        Xb = Xbuf[s0:s1] if chunked else Xbuf[:n]
        idx = order[s0:s1]
        Zb = Z[:n]
        AL = _rows(A, a_off, sizes, L, n)
        DL = _rows(D, a_off, sizes, L, n)
        lb = losses[s0:s1] if per_row_losses else losses[:n]
        r = min(k, hp_rows - 1) * hp_width
        hpk = hp[r:r + hp_width]
        scale = params.dtype.type(1.0 / n)
        if has_weights:
            wsum = 0.0
            for s in range(n):
                wsum += weights[idx[s]]
            scale = params.dtype.type(1.0 / wsum if wsum > 0 else 0.0)
        if hpk[HP_GRAD_SCALE] != 0.0:
            scale = params.dtype.type(hpk[HP_GRAD_SCALE])
        for slot in range(nslots):
            p = (slot - 1) // 2
            kind = plan[p, 0] if slot > 0 else GATHER
            layer = plan[p, 1] if slot > 0 else 0
            flags = plan[p, 2] if slot > 0 else 0
            rows = count if kind == GATHER and chunked else n
            wl = max(layer, 1)  # the layer whose parameters the phase reads (GATHER: any)
            T = _phase_threads(kind, wl, sizes, rows, nthreads, params.itemsize)
            if slot == 0:
                units = 1 if with_norm else 0
            elif slot % 2 == 0:
                units = 1 if kind == OUTPUT_STEP or kind == LOSS else 0
            elif kind == GATHER and (private or (chunked and k > 0)):
                units = 0
            elif kind == OUTPUT or kind == LOSS:
                units = 1
            else:
                units = T
            c0 = _cycles() if traced else 0
            if units > 0:
                _wait_until(sync, DONE, before, STOP)
                stopped = _atomic_load(sync, STOP) != 0
            c1 = _cycles() if traced else 0
            for j in range(units if not stopped else 0):
                u = (me + j) % units
                claim = slot * nthreads + u
                if u != me:
                    # another thread's unit: a moment for its owner to take it (it keeps the data
                    # in its cache), then take it if nobody has
                    g = 0
                    while g < CLAIM_GRACE and _atomic_load(sync, claim) <= k:
                        _spin_pause()
                        g += 1
                if not _claim(sync, claim, k + 1):
                    continue
                if slot == 0:
                    stats[k, 2] = _squared_weights(params, w_off, sizes)
                elif slot % 2 == 0:
                    # the minibatch's statistics, once its output step (or loss) is done
                    correct = 0
                    for c in range(T if kind == OUTPUT_STEP else 1):
                        correct += counts[c]
                    total = 0.0
                    for s in range(n):
                        total += lb[s]
                    stats[k, 0] = total
                    stats[k, 1] = correct
                    if kind == OUTPUT_STEP and not np.isfinite(total):
                        _atomic_add(sync, STOP, k + 1)  # (stops before its backward phases)
                else:
                    xb = Xb
                    if private and wl == 1:  # (a phase of layer 1: the thread's own rows)
                        if mine != k:
                            kern.gather(X, xcode, idx, divisor, Xmine[:n], 0, n)
                            mine = k
                        xb = Xmine[:n]
                    _phase_unit(kern, net, work, opt, data, results, kind, layer, flags, u, T, n, rows, chunked,
                                order, idx, xb, Zb, AL, DL, lb, scale, counts, s0, hpk, step0 + k, gathered)
                _atomic_add(sync, DONE, 1)
            if traced:
                trace[2 * slot] += c1 - c0
                trace[2 * slot + 1] += _cycles() - c1
            before += units
            if stopped:
                break
        if stopped:
            break
    # every unit done (the others' too) before the caller reads the results
    _wait_until(sync, DONE, before, STOP)


class _KernelRef:
    """A compiled kernel handed to _drive_plan as a first-class function (Numba's FunctionType):
    _drive_plan calls it through its address instead of linking its code. Numba re-optimises and
    re-generates the machine code of every function a function calls in each library that links
    it, and a parallel loop makes three libraries (the loop body and two wrappers) besides the
    driver's own: the big kernels called from the driver were compiled five times over. Called
    through an address, each is compiled once, on its own (and can be compiled apart from the
    driver, e.g. in another process: _compile.prefetch), and loaded from Numba's cache."""

    def __init__(self, dispatcher, sig):
        self.dispatcher = dispatcher
        self.sig = sig
        self._numba_type_ = types.FunctionType(sig)
        self._address = None

    def compile(self):
        """Compile (or load from the cache) the kernel for its signature."""
        for wait in list(_before_kernels):
            wait()
        return self.build()

    def build(self):
        """compile() without the waits of _before_kernels (fastmlp._compile: under its lock)."""
        self.dispatcher.compile(self.sig.args)
        cres = self.dispatcher.get_compile_result(self.sig)
        assert cres.signature.return_type == self.sig.return_type, (cres.signature, self.sig)
        return cres

    def cached(self):
        """Whether Numba's cache holds the kernel for its signature (False when that cannot be told)."""
        try:
            cache = self.dispatcher._cache
            key = cache._index_key(self.sig.args, self.dispatcher.targetctx.codegen())
            return key in cache._cache_file._load_index()
        except Exception:  # pragma: no cover - another Numba's cache internals
            return False

    def address(self):
        """The address of the kernel's C-ABI wrapper (compiled or loaded on first use)."""
        return self.__wrapper_address__()

    def __wrapper_address__(self):
        # Numba's protocol for first-class functions: the address of the kernel's C-ABI wrapper (the
        # driver's threads unbox the kernels at once: one of them compiles or loads, and waits for
        # the prefetch process, at a time)
        if self._address is None:
            with _address_lock:
                return self._resolve()
        return self._address

    def _resolve(self):
        if self._address is None:
            cres = self.compile()
            self._address = cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)
        return self._address


@typeof_impl.register(_KernelRef)
def _typeof_kernel_ref(val, c):
    # (Numba's generic typeof tries the buffer protocol before _numba_type_, and the exception that
    # raises costs about 2 us per kernel argument of every call)
    return val._numba_type_


_address_lock = threading.RLock()

# Called (in order) before a _KernelRef compiles or loads its kernel: fastmlp._compile.prefetch
# waits there for the process that compiles the kernels into the cache meanwhile.
_before_kernels = []

# (named as its module attribute: Numba's cache pickles the type by that name)
_Kernels = namedtuple("_Kernels", "gather forward_block output_samples weight_grad delta_cols update "
                                  "output_activation sum_partials")


@functools.cache
def kernels(dtype, forward_micro=True, delta_micro=True):
    """The _Kernels bundle of the kernels _drive_plan calls, for a network of `dtype` (float32 or
    float64); each compiled on first use. forward_micro=False: forward_block is
    _dense_forward_loops, delta_micro=False: delta_cols is _delta_backward_tiles (the kernels
    without the AVX2 micro-kernel, for a network none of whose layers takes it: micro_layers)."""
    refs = _kernel_refs(np.dtype(dtype).name)
    return _Kernels(refs["gather"], refs["forward_block" if forward_micro else "forward_loops"],
                    refs["output_samples"], refs["weight_grad"],
                    refs["delta_cols" if delta_micro else "delta_tiles"], refs["update"], refs["output_activation"],
                    refs["sum_partials"])


@functools.cache
def _kernel_refs(dtype):
    # one _KernelRef per kernel and dtype, shared by the bundles of kernels()
    f = types.float32 if dtype == "float32" else types.float64
    i64, b1, f64 = types.int64, types.boolean, types.float64
    A1 = types.Array(f, 1, "C")
    A2 = types.Array(f, 2, "C")
    I1 = types.Array(i64, 1, "C")
    F1 = types.Array(f64, 1, "C")

    def ro(a):
        return a.copy(readonly=True)
    forward = types.none(A2, A1, A2, A2, i64, i64, i64, i64, i64, i64)
    delta = types.none(A2, A2, A2, i64, b1, A2, i64, i64, I1)
    return {
        "gather": _KernelRef(_gather_range, types.none(ro(types.Array(types.uint8, 2, "C")), i64, I1, f64, A2, i64,
                                                       i64)),
        "forward_block": _KernelRef(_dense_forward_block, forward),
        "forward_loops": _KernelRef(_dense_forward_loops, forward),
        "output_samples": _KernelRef(_output_samples, i64(A2, A2, A2, ro(I1), ro(A2), b1, I1, i64, i64, f, F1,
                                                           ro(F1), b1, i64, i64, b1)),
        "weight_grad": _KernelRef(_weight_grad_block, types.none(A2, A2, A2, A1, i64, i64, i64, i64, b1, b1, I1, A2,
                                                                 f64, f64, b1)),
        "delta_cols": _KernelRef(_delta_backward_cols, delta),
        "delta_tiles": _KernelRef(_delta_backward_tiles, delta),
        "update": _KernelRef(_update_range, types.none(A1, A1, A1, A1, i64, i64, i64, F1, i64, i64, i64)),
        "output_activation": _KernelRef(_output_activation, f64(A1, A1, i64)),
        "sum_partials": _KernelRef(_sum_partials, types.none(A1, i64, i64, i64, A2, i64, A2, i64, i64))}


def micro_layers(sizes):
    """(forward, delta) for a network of layer sizes (N_0, ..., N_L): whether any layer's forward
    pass (N_l units on N_{l-1} inputs: _forward_takes_micro, whatever the batch), and whether the
    delta recursion through any W^l, l >= 2 (N_l rows: _delta_backward_cols), may take the AVX2
    micro-kernel. A size not known yet may be given as 0 (taken as too small for it)."""
    L = len(sizes) - 1
    forward = any(forward_layer_takes_micro(sizes[l], sizes[l - 1]) for l in range(1, L + 1))
    delta = MICRO_DELTA_MIN_ROWS == 0 or any(delta_takes_micro(sizes[l]) for l in range(2, L + 1))
    return forward, delta


def delta_takes_micro(N):
    """Whether the delta recursion through a W^l of N rows takes the AVX2 micro-kernel
    (_delta_backward_cols, which decides it from the same constants at compile time)."""
    return MICRO_DELTA_MIN_ROWS == 0 or 0 <= MICRO_DELTA_MIN_ROWS <= N


def network_kernels(dtype, sizes):
    """kernels() for a network of `dtype` and layer sizes: without a micro-kernel it cannot take."""
    return _network_kernels(dtype, tuple(sizes))


@functools.cache
def _network_kernels(dtype, sizes):
    # (sizes: a tuple of ints or of NumPy integers, which hash and compare as the ints)
    return kernels(np.dtype(dtype).name, *micro_layers(sizes))


def _stop_index(plan, nthreads):
    # where _drive_plan's sync array (see there) keeps the stop: after a claim per thread of each of
    # the 2 * phases + 1 slots, and the count of units done
    return (2 * plan.shape[0] + 1) * nthreads + 1


def _sync_size(plan, nthreads):
    # the int64 elements of the sync array: the stop is followed by a count per thread and the rows
    # gathered
    return _stop_index(plan, nthreads) + 2 + nthreads


# int64 before each thread's row of a traced call's sync array: a cache line between it and what the
# other threads write
TRACE_PAD = 8


@_jit()
def _trace_width(plan):
    # a thread's row of a traced call's sync array (_drive_plan): TRACE_PAD, then (wait, work) per
    # slot, rounded up to whole cache lines
    return TRACE_PAD + (2 * (2 * plan.shape[0] + 1) + 7) // 8 * 8


class _Workers:
    """The threads that run threads 1..T-1 of _drive_plan for each call (the calling thread runs
    thread 0): Python threads, started on first use, each waiting on its own queue; _drive_plan
    releases the GIL (nogil), so they run in parallel. The calling thread never waits for them: it
    takes any unit they have not taken, and returns when every unit is done, so a worker that the
    system has descheduled (or that is still starting) holds nobody up. A worker that starts its
    share after the call is over finds no unit left and returns at once. Calls from several Python
    threads at once queue up at the workers and are each complete when they return."""

    def __init__(self):
        self.lock = threading.Lock()
        self.inboxes = []

    def run(self, args, nthreads, sync):
        """_drive_plan(*args, t, sync) on threads t = 0 .. nthreads - 1 (sync: int64 zeros, at least
        _sync_size(plan, nthreads)); returns sync's stop."""
        plan = args[0]
        stop = _stop_index(plan, nthreads)
        errors = []
        if nthreads > 1:
            with self.lock:
                while len(self.inboxes) < nthreads - 1:
                    inbox = queue.SimpleQueue()
                    threading.Thread(target=_worker, args=(inbox,), daemon=True,
                                     name=f"fastmlp-{len(self.inboxes) + 1}").start()
                    self.inboxes.append(inbox)
                for t in range(1, nthreads):
                    self.inboxes[t - 1].put((args, t, sync, stop, errors))
        try:
            _drive_plan(*args, 0, sync)
        except BaseException:
            sync[stop] = -1  # (the other threads stop at their next unit instead of waiting for this one's)
            raise
        if sync[stop] == -1:
            raise errors[0]  # a worker's (it records the error before it sets the stop)
        return int(sync[stop])


def _worker(inbox):
    while True:
        args, t, sync, stop, errors = inbox.get()
        try:
            _drive_plan(*args, t, sync)
        except BaseException as e:  # to the calling thread, which raises it
            errors.append(e)
            sync[stop] = -1


_workers = _Workers()


def _after_fork_in_child():
    # a forked child has none of the parent's threads: start its own when it needs them
    global _workers
    _workers = _Workers()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Driver:
    """_drive(plan, net, work, opt, data, order, batch_size, nthreads, results): _drive_plan with
    the kernels of the network's dtype on nthreads threads (see _drive_plan); returns the number
    of minibatches completed."""

    def __call__(self, plan, net, work, opt, data, order, batch_size, nthreads, results):
        return self._run(plan, net, work, opt, data, order, batch_size, nthreads, results, 0)[0]

    def traced(self, plan, net, work, opt, data, order, batch_size, nthreads, results):
        """The same call, and where each thread's time went: (minibatches completed, cycles), cycles
        an int64 array (nthreads, 2 * len(plan) + 1, 2) of the time-stamp counter's cycles each
        thread spent, summed over the call's minibatches, per slot (the weight norm, then each
        phase of the plan and its statistics slot: _drive_plan) waiting for the earlier slots
        (column 0) and in the slot's work units, with the claims (column 1). A thread that started
        late has less, or zeros. The same results as an untraced call, bit for bit
        (benchmarks/step_trace.py)."""
        width = _trace_width(plan)
        done, nthreads, sync = self._run(plan, net, work, opt, data, order, batch_size, nthreads, results, width)
        nslots = 2 * plan.shape[0] + 1
        rows = sync[_sync_size(plan, nthreads):].reshape(nthreads, width)
        return done, rows[:, TRACE_PAD:TRACE_PAD + 2 * nslots].reshape(nthreads, nslots, 2).copy()

    def _run(self, plan, net, work, opt, data, order, batch_size, nthreads, results, trace_width):
        # -> (minibatches completed, thread count, sync array), with trace_width more int64 a thread
        # in the sync array (0: an untraced call). A call on no sample (to compile or load the
        # driver) runs on this thread alone: on several it would wake the workers for nothing, and
        # one that wakes after the call needs the GIL to return, which on busy cores can hold the
        # calling thread up for a scheduler slice.
        nthreads = max(int(nthreads), 1) if order.shape[0] else 1
        args = (plan, net, work, opt, data, order, batch_size, nthreads, results,
                network_kernels(net.params.dtype, net.sizes))
        sync = np.zeros(_sync_size(plan, nthreads) + nthreads * trace_width, np.int64)
        stop = _workers.run(args, nthreads, sync)
        return (stop - 1 if stop > 0 else (order.shape[0] + batch_size - 1) // batch_size), nthreads, sync

    @property
    def signatures(self):
        """The signatures _drive_plan is compiled for."""
        return _drive_plan.signatures


_drive = _Driver()


def network(net):
    """The Network bundle of an MLP (or anything with its attributes) for _drive."""
    return Network(net.params, net.w_off, net.b_off, net.sizes_array, ACTIVATION_CODES[net.activation],
                   ACTIVATION_CODES[net.output])


@intrinsic
def _forward_block_at(typingctx, addr, like):
    # the compiled _dense_forward_block for like's dtype (kernels(dtype).forward_block) as a
    # first-class function, from addr, the address of its C wrapper (_KernelRef.address): passed as a
    # _KernelRef, Numba would type and unbox the function in Python on every call (about 5 us, a
    # third of a one-row prediction); an integer costs nothing.
    fnty = kernels(like.dtype.name).forward_block._numba_type_

    def codegen(context, builder, sig, args):
        func = cgutils.create_struct_proxy(fnty)(context, builder)
        func.c_addr = builder.inttoptr(args[0], cgutils.voidptr_t)
        func.py_addr = cgutils.get_null_value(cgutils.voidptr_t)
        func.jit_addr = cgutils.get_null_value(cgutils.voidptr_t)  # null: calls go to c_addr
        return func._getvalue()
    return fnty(addr, like), codegen


# ---------------------------------------------------------------------------------------------
# Prediction: forward() and predict() of any number of rows
# ---------------------------------------------------------------------------------------------

# Samples a thread of _forward_rows carries through all layers at a time: their activations stay
# in its L2 while the weights stream past once (a multiple of 4, the samples of a tile).
FORWARD_CHUNK = 64


@_jit()
def _forward_rows(params, w_off, b_off, sizes, hidden, output, X, xcode, divisor, buf, outputs, batch, t, T,
                  forward_block_addr):
    # X (n, N_0 * itemsize) uint8: the bytes of the rows, their values uint8|float32|float64 by
    # xcode (_buffers.input_bytes: one compiled signature for every input dtype); buf
    # (FORWARD_CHUNK * (N_0 + ... + N_L),) and outputs (n, N_L) in params' dtype;
    # forward_block_addr: the address of the compiled _dense_forward_block or _dense_forward_loops
    # (network_kernels(dtype, sizes).forward_block.address()), called through it: linked in here, it would be
    # re-optimised and compiled again for this function and, in _forward_parallel, for its loop
    # body and each of that loop's wrappers.
    # outputs = a^L of thread t of T's rows: z^l = W^l a^{l-1} + b^l, a^l = sigma(z^l). Called on
    # the calling thread with t = 0, T = 1 for a few rows (no parallel region to wake), and by each
    # thread of _forward_parallel. The thread owns chunks of FORWARD_CHUNK rows (its rows of
    # outputs, and buf) and carries each chunk through every layer (no barrier between layers; the
    # chunk's activations stay in cache while W^l streams past once per chunk, where the driver
    # streams a whole batch of activations past every 4 rows of W^l). The same bits as the driver's
    # evaluation over batches of `batch` rows on T threads: every element goes through the same
    # _dense_forward_block loop (the same split of W^l's rows into blocks, from _chunk with the
    # thread count the driver would use for that batch, the loop chosen by the batch's size, and
    # samples in blocks of 4 from the batch's start). No fastmath here: the division by the divisor
    # rounds as NumPy's. Returns 0; 1 when X holds a NaN or an infinity, 2 when a value of X is
    # finite but infinite in params' dtype (the caller then reports it; the outputs are not valid).
    _wide_vectors()
    L = sizes.shape[0] - 1
    n = X.shape[0]
    M0 = sizes[0]
    chunk = FORWARD_CHUNK
    per_batch = (batch + chunk - 1) // chunk
    ntasks = (n + batch - 1) // batch * per_batch
    forward_block = _forward_block_at(forward_block_addr, params)
    bad = 0
    for task in range(t, ntasks, T):
        b0 = task // per_batch * batch
        bn = min(batch, n - b0)
        c0 = task % per_batch * chunk
        m = min(c0 + chunk, bn) - c0
        if m <= 0:
            continue
        zero = m - m  # computed, not a literal 0: no Literal[int] re-specialisation of the callees
        a_prev = _view2d(buf, zero, m, M0)
        got = _gather_checked(X, xcode, b0 + c0, a_prev, divisor)
        if got != 0:
            bad = max(bad, got)
            continue
        off = m * M0
        for l in range(1, L + 1):
            N = sizes[l]
            out = _view2d(buf, off, m, N)
            code = hidden if l < L else zero + IDENTITY
            W = _weights(params, w_off, sizes, l)
            bias = _biases(params, b_off, sizes, l)
            Tl = _region_threads(bn * N * sizes[l - 1], T)
            if _forward_takes_micro(N, sizes[l - 1], bn):
                # (every thread's share takes the micro-kernel, whose bits do not depend on the
                # split of the rows: all rows in one call, which packs a_prev once)
                forward_block(W, bias, a_prev, out, code, zero, N, bn, zero, zero + 1)
            else:
                for u in range(Tl):
                    j0, j1 = _chunk(N, np.int64(u), Tl)
                    forward_block(W, bias, a_prev, out, code, j0, j1, bn, zero, zero + 1)
            a_prev = out
            off += m * N
        for s in range(m):
            _output_activation(a_prev[s], outputs[b0 + c0 + s], output)
    return bad


@_inline()
def _gather_checked(X, xcode, r0, dst, divisor):
    # rows r0.. of X (bytes of uint8|float32|float64 values by xcode, as _gather_range; as many rows
    # as dst has) into dst = X / divisor in dst's dtype, without fastmath (the same rounding as
    # _gather_range); returns 0, 1 (a NaN or infinity in X) or 2 (no NaN or infinity in X, but a
    # value that overflows dst's dtype). Each row is converted and tested in one pass that
    # vectorises (x - x is 0 exactly when x is finite), and only a row that fails is looked at
    # value by value.
    dt = dst.dtype.type
    div = dt(divisor)
    status = 0
    for s in range(dst.shape[0]):
        raw = X[r0 + s]
        row = dst[s]
        bad = False
        if xcode == INPUT_FLOAT32:
            bad = _convert_row(raw.view(np.float32), row, div)
        elif xcode == INPUT_FLOAT64:
            bad = _convert_row(raw.view(np.float64), row, div)
        else:
            for k in range(row.shape[0]):
                row[k] = dt(raw[k]) / div  # (a byte over 255 or 1 is always finite)
        if bad:
            for k in range(row.shape[0]):
                if xcode == INPUT_FLOAT32:
                    value = np.float64(raw.view(np.float32)[k])
                else:
                    value = raw.view(np.float64)[k]
                if not math.isfinite(value):
                    status = 1
                elif not math.isfinite(np.float64(row[k])) and status == 0:
                    status = 2
    return status



@_inline()
def _convert_row(src, row, div):
    # row = src / div in row's dtype; whether a value of row is not finite (x - x is 0 exactly when
    # x is finite: one pass that vectorises)
    bad = False
    for k in range(row.shape[0]):
        x = row.dtype.type(src[k]) / div
        row[k] = x
        bad |= (x - x) != 0
    return bad


@_jit(parallel=True)
def _forward_parallel(params, w_off, b_off, sizes, hidden, output, X, xcode, divisor, work, outputs, batch,
                      nthreads, forward_block_addr, forward_rows):
    # work (nthreads, FORWARD_CHUNK * (N_0 + ... + N_L)), the rest as _forward_rows (forward_rows:
    # that kernel, forward_rows_kernel(dtype), called through its address): thread t runs
    # _forward_rows on its chunks of rows, into its row of work. Returns the worst status.
    status = np.empty(nthreads, np.int64)
    for t in prange(nthreads):
        status[t] = forward_rows(params, w_off, b_off, sizes, hidden, output, X, xcode, divisor, work[t], outputs,
                                 batch, np.int64(t), nthreads, forward_block_addr)
    worst = 0
    for t in range(nthreads):
        worst = max(worst, status[t])
    return worst


@functools.cache
def forward_rows_kernel(dtype):
    """_forward_rows for a network of `dtype` as a first-class function (_KernelRef), for
    _forward_parallel."""
    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    i64 = types.int64
    I1 = types.Array(i64, 1, "C")
    X = types.Array(types.uint8, 2, "C", readonly=True)
    sig = i64(types.Array(f, 1, "C"), I1, I1, I1, i64, i64, X, i64, types.float64, types.Array(f, 1, "C"),
              types.Array(f, 2, "C"), i64, i64, i64, i64)
    return _KernelRef(_forward_rows, sig)
