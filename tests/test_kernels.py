"""Every public kernel of fastmlp.kernels against the NumPy reference, on random data.

Shapes include a single unit, odd sizes (7, 33) and 100 inputs; inputs are 1-D (one sample) or
2-D with 1, 5 or 32 rows; float32 and float64.  The output dtype must equal the input dtype, the
inputs must not be modified (except the accumulators of accumulate_gradients and the parameters
of minibatch_step), and bad input must raise ValueError.
"""

import functools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference as ref
from tolerances import DTYPES, tol

from fastmlp import kernels as K

LAYER_SHAPES = [(1, 1), (7, 33), (33, 7), (100, 10)]          # (N_{l-1}, N_l)
BATCHES = [None, 1, 5, 32]                                     # None = one 1-D sample
HIDDEN = ["sigmoid", "relu", "tanh", "identity"]
ALL_ACTIVATIONS = HIDDEN + ["softmax"]
PAIRS = [("softmax", "ce"), ("softmax", "mse"), ("sigmoid", "mse"), ("identity", "mse"), ("sigmoid", "bce")]


def _ids(v):
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    if v is None:
        return "1d"
    if isinstance(v, type):
        return np.dtype(v).name
    return str(v)


def _rng(*key):
    """A generator seeded by the test's parameters (stable across runs, unlike hash())."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _lead(batch):
    return () if batch is None else (batch,)


def _assert_close(got, want, dtype, scale=1.0):
    t = tol(dtype)
    np.testing.assert_allclose(got, want, rtol=t["rtol"], atol=t["atol"] * max(scale, 1.0))


def _probs(rng, lead, n, dtype):
    """Valid softmax outputs (rows of probabilities) in the given dtype."""
    return ref.softmax(rng.normal(0, 2, lead + (n,))).astype(dtype)


def _targets(rng, kind, lead, n, output="softmax"):
    if kind == "index":
        return int(rng.integers(0, n)) if lead == () else rng.integers(0, n, lead)
    if output == "softmax":
        return rng.dirichlet(np.ones(n), size=lead if lead else None)
    if output == "sigmoid":
        return rng.uniform(0, 1, lead + (n,))
    return rng.normal(0, 1, lead + (n,))


def _float_target(target, dtype):
    """Float targets are passed in the dtype of the data; class indices as they are."""
    t = np.asarray(target)
    return t.astype(dtype) if np.issubdtype(t.dtype, np.floating) else target


# ------------------------------------------------------------------------------ dense_forward
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=_ids)
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=_ids)
def test_dense_forward(shape, batch, dtype):
    n_in, n_out = shape
    rng = _rng("dense", shape, batch, dtype)
    W = rng.normal(0, 1, (n_out, n_in)).astype(dtype)
    b = rng.normal(0, 1, n_out).astype(dtype)
    a = rng.normal(0, 1, _lead(batch) + (n_in,)).astype(dtype)
    copies = [W.copy(), b.copy(), a.copy()]
    z = K.dense_forward(W, b, a)
    assert z.shape == _lead(batch) + (n_out,)
    assert z.dtype == np.dtype(dtype)
    _assert_close(z, ref.dense_forward(W, b, a), dtype, scale=np.sqrt(n_in))
    for x, c in zip([W, b, a], copies):
        np.testing.assert_array_equal(x, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 9])
@pytest.mark.parametrize("rows", [(0, 1), (0, 3), (0, 4), (0, 5), (0, 9), (3, 9), (1, 2), (4, 4)], ids=_ids)
def test_dense_forward_rows_blocks(rows, n, dtype):
    """The private kernel on a thread's share of the rows: blocks of 4 rows x 4 or 2 samples (by
    the CPU's registers), a last partial block of samples, rows left over after the blocks of 4;
    rows outside the range are not touched."""
    _check_forward_rows("fwdrows", 9, rows, n, dtype)


def _check_forward_rows(tag, N, rows, n, dtype):
    """_dense_forward_rows on rows j0:j1 of a W (N, 37) against the reference; the other rows of
    out untouched."""
    from fastmlp import _kernels as P
    j0, j1 = rows
    rng = _rng(tag, rows, n, dtype)
    W = rng.normal(0, 1, (N, 37)).astype(dtype)
    b = rng.normal(0, 1, N).astype(dtype)
    a = rng.normal(0, 1, (n, 37)).astype(dtype)
    out = np.full((n, N), 7.0, dtype)
    P._dense_forward_rows(W, b, a, out, P.TANH, j0, j1)
    want = ref.activation_forward(ref.dense_forward(W, b, a), "tanh")
    _assert_close(out[:, j0:j1], want[:, j0:j1], dtype, scale=np.sqrt(37))
    assert np.all(out[:, :j0] == 7.0) and np.all(out[:, j1:] == 7.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("n", [1, 5, 6, 7, 15, 16, 17, 33])
@pytest.mark.parametrize("rows", [(0, 16), (0, 17), (2, 25), (5, 23), (0, 25), (7, 24)], ids=_ids)
def test_dense_forward_rows_of_16_or_more(rows, n, dtype):
    """Ranges of 16 rows or more (AVX2: the 6-row micro-kernel over panels of 64 bytes of samples,
    a last group of rows moved up onto the range's end, a last partial panel of samples)."""
    _check_forward_rows("fwdrows16", 25, rows, n, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("N, n", [(100, 37), (20, 200), (256, 16), (48, 48), (56, 130)], ids=_ids)
def test_forward_zmm_micro_kernel(N, n, dtype):
    """AVX-512: a layer of MICRO_FORWARD_MIN_INPUTS inputs or more takes the
    zmm micro-kernel (8 rows x 3 zmm; last panels of 1 or 2 vectors; W^T packed when a share has
    more samples than rows; with more rows, the sums over k in blocks of FORWARD_MICRO_KC, their
    partial sums stored between blocks). Against the reference; every thread split by rows or
    tiles, and slices of the minibatch, give the bits of one call (whichever of the two ways each
    share takes); rows outside the range untouched."""
    from fastmlp import _kernels as P
    if not P.FORWARD_MICRO_ZMM or P.MICRO_FORWARD_MIN_INPUTS < 0:
        pytest.skip("this CPU's forward pass takes no zmm micro-kernel")
    M = P.MICRO_FORWARD_MIN_INPUTS + 3
    assert M % P.FORWARD_MICRO_KC and M > P.FORWARD_MICRO_KC  # (blocks of k, a last partial one)
    rng = _rng("fwdzmm", N, n, dtype)
    W = rng.normal(0, 1, (N, M)).astype(dtype)
    b = rng.normal(0, 1, N).astype(dtype)
    a = rng.normal(0, 1, (n, M)).astype(dtype)
    assert P._forward_takes_micro(N, M, n)
    full = np.full((n, N), 7.0, dtype)
    P._dense_forward_block(W, b, a, full, P.TANH, 0, N, n, 0, 1)
    want = ref.activation_forward(ref.dense_forward(W, b, a), "tanh")
    _assert_close(full, want, dtype, scale=np.sqrt(M))
    for T in (2, 3):
        got = np.full((n, N), 7.0, dtype)
        for t in range(T):
            P._dense_forward_block(W, b, a, got, P.TANH, 0, N, n, t, T)
        np.testing.assert_array_equal(got, full)
    got = np.full((n, N), 7.0, dtype)
    for s0, s1 in [(0, n // 3), (n // 3, n)]:
        P._dense_forward_block(W, b, a[s0:s1], got[s0:s1], P.TANH, 0, N, n, 0, 1)
    np.testing.assert_array_equal(got, full)
    got = np.full((n, N), 7.0, dtype)
    P._dense_forward_block(W, b, a, got, P.TANH, 3, N - 5, n, 0, 1)
    np.testing.assert_array_equal(got[:, 3:N - 5], full[:, 3:N - 5])
    assert np.all(got[:, :3] == 7.0) and np.all(got[:, N - 5:] == 7.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("N, n, M", [(100, 37, 2051), (200, 64, 300), (20, 17, 5), (9, 130, 96), (97, 8, 2048)],
                         ids=_ids)
def test_forward_gather_gives_the_micro_kernels_bits(N, n, M, dtype):
    """The forward pass by the gather tile (_forward_gather: groups of 4 samples, the inputs zero
    for all 4 left out, W^T packed in panels of 384 bytes) gives the micro-kernel's bits
    (_forward_micro) on inputs with zeros (ReLU-like: columns off for whole groups, single zeros,
    -0.0), a last partial group of samples, any row range; no row outside the range written;
    against the reference."""
    from fastmlp import _kernels as P
    if not P.GATHER_ZMM:
        pytest.skip("this CPU takes no gather tile")
    rng = _rng("fwdgather", N, n, M, dtype)
    W = rng.normal(0, 1, (N, M)).astype(dtype)
    b = rng.normal(0, 1, N).astype(dtype)
    a = rng.normal(0, 1, (n, M)).astype(dtype)
    groups = -(-n // 4)
    off = np.repeat(rng.random((groups, M)) < 0.3, 4, axis=0)[:n]
    a[off | (rng.random((n, M)) < 0.3)] = 0
    a[rng.random((n, M)) < 0.05] = -0.0
    for code, name in ((P.RELU, "relu"), (P.TANH, "tanh")):
        want = ref.activation_forward(ref.dense_forward(W, b, a), name)
        for j0, j1 in [(0, N), (1, N - 3), (N - 8, N)]:
            micro = np.full((n, N), 7.0, dtype)
            P._forward_micro(W, b, a, micro, code, j0, j1)
            got = np.full((n, N), 7.0, dtype)
            P._forward_gather(W, b, a, got, code, j0, j1)
            np.testing.assert_array_equal(got, micro)
            assert np.all(got[:, :j0] == 7.0) and np.all(got[:, j1:] == 7.0)
            _assert_close(got[:, j0:j1], want[:, j0:j1], dtype, scale=np.sqrt(M))


@pytest.mark.parametrize("N, M, n, nthreads, dtype", [
    (512, 784, 128, 2, np.float32),   # too little work for the gather tile: none
    (512, 784, 512, 2, np.float32),   # a_prev larger than FORWARD_SPLIT_BYTES: by samples, 256 each
    (2048, 784, 256, 2, np.float32),  # by rows: all samples
    (2048, 2048, 200, 2, np.float32),  # more rows than samples: by rows, all 200
    (2048, 2048, 200, 1, np.float32),  # one thread: all 200
    (1100, 784, 250, 2, np.float64),  # by rows, all 250
    (200, 2048, 250, 2, np.float32),  # by samples, 128 and 122: only the first share
    (200, 2048, 200, 2, np.float32),  # by samples, 112 and 88: the micro-kernel, none grouped
    (100, 784, 256, 2, np.float32),   # too few units: the dot products
    (600, 40, 300, 2, np.float64),    # few inputs, enough units and samples
], ids=_ids)
def test_forward_grouped_samples_mirror_the_forward_pass(N, M, n, nthreads, dtype):
    """forward_grouped_samples (by which the benchmarks count the work the forward pass leaves
    out) names the samples that the driver's forward phase computes with the gather tile: with an
    infinite weight on an input that is zero for every sample, exactly those samples' sums leave
    0 * inf out and stay finite; every other path adds it and gets NaN."""
    from fastmlp import _kernels as P
    rng = _rng("grouped", N, M, n, nthreads, dtype)
    W = rng.normal(0, 1, (N, M)).astype(dtype)
    W[:, 3] = np.inf
    b = rng.normal(0, 1, N).astype(dtype)
    a = rng.random((n, M)).astype(dtype) + 0.5
    a[:, 3] = 0
    sizes = np.array([M, N], dtype=np.int64)
    T = P._phase_threads(P.FORWARD, 1, sizes, n, nthreads, np.dtype(dtype).itemsize)
    out = np.full((n, N), 7.0, dtype)
    for t in range(T):
        P._dense_forward_block(W, b, a, out, P.IDENTITY, 0, N, n, t, T)
    grouped = np.zeros(n, dtype=bool)
    for s0, s1 in P.forward_grouped_samples(N, M, n, nthreads, np.dtype(dtype).itemsize):
        grouped[s0:s1] = True
    np.testing.assert_array_equal(np.isfinite(out).all(axis=1), grouped)
    np.testing.assert_array_equal(np.isnan(out).all(axis=1), ~grouped)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_zmm_forward_tiles_give_the_avx2_tiles_bits(dtype):
    """The zmm tiles (3, 2 and 1 vectors) and the AVX2 assembly tile both sum each element over k
    in ascending order from zero (or from c: init 0), one FMA each: the same bits where they
    overlap, so that a model's numbers do not depend on which of the two its CPU takes."""
    from numba import njit
    from fastmlp import _kernels as P
    if not {"avx2", "fma", "avx512f"} <= P._target_features():
        pytest.skip("needs AVX-512 and AVX2 + FMA")
    one = np.dtype(dtype).type(1)
    size = np.dtype(dtype).itemsize
    wide = 192 // size

    @njit
    def tiles(x, d, c6, c8, init):
        k = x.shape[0]
        P._micro(one, k, P._addr(x, 0, 0), x.strides[0], P._addr(d, 0, 0), d.strides[0], size,
                 P._addr(c6, 0, 0), c6.strides[0], init)
        for v in range(3):
            c = c8[v]
            args = (one, k, P._addr(x, 0, 0), x.strides[0], P._addr(d, 0, 0), d.strides[0], size, P._addr(c, 0, 0),
                    c.strides[0], init)
            if v == 0:
                P._micro_zmm3(*args)
            elif v == 1:
                P._micro_zmm2(*args)
            else:
                P._micro_zmm1(*args)

    rng = _rng("zmmtiles", dtype)
    k = 301
    x = rng.normal(0, 1, (k, wide)).astype(dtype)
    d = rng.normal(0, 1, (8, k)).astype(dtype)
    for init in (1, 0):
        c6 = rng.normal(0, 1, (6, 64 // size)).astype(dtype)
        c8 = np.full((3, 8, wide), 5.0, dtype)
        c8[:, :6, :64 // size] = c6
        before = c8.copy()
        tiles(x, d, c6, c8, init)
        for v in range(3):
            np.testing.assert_array_equal(c8[v, :6, :64 // size], c6)
            used = (3 - v) * 64 // size
            if init:
                _assert_close(c8[v, :, :used], d @ x[:, :used], dtype, scale=np.sqrt(k))
            np.testing.assert_array_equal(c8[v, :, used:], before[v, :, used:])  # past its vectors untouched


@functools.cache
def _both_weight_gradients():
    """(compiled once for the tests that use it) the zmm weight gradient and the 4 x 4 tiles' on
    the same arguments, into two sets of outputs"""
    from numba import njit
    from fastmlp import _kernels as P

    @njit(fastmath=P.FAST)  # (as _weight_grad_block: the 4 x 4 tile's sums are FMAs by contraction)
    def both(delta, a, dW1, db1, dW2, db2, j0, j1, c0, c1, acc, order, W1, W2, fused):
        P._weight_grad_zmm(delta, a, dW1, db1, j0, j1, c0, c1, acc, True, order, W1, 0.05, 0.01, fused)
        P._weight_grad_panels(delta, a, dW2, db2, j0, j1, c0, c1, acc, True, order, W2, 0.05, 0.01, fused)
    return both


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("accumulate, fused", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("n, N, M", [(37, 29, 83), (128, 16, 100), (5, 9, 384), (64, 12, 7), (0, 8, 40)])
def test_zmm_weight_gradient_gives_the_tiles_bits(n, N, M, accumulate, fused, dtype):
    """The weight gradient's zmm micro-kernel (_weight_grad_zmm: 4 rows x up to 6 zmm, gathered
    samples) and the 4 x 4 zmm tile (_weight_grad_panels) leave out the same samples and sum each
    element over the rest in ascending order from zero: the same bits in dW, db and (fused: plain
    SGD's step in the tile) W, on ReLU-like deltas with whole groups of 4 rows off for some
    samples, rows grouped in a permuted order, panels of every width (1 to 6 vectors), a last
    partial group of rows, and a share of rows and columns in the middle (the rest untouched);
    and both match the textbook's delta^T a."""
    from fastmlp import _kernels as P
    if P.VECTOR_ISA != "avx512":
        pytest.skip("needs AVX-512")
    both = _both_weight_gradients()
    rng = _rng("zmm wgrad", n, N, M, dtype)
    delta = rng.normal(0, 1, (n, N)).astype(dtype)
    delta[rng.random((n, N)) < 0.4] = 0
    off = rng.random((n, N // 4)) < 0.3  # whole groups of 4 rows off
    delta[:, :N // 4 * 4][np.repeat(off, 4, axis=1)] = 0
    a = rng.normal(0, 1, (n, M)).astype(dtype)
    order = np.arange(N)
    order[:8] = order[:8][::-1].copy() if N >= 8 else order[:8]
    dW0 = rng.normal(0, 1, (N, M)).astype(dtype)
    db0 = rng.normal(0, 1, N).astype(dtype)
    W0 = rng.normal(0, 1, (N, M)).astype(dtype)
    for j0, j1, c0, c1 in [(0, N, 0, M), (1, N - 2, 3, M - 1)]:
        dW1, dW2, db1, db2, W1, W2 = dW0.copy(), dW0.copy(), db0.copy(), db0.copy(), W0.copy(), W0.copy()
        both(delta, a, dW1, db1, dW2, db2, j0, j1, c0, c1, accumulate, order, W1, W2, fused)
        np.testing.assert_array_equal(dW1, dW2)
        np.testing.assert_array_equal(db1, db2)
        np.testing.assert_array_equal(W1, W2)
        rows, cols = slice(j0, j1), slice(c0, c1)
        want = delta.astype(np.float64).T @ a.astype(np.float64) + (dW0 if accumulate else 0)
        if fused:
            np.testing.assert_array_equal(dW1, dW0)  # not written
            got = (W0 - W1)[rows, cols] / 0.05 - 0.01 * W0[rows, cols]
            _assert_close(got, want[rows, cols], dtype, scale=30 * np.sqrt(max(n, 1)))
        else:
            _assert_close(dW1[rows, cols], want[rows, cols], dtype, scale=np.sqrt(max(n, 1)))
        outside = np.ones((N, M), bool)
        outside[rows, cols] = False
        np.testing.assert_array_equal(dW1[outside], dW0[outside])
        np.testing.assert_array_equal(W1[outside], W0[outside])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 21), N=st.integers(1, 70), zeros=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1),
       dtype=st.sampled_from(DTYPES))
def test_pack_sample_groups_against_the_obvious_loop(n, N, zeros, seed, dtype):
    """_pack_sample_groups (16 columns at a time by vcompressps on AVX-512 CPUs for float32, the
    rest one by one) against a loop over each group of 4 samples in the order `samples` (a last
    partial group repeats its last sample) and each column, kept when any of the 4 is nonzero."""
    from fastmlp import _kernels as P
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, N)).astype(dtype)
    X[rng.random((n, N)) < zeros] = 0.0
    X[rng.random((n, N)) < 0.1] = -0.0
    samples = rng.permutation(n)
    d, rows, kept = P._pack_sample_groups(X, samples)
    for g in range((n + 3) // 4):
        group = [samples[min(4 * g + q, n - 1)] for q in range(4)]
        want = [j for j in range(N) if any(X[s, j] != 0 for s in group)]
        assert kept[g] == len(want)
        assert rows[g, :kept[g]].tolist() == want
        for i, j in enumerate(want):
            assert d[g, i].tolist() == [X[s, j] for s in group]


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_packing_leaves_out_signed_zeros_and_keeps_nan(dtype):
    """The packings that leave out what adds nothing (_pack_row_group: the samples whose 4 deltas
    of a group of rows are all zero; _pack_sample_groups: the columns whose 4 entries of a group of
    samples are) test the floats' bits without the sign (_magnitude_bits): +0 and -0 are left out,
    as `x != 0` leaves them; NaN, infinities, subnormals and the rest are kept."""
    from numba import njit
    from fastmlp import _kernels as P

    @njit
    def nonzero(x, out):
        for i in range(x.shape[0]):
            out[i] = P._magnitude_bits(x[i]) != 0

    info = np.finfo(dtype)
    special = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, info.smallest_subnormal,
                        -info.smallest_subnormal, info.tiny, 1.0, -1.0, info.max, -info.max], dtype)
    got = np.zeros(special.size, bool)
    nonzero(special, got)
    np.testing.assert_array_equal(got, special != 0)

    rng = _rng("packing zeros", dtype)
    n, N = 23, 37  # partial groups of samples and of rows (and of the packing's blocks of 16 columns)
    X = rng.choice(special, size=(n, N)).astype(dtype)
    X[rng.random((n, N)) < 0.7] = 0.0
    X[rng.random((n, N)) < 0.5] *= -1  # -0 among the zeros
    X[:4, :4] = -0.0  # a whole group of -0 and +0
    X[1, 2] = 0.0
    nz = X != 0
    d, rows, kept = P._pack_sample_groups(X, np.arange(n))
    for g in range((n + 3) // 4):
        group = np.arange(4 * g, min(4 * g + 4, n))
        want = np.flatnonzero(nz[group].any(axis=0))
        np.testing.assert_array_equal(rows[g, :kept[g]], want)
        np.testing.assert_array_equal(d[g, :kept[g], :group.size].view(np.uint8),
                                      X[group][:, want].T.copy().view(np.uint8))  # NaN's bits too
    db = np.zeros(N, dtype)
    groups, d, rows, cnts, sel = P._packed_row_groups(X, db, 0, N, np.arange(N), False, True, 3)
    for g in range(groups):
        units = np.arange(4 * g, min(4 * g + 4, N))
        want = np.flatnonzero(nz[:, units].any(axis=1))
        np.testing.assert_array_equal(rows[g, :cnts[g]], 3 * want)  # times the unit asked for
        np.testing.assert_array_equal(d[g, :cnts[g], :units.size].view(np.uint8),
                                      X[want][:, units].copy().view(np.uint8))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_tile_kernels_give_the_same_bits_whatever_the_split(dtype):
    """An element's sum does not depend on which rows, columns or samples a call covers (the
    threads' shares): the weight gradient split by rows and by columns, the delta recursion by
    columns and (AVX2 micro-kernel) the forward pass by samples, against one call over everything."""
    from fastmlp import _kernels as P
    rng = _rng("split", dtype)
    n, N, M = 37, 29, 83
    delta = rng.normal(0, 1, (n, N)).astype(dtype)
    a = rng.normal(0, 1, (n, M)).astype(dtype)
    W = rng.normal(0, 1, (N, M)).astype(dtype)
    b = rng.normal(0, 1, N).astype(dtype)
    full, fb = np.zeros((N, M), dtype), np.zeros(N, dtype)
    rows = np.arange(N)
    P._weight_grad_block(delta, a, full, fb, 0, N, 0, M, False, True, rows, full, 0.0, 0.0, False)
    for cut in [(0, 7, 29), (0, 12, 29)]:
        got, gb = np.zeros((N, M), dtype), np.zeros(N, dtype)
        for j0, j1 in zip(cut[:-1], cut[1:]):
            P._weight_grad_block(delta, a, got, gb, j0, j1, 0, M, False, True, rows, got, 0.0, 0.0, False)
        np.testing.assert_array_equal(got, full)
        np.testing.assert_array_equal(gb, fb)
    got = np.zeros((N, M), dtype)
    for c0, c1 in [(0, 5), (5, 40), (40, 83)]:
        P._weight_grad_block(delta, a, got, gb, 0, N, c0, c1, False, False, rows, got, 0.0, 0.0, False)
    np.testing.assert_array_equal(got, full)
    z = rng.normal(0, 1, (n, M)).astype(dtype)
    full = np.zeros((n, M), dtype)
    P._delta_backward_cols(W, delta, z, P.TANH, False, full, 0, M, np.arange(n))
    got = np.zeros((n, M), dtype)
    for c0, c1 in [(0, 5), (5, 40), (40, 83)]:
        P._delta_backward_cols(W, delta, z, P.TANH, False, got, c0, c1, np.arange(n))
    np.testing.assert_array_equal(got, full)
    if P.TILE_ROWS != P.MICRO_ROWS:
        return  # (the other blockings' forward pass takes samples in blocks of 4 or 2, then singly)
    full = np.zeros((n, N), dtype)
    P._dense_forward_rows(W, b, a, full, P.TANH, 0, N)
    got = np.zeros((n, N), dtype)
    for s0, s1 in [(0, 3), (3, 20), (20, 37)]:  # (and, AVX2, the other orientation of the tiles)
        P._dense_forward_block(W, b, a[s0:s1], got[s0:s1], P.TANH, 0, N, n, 0, 1)  # slices of one minibatch
    np.testing.assert_array_equal(got, full)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_the_kernels_without_the_micro_kernel(dtype):
    """_dense_forward_loops and _delta_backward_tiles, which the driver is handed for a network that
    takes no AVX2 micro-kernel (_kernels.micro_layers): against the reference, on thread shares by
    rows and (a_prev over FORWARD_SPLIT_BYTES) by samples, every element written once; a layer
    that does not take the micro-kernel gets the bits of _dense_forward_block. The delta recursion
    also bit for bit against _delta_backward_cols, whose micro-kernel (AVX2) gives the same bits as
    the tiles."""
    from fastmlp import _kernels as P

    def takes_micro(N, M, n):  # (_kernels._forward_takes_micro)
        return N >= P.MICRO_FORWARD_MIN and n >= P.MICRO_FORWARD_MIN and (
            0 <= P.MICRO_FORWARD_MIN_INPUTS <= M
            or (P.GATHER_ZMM and N >= P.FORWARD_GATHER_MIN_UNITS and N * n >= P.FORWARD_GATHER_MIN_WORK
                and n >= P.FORWARD_GATHER_MIN_SAMPLES))
    rng = _rng("nomicro", dtype)
    for N, M, n in [(12, 83, 37), (40, 83, 9), (13, 784, 400), (300, 100, 64), (64, 1100, 40)]:
        W = rng.normal(0, 1, (N, M)).astype(dtype)
        b = rng.normal(0, 1, N).astype(dtype)
        a = rng.normal(0, 1, (n, M)).astype(dtype)
        want = ref.activation_forward(ref.dense_forward(W, b, a), "tanh")
        for T in (1, 2, 3):
            got = np.full((n, N), 7.0, dtype)
            for t in range(T):
                P._dense_forward_loops(W, b, a, got, P.TANH, 0, N, n, t, T)
            assert not np.any(got == 7.0)
            _assert_close(got, want, dtype, scale=np.sqrt(M))
            if not takes_micro(N, M, n):
                block = np.full((n, N), 7.0, dtype)
                for t in range(T):
                    P._dense_forward_block(W, b, a, block, P.TANH, 0, N, n, t, T)
                np.testing.assert_array_equal(got, block)
    for n, N, M in [(7, 40, 83), (5, 2100, 70), (13, 300, 150)]:
        W = rng.normal(0, 1, (N, M)).astype(dtype)
        delta = rng.normal(0, 1, (n, N)).astype(dtype)
        z = rng.normal(0, 1, (n, M)).astype(dtype)
        full = ref.delta_backward(W, delta, z, "tanh")
        for i0, i1 in [(0, M), (0, M // 2), (M // 2, M), (3, M - 5)]:
            want, got = np.full((n, M), 7.0, dtype), np.full((n, M), 7.0, dtype)
            P._delta_backward_cols(W, delta, z, P.TANH, False, want, i0, i1, np.arange(n))
            P._delta_backward_tiles(W, delta, z, P.TANH, False, got, i0, i1, np.arange(n))
            _assert_close(got[:, i0:i1], full[:, i0:i1], dtype, scale=np.sqrt(N))
            np.testing.assert_array_equal(got, want)
            assert np.all(got[:, :i0] == 7.0) and np.all(got[:, i1:] == 7.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_the_delta_recursion_leaves_out_zero_deltas_exactly(dtype):
    """The delta recursion leaves out the j whose deltas are zero for a whole group of samples (ReLU
    units off): with small integers every product and sum is exact, so the result must equal the
    lecture's (W^{l+1})^T delta^{l+1} times sigma' bit for bit, whichever j a group keeps (none, all,
    whole blocks of rows of W left out, groups cut short by n), on column shares of threads, with
    the samples grouped in any order; and the micro-kernel (AVX2) and the tiles agree."""
    from fastmlp import _kernels as P
    rng = _rng("deltaskip", dtype)
    # (from DELTA_PACK_MIN_GROUPS groups of 4 samples, 64, the tiles read a copy of W's panel)
    for n, N, M in [(5, 2100, 70), (13, 2048, 150), (7, 300, 83), (9, 40, 20), (1, 2048, 16), (70, 2048, 150),
                    (67, 300, 83)]:
        W = rng.integers(-4, 5, (N, M)).astype(dtype)
        delta = rng.integers(-4, 5, (n, N)).astype(dtype)
        delta[rng.random((n, N)) < 0.5] = 0
        for g in (4, 6):  # units off for whole groups of g samples
            off = np.repeat(rng.random((n // g + 1, N)) < 0.2, g, axis=0)[:n]
            delta[off] = 0
        delta[:, N // 10:N // 10 + 200] = 0
        delta[:min(n, 6), N // 2:] = 0
        z = rng.integers(-3, 4, (n, M)).astype(dtype)
        want = (delta.astype(np.float64) @ W.astype(np.float64)) * (z > 0)
        assert want.any()
        orders = [np.arange(n), np.arange(n)[::-1].copy(), rng.permutation(n)]
        for i0, i1 in [(0, M), (0, M // 2), (M // 2, M), (3, M - 5)]:
            for samples in orders:
                got, tiles = np.full((n, M), 7.0, dtype), np.full((n, M), 7.0, dtype)
                P._delta_backward_cols(W, delta, z, P.RELU, False, got, i0, i1, samples)
                np.testing.assert_array_equal(got[:, i0:i1], want[:, i0:i1])
                assert np.all(got[:, :i0] == 7.0) and np.all(got[:, i1:] == 7.0)
                if P.TILE_ROWS != P.MICRO_ROWS:
                    P._delta_backward_tiles(W, delta, z, P.RELU, False, tiles, i0, i1, samples)
                    np.testing.assert_array_equal(tiles, got)



@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_the_delta_recursion_gives_the_same_bits_whatever_the_order_of_its_samples(dtype):
    """The driver groups the samples of the delta recursion's tiles by label (_sample_order): each
    element is still summed over j in ascending order, leaving out only zero terms, so rounded
    values (random floats, not small integers) come out bit for bit the same for every order, on
    the micro-kernel's sizes (AVX2) and the tiles'."""
    from fastmlp import _kernels as P
    rng = _rng("deltaorder", dtype)
    for n, N, M in [(13, 2048, 150), (30, 300, 83), (7, 40, 20), (66, 300, 83)]:
        W = rng.normal(0, 1, (N, M)).astype(dtype)
        delta = rng.normal(0, 1, (n, N)).astype(dtype)
        labels = rng.integers(0, 3, n)
        # units off for every sample of a class half the time: sorted by label, whole groups are off
        off = rng.random((3, N)) < 0.5
        delta[off[labels]] = 0
        z = rng.normal(0, 1, (n, M)).astype(dtype)
        want = np.full((n, M), 7.0, dtype)
        P._delta_backward_cols(W, delta, z, P.RELU, False, want, 0, M, np.arange(n))
        _assert_close(want, ref.delta_backward(W, delta, z, "relu"), dtype, scale=np.sqrt(N))
        for samples in (P._sample_order(labels, np.arange(n), n, 3, False), rng.permutation(n)):
            for i0, i1 in [(0, M), (3, M - 5)]:
                got = np.full((n, M), 7.0, dtype)
                P._delta_backward_cols(W, delta, z, P.RELU, False, got, i0, i1, samples)
                np.testing.assert_array_equal(got[:, i0:i1], want[:, i0:i1])
                if P.TILE_ROWS != P.MICRO_ROWS:
                    tiles = np.full((n, M), 7.0, dtype)
                    P._delta_backward_tiles(W, delta, z, P.RELU, False, tiles, i0, i1, samples)
                    np.testing.assert_array_equal(tiles, got)


def test_the_samples_of_the_delta_recursion_are_ordered_by_label():
    """_sample_order, by hand: the minibatch's samples s take the labels of their data set rows
    idx[s]; a stable counting sort by label, or the minibatch's order when the data has targets."""
    from fastmlp import _kernels as P
    labels = np.array([2, 0, 1, 0, 2])  # of the data set's rows
    idx = np.array([4, 3, 2, 1, 0])  # the minibatch: its samples' labels are 2, 0, 1, 0, 2
    assert P._sample_order(labels, idx, 5, 3, False).tolist() == [1, 3, 2, 0, 4]
    assert P._sample_order(labels, idx, 3, 3, False).tolist() == [1, 2, 0]  # the first 3 samples
    assert P._sample_order(labels, idx, 5, 3, True).tolist() == [0, 1, 2, 3, 4]
    assert P._sample_order(labels, idx, 0, 3, False).tolist() == []

# ------------------------------------------------------------------------ activation_forward
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=_ids)
@pytest.mark.parametrize("n", [1, 7, 33, 100])
@pytest.mark.parametrize("activation", ALL_ACTIVATIONS)
def test_activation_forward(activation, n, batch, dtype):
    rng = _rng("act", activation, n, batch, dtype)
    z = rng.normal(0, 3, _lead(batch) + (n,)).astype(dtype)
    z_copy = z.copy()
    a = K.activation_forward(z, activation)
    assert a.shape == z.shape
    assert a.dtype == np.dtype(dtype)
    _assert_close(a, ref.activation_forward(z, activation), dtype, scale=3.0)
    np.testing.assert_array_equal(z, z_copy)
    if activation == "softmax":
        np.testing.assert_allclose(np.sum(a, axis=-1), 1.0, rtol=1e-5 if dtype == np.float32
                                   else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=_ids)
@pytest.mark.parametrize("n", [1, 7, 33, 100])
@pytest.mark.parametrize("activation", HIDDEN)
def test_activation_backward(activation, n, batch, dtype):
    rng = _rng("actb", activation, n, batch, dtype)
    z = rng.normal(0, 3, _lead(batch) + (n,)).astype(dtype)
    z_copy = z.copy()
    d = K.activation_backward(z, activation)
    assert d.shape == z.shape
    assert d.dtype == np.dtype(dtype)
    _assert_close(d, ref.activation_backward(z, activation), dtype)
    np.testing.assert_array_equal(z, z_copy)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_relu_derivative_at_zero_is_zero(dtype):
    z = np.array([-1.0, 0.0, 1.0, -0.0], dtype=dtype)
    np.testing.assert_array_equal(K.activation_backward(z, "relu"), [0.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(K.activation_forward(z, "relu"), [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_sigmoid_softmax_tanh_are_stable_for_large_inputs(dtype):
    big = 80.0 if dtype == np.float32 else 700.0     # e^big is finite, e^(2 big) is not
    z = np.array([[-1000.0, -big, 0.0, big, 1000.0]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise"):
        want_sig = ref.sigmoid(z)
    for name in ["sigmoid", "tanh", "softmax"]:
        a = K.activation_forward(z, name)
        assert np.all(np.isfinite(a)), (name, a)
    np.testing.assert_allclose(K.activation_forward(z, "sigmoid"), want_sig, atol=1e-7)
    np.testing.assert_allclose(K.activation_forward(z, "tanh"), np.tanh(z.astype(float)),
                               atol=1e-7)
    sm = K.activation_forward(np.array([1000.0, 1000.0, -1000.0], dtype=dtype), "softmax")
    np.testing.assert_allclose(sm, [0.5, 0.5, 0.0], atol=1e-7)
    d = K.activation_backward(z, "sigmoid")
    assert np.all(np.isfinite(d))
    np.testing.assert_allclose(d[0, [0, 4]], 0.0, atol=1e-30)


# ------------------------------------------------------------------------------ loss_forward
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=_ids)
@pytest.mark.parametrize("kind", ["index", "float"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("n", [2, 10, 33])
def test_loss_forward(n, loss, kind, batch, dtype):
    rng = _rng("loss", n, loss, kind, batch, dtype)
    yhat = _probs(rng, _lead(batch), n, dtype)
    target = _float_target(_targets(rng, kind, _lead(batch), n), dtype)
    c = K.loss_forward(yhat, target, loss)
    assert np.shape(c) == _lead(batch)
    want = ref.loss_forward(yhat, target, loss)
    _assert_close(np.asarray(c), want, dtype, scale=float(np.max(np.abs(want))))
    assert np.asarray(c).dtype == np.dtype(dtype), "same dtype in = dtype out"


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
def test_loss_forward_accepts_integer_label_dtypes(label_dtype):
    rng = _rng("labels", label_dtype)
    yhat = _probs(rng, (5,), 10, np.float64)
    labels = rng.integers(0, 10, 5).astype(label_dtype)
    np.testing.assert_allclose(K.loss_forward(yhat, labels, "ce"),
                               ref.loss_forward(yhat, labels.astype(np.int64), "ce"), rtol=1e-12)


# ------------------------------------------------------------------------------ output_delta
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=_ids)
@pytest.mark.parametrize("kind", ["index", "float"])
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("n", [1, 7, 10])
def test_output_delta(n, output, loss, kind, batch, dtype):
    if output == "softmax" and n == 1:
        n = 2                                   # a one-class softmax is constant; skip that
    rng = _rng("delta", n, output, loss, kind, batch, dtype)
    z = rng.normal(0, 2, _lead(batch) + (n,)).astype(dtype)
    yhat = K.activation_forward(z, output)
    target = _float_target(_targets(rng, kind, _lead(batch), n, output), dtype)
    copies = [z.copy(), yhat.copy()]
    d = K.output_delta(z, yhat, target, output, loss)
    assert d.shape == z.shape
    assert d.dtype == np.dtype(dtype)
    if loss == "bce":
        # the reference divides by 1 - yhat: give it yhat from z in float64, not the rounded yhat
        z64 = z.astype(np.float64)
        want = ref.output_delta(z64, ref.activation_forward(z64, output), target, output, loss)
    else:
        want = ref.output_delta(z, yhat, target, output, loss)
    _assert_close(d, want, dtype)
    np.testing.assert_array_equal(z, copies[0])
    np.testing.assert_array_equal(yhat, copies[1])


def test_output_delta_softmax_ce_is_yhat_minus_onehot():
    """Lecture: delta_i = yhat_t - 1 if i == t, yhat_i otherwise."""
    z = np.array([[0.5, -1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    yhat = K.activation_forward(z, "softmax")
    d = K.output_delta(z, yhat, np.array([2, 0]), "softmax", "ce")
    want = yhat.copy()
    want[0, 2] -= 1.0
    want[1, 0] -= 1.0
    np.testing.assert_allclose(d, want, rtol=1e-14, atol=1e-16)


# ---------------------------------------------------------------------------- delta_backward
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=_ids)
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=_ids)     # (N_l, N_{l+1})
@pytest.mark.parametrize("activation", HIDDEN)
def test_delta_backward(activation, shape, batch, dtype):
    n, n_next = shape
    rng = _rng("deltab", activation, shape, batch, dtype)
    W_next = rng.normal(0, 1, (n_next, n)).astype(dtype)
    delta_next = rng.normal(0, 1, _lead(batch) + (n_next,)).astype(dtype)
    z = rng.normal(0, 2, _lead(batch) + (n,)).astype(dtype)
    copies = [W_next.copy(), delta_next.copy(), z.copy()]
    d = K.delta_backward(W_next, delta_next, z, activation)
    assert d.shape == z.shape
    assert d.dtype == np.dtype(dtype)
    _assert_close(d, ref.delta_backward(W_next, delta_next, z, activation), dtype,
                  scale=np.sqrt(n_next))
    for x, c in zip([W_next, delta_next, z], copies):
        np.testing.assert_array_equal(x, c)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("n", [1, 3, 4, 6, 10, 33])
@pytest.mark.parametrize("cols", [(0, 150), (0, 76), (76, 150), (0, 64), (64, 128), (13, 14), (5, 70),
                                  (100, 150), (3, 3)], ids=_ids)
def test_delta_backward_column_ranges(cols, n, dtype):
    """The private kernel on a thread's share of the columns: register tiles of 64 (float32) or 32
    (float64) columns, a last tile moved left onto the range's end, a range narrower than a tile,
    partial blocks of samples; columns outside the range are not touched."""
    _check_delta_backward_cols(cols, 150, n, dtype)


def _tile(dtype):
    """Columns of the kernels' register tile for this dtype (TILE_BYTES depends on the CPU)."""
    from fastmlp import _kernels as P
    return P.TILE_BYTES // np.dtype(dtype).itemsize


def _rel(v):
    """Test id of a tile-relative position (tiles, extra) or range of two: e.g. 1w+2, 0w+3-1w+2."""
    if v is None:
        return "all"
    if isinstance(v[0], tuple):
        return "-".join(map(_rel, v))
    return f"{v[0]}w{v[1]:+d}"


def _at(spec, w):
    """(tiles, extra) -> tiles * w + extra: a column position relative to the tile width w."""
    return spec[0] * w + spec[1]


# Column ranges around the tile width w, whatever it is: narrower than a tile (by one, a single
# column, none), exactly one and two tiles, one past, a last partial tile moved left (over the
# range's start), ranges starting inside a tile.
AROUND_TILE = [((0, 0), (0, 1)), ((0, 0), (1, -1)), ((0, 0), (1, 0)), ((0, 0), (1, 1)), ((0, 3), (1, 2)),
               ((1, 0), (2, 0)), ((0, 0), (2, 0)), ((0, 5), (2, 7)), ((1, 1), (3, -1)), ((2, 3), (2, 3)),
               ((0, 0), (3, 5))]


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("n", [1, 3, 4, 5, 6, 7, 9, 13])
@pytest.mark.parametrize("cols", AROUND_TILE, ids=_rel)
def test_delta_backward_columns_around_the_tile_width(cols, n, dtype):
    """As above, with column ranges placed relative to this machine's register tile width."""
    w = _tile(dtype)
    _check_delta_backward_cols((_at(cols[0], w), _at(cols[1], w)), 3 * w + 9, n, dtype)


def _check_delta_backward_cols(cols, m, n, dtype):
    from fastmlp import _kernels as P
    i0, i1 = cols
    n_next = 21
    rng = _rng("cols", cols, n, dtype)
    W_next = rng.normal(0, 1, (n_next, m)).astype(dtype)
    delta_next = rng.normal(0, 1, (n, n_next)).astype(dtype)
    z = rng.normal(0, 2, (n, m)).astype(dtype)
    out = np.full((n, m), 7.0, dtype)
    P._delta_backward_cols(W_next, delta_next, z, P.TANH, False, out, i0, i1, np.arange(n))
    want = ref.delta_backward(W_next, delta_next, z, "tanh")
    _assert_close(out[:, i0:i1], want[:, i0:i1], dtype, scale=np.sqrt(n_next))
    assert np.all(out[:, :i0] == 7.0) and np.all(out[:, i1:] == 7.0)


# ---------------------------------------------------------------------- accumulate_gradients
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", BATCHES, ids=_ids)
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=_ids)
def test_accumulate_gradients(shape, batch, dtype):
    n_in, n_out = shape
    rng = _rng("acc", shape, batch, dtype)
    delta = rng.normal(0, 1, _lead(batch) + (n_out,)).astype(dtype)
    a_prev = rng.normal(0, 1, _lead(batch) + (n_in,)).astype(dtype)
    dW = rng.normal(0, 1, (n_out, n_in)).astype(dtype)        # accumulates onto what is there
    db = rng.normal(0, 1, n_out).astype(dtype)
    want_W, want_b = dW.astype(np.float64), db.astype(np.float64)
    ref.accumulate_gradients(delta, a_prev, want_W, want_b)
    copies = [delta.copy(), a_prev.copy()]
    assert K.accumulate_gradients(delta, a_prev, dW, db) is None
    assert dW.dtype == np.dtype(dtype) and db.dtype == np.dtype(dtype)
    rows = 1 if batch is None else batch
    _assert_close(dW, want_W, dtype, scale=np.sqrt(rows) * 3)
    _assert_close(db, want_b, dtype, scale=np.sqrt(rows) * 3)
    np.testing.assert_array_equal(delta, copies[0])
    np.testing.assert_array_equal(a_prev, copies[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("n", [1, 3, 5, 10, 33])
@pytest.mark.parametrize("m, cols", [(5, None), (63, None), (100, None), (150, None), (150, (0, 52)),
                                     (150, (52, 100)), (150, (100, 150)), (150, (70, 71)), (150, (3, 3)),
                                     (40, (8, 36))], ids=_ids)
@pytest.mark.parametrize("rows", [(0, 11), (0, 4), (4, 11), (3, 10), (6, 7), (2, 2)], ids=_ids)
def test_weight_grad_block_ranges(rows, m, cols, n, accumulate, dtype):
    """The private kernel on a thread's share of the rows or of the columns: groups of 4 rows (a
    last partial group), register tiles of 64 (float32) or 32 (float64) columns, a last tile moved
    left (past the start of a column range), fewer columns than a tile; zero deltas (skipped
    samples); elements outside the block are not touched, and db only with with_bias."""
    _check_weight_grad_block(rows, m, cols, n, accumulate, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("m, cols", [((0, 1), None), ((1, -1), None), ((1, 0), None), ((1, 1), None),
                                     ((2, 5), None), ((3, 7), ((0, 3), (1, 2))), ((3, 7), ((1, 1), (2, 9))),
                                     ((3, 7), ((2, 3), (3, 7))), ((3, 7), ((1, 0), (1, 1)))],
                         ids=_rel)
@pytest.mark.parametrize("rows", [(0, 11), (3, 10), (6, 7), (5, 11), (0, 6)], ids=_ids)
def test_weight_grad_block_around_the_tile_width(rows, m, cols, n, accumulate, dtype):
    """As above, with widths and column ranges placed relative to this machine's register tile."""
    w = _tile(dtype)
    cols = None if cols is None else (_at(cols[0], w), _at(cols[1], w))
    _check_weight_grad_block(rows, _at(m, w), cols, n, accumulate, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("cols", [None, (1, 4), (0, 2), (2, 5)], ids=_ids)
@pytest.mark.parametrize("rows", [(0, 11), (3, 10), (6, 7)], ids=_ids)
def test_weight_grad_block_reads_panels_in_place(rows, cols, accumulate, dtype):
    """Rows of a_prev an odd number of 64-byte lines apart (5 tiles wide, as 784 float32 inputs
    are 49 lines): the AVX2 micro-kernel reads a_prev's column panels in place instead of packing
    them; column ranges in whole tiles and (1.5 to 4 tiles) with a packed partial panel."""
    w = _tile(dtype)
    cols = None if cols is None else (cols[0] * w + (w // 2 if cols == (1, 4) else 0), cols[1] * w)
    _check_weight_grad_block(rows, 5 * w, cols, 33, accumulate, dtype)


def _check_weight_grad_block(rows, m, cols, n, accumulate, dtype):
    from fastmlp import _kernels as P
    j0, j1 = rows
    c0, c1 = cols or (0, m)
    N = 11
    rng = _rng("wgrad", rows, m, cols, n, accumulate, dtype)
    delta = rng.normal(0, 1, (n, N)).astype(dtype)
    delta[rng.random((n, N)) < 0.4] = 0  # ReLU units that are off for some samples
    a_prev = rng.normal(0, 1, (n, m)).astype(dtype)
    dW = rng.normal(0, 1, (N, m)).astype(dtype)
    db = rng.normal(0, 1, N).astype(dtype)
    dW0, db0 = dW.copy(), db.copy()
    with_bias = cols is None
    # the rows grouped in a shuffled order (one block of P.GROUP_BLOCK: any permutation of the 11)
    order = rng.permutation(N).astype(np.int64)
    P._weight_grad_block(delta, a_prev, dW, db, j0, j1, c0, c1, accumulate, with_bias, order, dW, 0.0, 0.0, False)
    want_W = dW0.astype(np.float64) if accumulate else np.zeros((N, m))
    want_b = db0.astype(np.float64) if accumulate else np.zeros(N)
    ref.accumulate_gradients(delta, a_prev, want_W, want_b)
    _assert_close(dW[j0:j1, c0:c1], want_W[j0:j1, c0:c1], dtype, scale=np.sqrt(n))
    if with_bias:
        _assert_close(db[j0:j1], want_b[j0:j1], dtype, scale=np.sqrt(n))
        outside = np.r_[0:j0, j1:N]
        np.testing.assert_array_equal(db[outside], db0[outside])
    else:
        np.testing.assert_array_equal(db, db0)
    inside = np.zeros((N, m), bool)
    inside[j0:j1, c0:c1] = True
    np.testing.assert_array_equal(dW[~inside], dW0[~inside])


def test_unowned_views_share_the_memory_and_leave_its_owner_alone():
    """_unowned (the driver's arrays without their owner, so that no thread touches a shared
    reference count): the same memory, not a copy, read and written through it and through views
    of it, and the caller's array keeps its references and its values after a thousand views."""
    import sys

    import numba
    from fastmlp import _kernels as P

    @numba.njit
    def through(a, reps):
        u = P._unowned(a)
        total = 0.0
        for r in range(reps):
            v = P._unowned(u)[r % a.shape[0]:]
            total += v[0]
            v[0] = v[0] + 1.0
        return total, u.ctypes.data == a.ctypes.data

    a = np.arange(5.0)
    count = sys.getrefcount(a)
    total, same = through(a, 1000)
    assert same
    assert total == sum(float(i) + r // 5 for r, i in zip(range(1000), [0, 1, 2, 3, 4] * 200))
    np.testing.assert_array_equal(a, np.arange(5.0) + 200)
    assert sys.getrefcount(a) == count


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("M", [1, 7, 8, 15, 16, 17, 40, 100, 784])
def test_dot_4x4_sums_whole_vectors_of_4_rows_by_4_samples(M, dtype):
    """The forward pass's 4 x 4 block (_dot_4x4): res[4 si + r] = sum_k W[j + r, k] A[s + si, k] over
    the columns k in whole 512-bit vectors (the caller adds the rest), at rows j and samples s
    anywhere in the arrays, against the textbook sums; the arrays are not modified, and no row
    outside the block is read (NaN there would show). When every column is in whole vectors and
    out is C-contiguous it finishes the block itself: out[s + si, j + r] = that sum + b[j + r], the
    same bits as the caller's addition, no other element of out written, res untouched."""
    import numba
    from fastmlp import _kernels as P

    lanes = 64 // np.dtype(dtype).itemsize

    @numba.njit
    def block(W, A, j, s, res, b, out):
        return P._dot_4x4(W, A, j, s, 0, W.shape[1] - W.shape[1] % lanes, np.empty(16 * lanes, W.dtype), res, b,
                          out)

    @numba.njit
    def in_parts(W, A, j, s, bounds, part, res, b, out):
        done = False
        for q in range(bounds.shape[0] - 1):
            done = P._dot_4x4(W, A, j, s, bounds[q], bounds[q + 1], part, res, b, out)
        return done

    whole = M - M % lanes
    rng = _rng("dot4x4", M, dtype)
    W = rng.normal(0, 1, (9, M)).astype(dtype)
    A = rng.normal(0, 1, (11, M)).astype(dtype)
    b = rng.normal(0, 1, 9).astype(dtype)
    for j, s in [(0, 0), (5, 7), (2, 3)]:
        Wn, An = np.full_like(W, np.nan), np.full_like(A, np.nan)
        Wn[j:j + 4], An[s:s + 4] = W[j:j + 4], A[s:s + 4]
        copies = Wn.copy(), An.copy()
        # out with strided rows: the block always leaves its sums in res
        res = np.full(16, 7, dtype)
        strided = np.full((22, 9), np.nan, dtype)[::2]
        assert not block(Wn, An, j, s, res, b, strided)
        assert np.isnan(strided).all()
        want = np.einsum("rk,ik->ir", W[j:j + 4, :whole].astype(np.float64),
                         A[s:s + 4, :whole].astype(np.float64)).ravel()
        _assert_close(res, want, dtype, scale=np.sqrt(max(whole, 1)))
        if whole == 0:
            np.testing.assert_array_equal(res, 0)
        # a C-contiguous out: finished here when M is whole vectors
        out = np.full((11, 9), np.nan, dtype)
        kept = np.full(16, 7, dtype)
        finished = block(Wn, An, j, s, kept, b, out)
        assert finished == (whole == M)
        expect = np.full((11, 9), np.nan, dtype)
        if finished:
            expect[s:s + 4, j:j + 4] = res.reshape(4, 4) + b[j:j + 4]
            np.testing.assert_array_equal(kept, 7)
        else:
            np.testing.assert_array_equal(kept, res)
        np.testing.assert_array_equal(out, expect)
        # the columns summed in parts (any multiples of the lanes), the accumulators left in
        # `part` between calls: the same bits, and res and out untouched until the last part
        for bounds in ([0, whole], [0, lanes, whole], [0, lanes, 2 * lanes, whole], [0, 3 * lanes, whole]):
            if not all(a < c <= whole for a, c in zip(bounds, bounds[1:])):
                continue
            parted = np.full(16, 7, dtype)
            out_parted = np.full((11, 9), np.nan, dtype)
            assert not in_parts(Wn, An, j, s, np.array(bounds[:-1]), np.zeros(16 * lanes, dtype), parted, b,
                                out_parted)
            if len(bounds) > 2 and bounds[-2] < whole:
                np.testing.assert_array_equal(parted, 7)
                assert np.isnan(out_parted).all()
            assert in_parts(Wn, An, j, s, np.array(bounds), np.zeros(16 * lanes, dtype), parted, b,
                            out_parted) == finished
            np.testing.assert_array_equal(out_parted, expect)
            np.testing.assert_array_equal(parted, kept)
        np.testing.assert_array_equal(Wn, copies[0])
        np.testing.assert_array_equal(An, copies[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("fused", [False, True])
def test_weight_grad_narrow_last_panel_gives_a_whole_tiles_bits(fused, dtype):
    """A last column panel of one to three vectors (784 float32 inputs: 12 panels of 64, then 16)
    is summed by a tile that narrow, moved left to end at the last column when the panel is not a
    whole number of vectors: every element, and plain SGD's step fused into the tiles, has the bits
    that whole tiles over the same columns padded with zeros give it (the same sum in the same
    order), and no element past the last column is written."""
    from fastmlp import _kernels as P
    w = _tile(dtype)
    q = max(w // 4, 1)
    n, N = 19, 9
    for extra in sorted({1, q - 1, q, q + 1, 2 * q, 2 * q + 3, 3 * q - 1, 3 * q, 3 * q + 1} - {0}):
        M = w + extra
        rng = _rng("narrow", fused, extra, dtype)
        delta = rng.normal(0, 1, (n, N)).astype(dtype)
        delta[rng.random((n, N)) < 0.4] = 0
        a = rng.normal(0, 1, (n, M)).astype(dtype)
        wide = np.zeros((n, 2 * w + 3), dtype)  # (past whole tiles: the padding is read by none)
        wide[:, :M] = a
        order = rng.permutation(N).astype(np.int64)
        W0 = rng.normal(0, 1, (N, 2 * w + 3)).astype(dtype)
        got_W, want_W = np.ascontiguousarray(W0[:, :M]), W0.copy()
        got, want = np.full((N, M), 7, dtype), np.full((N, 2 * w + 3), 7, dtype)
        gb, wb = np.zeros(N, dtype), np.zeros(N, dtype)
        P._weight_grad_block(delta, a, got, gb, 0, N, 0, M, False, True, order, got_W, 0.5, 0.0, fused)
        P._weight_grad_block(delta, wide, want, wb, 0, N, 0, 2 * w, False, True, order, want_W, 0.5, 0.0, fused)
        if fused:
            np.testing.assert_array_equal(got_W, want_W[:, :M], err_msg=f"{M} columns")
            np.testing.assert_array_equal(got, 7)
        else:
            np.testing.assert_array_equal(got, want[:, :M], err_msg=f"{M} columns")
            np.testing.assert_array_equal(got_W, W0[:, :M])
        want_ref = np.zeros((N, M))
        ref.accumulate_gradients(delta, a, want_ref, np.zeros(N))
        if not fused:
            _assert_close(got, want_ref, dtype, scale=np.sqrt(n))


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_update_range_steps_a_block_of_columns(optimizer, dtype):
    """The optimizer step on columns 2:7 of rows 1:5 of a 6 x 10 row-major matrix in one call (the
    driver's step on a thread's columns of W^{l+1}), against the textbook steps on that block;
    every other parameter, moment and gradient is left as it was."""
    from fastmlp import _kernels as P
    rng = _rng("update block", optimizer, dtype)
    params = rng.normal(0, 1, 60).astype(dtype)
    grads = rng.normal(0, 1, 60).astype(dtype)
    m = rng.normal(0, 0.1, 60).astype(dtype)
    v = np.abs(rng.normal(0, 0.1, 60)).astype(dtype)
    hp = np.zeros(2 * P.HP_SIZE)
    hp[P.HP_LR], hp[P.HP_MOMENTUM], hp[P.HP_WEIGHT_DECAY] = 0.05, 0.9, 0.01
    hp[P.HP_BETA1], hp[P.HP_BETA2], hp[P.HP_EPS] = 0.9, 0.999, 1e-8
    before = [a.copy() for a in (params, grads, m, v)]
    P._update_range(params, grads, m, v, 12, 17, P.OPTIMIZER_CODES[optimizer], hp, 3, 4, 10)
    block = np.zeros((6, 10), bool)
    block[1:5, 2:7] = True
    p0, g0, m0, v0 = (a.reshape(6, 10)[1:5, 2:7] for a in before)
    if optimizer == "sgd":
        (want,), _ = ref.sgd_step([p0], [], [g0], [], 0.05, weight_decay=0.01)
        moments = []
    elif optimizer == "momentum":
        (want,), (wv,) = ref.momentum_step([p0], [g0], [v0], 0.05, 0.9, weight_decay=0.01)
        moments = [(v, wv)]
    else:
        (want,), (wm,), (wv,) = ref.adam_step([p0], [g0], [m0], [v0], 3, 0.05, weight_decay=0.01)
        moments = [(m, wm), (v, wv)]
    _assert_close(params.reshape(6, 10)[block].reshape(4, 5), want, dtype)
    for got, w in moments:
        _assert_close(got.reshape(6, 10)[block].reshape(4, 5), w, dtype)
    for got, old in zip((params, m, v), (before[0], before[2], before[3])):
        np.testing.assert_array_equal(got.reshape(6, 10)[~block], old.reshape(6, 10)[~block])
    np.testing.assert_array_equal(grads, before[1])
    if optimizer == "sgd":
        np.testing.assert_array_equal(m, before[2])
        np.testing.assert_array_equal(v, before[3])


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_optimizer_state_never_goes_subnormal(optimizer, dtype):
    """A moment whose gradient is zero decays; where the textbook step makes it subnormal (here
    0.5 x 1.5 x the smallest normal float), the stateful optimizers store zero (the subnormals
    each cost a vector instruction a microcode assist), and the weights move exactly as the
    textbook's do. Plain SGD keeps IEEE arithmetic (a subnormal step stays), the fused tiles' bits.
    The calling thread's floating-point mode is as it was after the call."""
    from fastmlp import _kernels as P
    tiny = np.finfo(dtype).tiny
    n = 37  # (vectors and a remainder)
    params = np.linspace(-1, 1, n).astype(dtype)
    params[5] = 0
    grads = np.zeros(n, dtype)
    grads[5] = tiny  # SGD: 0 - 0.5 tiny, a subnormal
    m = np.full(n, 1.5 * tiny, dtype)
    v = np.full(n, 1.5 * tiny, dtype)
    hp = np.zeros(2 * P.HP_SIZE)
    hp[P.HP_LR], hp[P.HP_MOMENTUM] = 0.5, 0.5
    hp[P.HP_BETA1], hp[P.HP_BETA2], hp[P.HP_EPS] = 0.5, 0.5, 1e-8
    before = params.copy()
    P._update_range(params, grads, m, v, 0, n, P.OPTIMIZER_CODES[optimizer], hp, 1, 1, 0)
    if optimizer == "sgd":
        want = before.copy()
        want[5] = -0.5 * tiny
        assert want[5] != 0
        np.testing.assert_array_equal(params, want)
        np.testing.assert_array_equal(m, np.full(n, 1.5 * tiny, dtype))
    else:
        textbook = 0.5 * 1.5 * tiny  # b1 m or mu v with g = 0: subnormal
        assert 0 < textbook < tiny
        keep = np.arange(n) != 5
        for state in (m, v) if optimizer == "adam" else (v,):
            np.testing.assert_array_equal(state[keep], 0)
        # the textbook's step on these weights is under a subnormal, which none of them registers
        np.testing.assert_array_equal(params[keep], before[keep])
        for x in (params, m, v):
            assert np.all((x == 0) | (np.abs(x) >= tiny))
    # the calling thread still computes subnormals
    assert np.array([tiny], dtype)[0] * dtype(0.5) != 0

# ----------------------------------------------------------------------------- minibatch_step
NETS = [[7, 33, 10], [33, 7, 5, 3], [100, 10, 2]]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("batch", [1, 5, 32])
@pytest.mark.parametrize("sizes", NETS, ids=lambda s: "-".join(map(str, s)))
def test_minibatch_step_softmax_ce(sizes, batch, dtype, threads):
    _check_minibatch_step(sizes, batch, dtype, threads, "relu", "softmax", "ce", "index")


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
@pytest.mark.parametrize("kind", ["index", "float"])
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_minibatch_step_all_activations(activation, output, loss, kind, dtype):
    _check_minibatch_step([7, 33, 10], 5, dtype, None, activation, output, loss, kind)


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_minibatch_step_single_output_unit(dtype):
    _check_minibatch_step([100, 10, 1], 5, dtype, None, "tanh", "sigmoid", "mse", "float")
    _check_minibatch_step([100, 10, 1], 32, dtype, 2, "relu", "identity", "mse", "float")


def _check_minibatch_step(sizes, batch, dtype, threads, activation, output, loss, kind):
    rng = _rng("step", sizes, batch, dtype, threads, activation, output, loss, kind)
    L = len(sizes) - 1
    weights = [rng.normal(0, 1 / np.sqrt(sizes[l]), (sizes[l + 1], sizes[l])).astype(dtype)
               for l in range(L)]
    biases = [rng.normal(0, 0.1, sizes[l + 1]).astype(dtype) for l in range(L)]
    X = rng.normal(0, 1, (batch, sizes[0])).astype(dtype)
    target = _float_target(_targets(rng, kind, (batch,), sizes[-1], output), dtype)
    lr = 0.1
    w64 = [w.astype(np.float64) for w in weights]
    b64 = [b.astype(np.float64) for b in biases]
    want_loss = ref.cost(w64, b64, X, target, activation, output, loss)
    gW, gb = ref.gradients(w64, b64, X, target, activation, output, loss)
    want_W, want_b = ref.sgd_step(w64, b64, gW, gb, lr)
    ids = [id(w) for w in weights + biases]
    X_copy = X.copy()

    got = K.minibatch_step(weights, biases, X, target, lr, activation=activation,
                           output=output, loss=loss, threads=threads)

    assert float(got) == pytest.approx(want_loss, rel=1e-4 if dtype == np.float32 else 1e-12)
    assert [id(w) for w in weights + biases] == ids, "the step must work in place"
    for got_p, want_p in zip(weights + biases, want_W + want_b):
        assert got_p.dtype == np.dtype(dtype)
        _assert_close(got_p, want_p, dtype)
    np.testing.assert_array_equal(X, X_copy)


# ------------------------------------------------------------------------------- bad input
def _f(*shape, dtype=np.float64):
    return np.ones(shape, dtype=dtype)


def _nan(*shape, dtype=np.float64):
    a = np.ones(shape, dtype=dtype)
    a.flat[0] = np.nan
    return a


BAD_CALLS = {
    # shape mismatches
    "dense W/a_prev": lambda: K.dense_forward(_f(5, 7), _f(5), _f(6)),
    "dense W/a_prev 2d": lambda: K.dense_forward(_f(5, 7), _f(5), _f(3, 6)),
    "dense W/b": lambda: K.dense_forward(_f(5, 7), _f(4), _f(7)),
    "loss target shape": lambda: K.loss_forward(_f(3, 4) / 4, _f(3, 5), "mse"),
    "loss target count": lambda: K.loss_forward(_f(3, 4) / 4, np.array([0, 1]), "ce"),
    "loss label too big": lambda: K.loss_forward(_f(3, 4) / 4, np.array([0, 1, 4]), "ce"),
    "loss label negative": lambda: K.loss_forward(_f(3, 4) / 4, np.array([0, -1, 2]), "ce"),
    "delta z/yhat": lambda: K.output_delta(_f(3, 4), _f(3, 5) / 5, np.array([0, 1, 2]),
                                           "softmax", "ce"),
    "delta_backward W/delta": lambda: K.delta_backward(_f(4, 6), _f(3, 5), _f(3, 6), "relu"),
    "delta_backward W/z": lambda: K.delta_backward(_f(4, 6), _f(3, 4), _f(3, 7), "relu"),
    "delta_backward rows": lambda: K.delta_backward(_f(4, 6), _f(3, 4), _f(2, 6), "relu"),
    "accumulate dW shape": lambda: K.accumulate_gradients(_f(3, 4), _f(3, 6), _f(6, 4), _f(4)),
    "accumulate rows": lambda: K.accumulate_gradients(_f(3, 4), _f(2, 6), _f(4, 6), _f(4)),
    "accumulate db shape": lambda: K.accumulate_gradients(_f(3, 4), _f(3, 6), _f(4, 6), _f(5)),
    "step X width": lambda: K.minibatch_step([_f(4, 6), _f(3, 4)], [_f(4), _f(3)], _f(5, 7),
                                             np.zeros(5, np.int64), 0.1),
    "step layers chain": lambda: K.minibatch_step([_f(4, 6), _f(3, 5)], [_f(4), _f(3)],
                                                  _f(5, 6), np.zeros(5, np.int64), 0.1),
    "step target count": lambda: K.minibatch_step([_f(4, 6), _f(3, 4)], [_f(4), _f(3)],
                                                  _f(5, 6), np.zeros(4, np.int64), 0.1),
    # mixed dtypes
    "dense mixed": lambda: K.dense_forward(_f(5, 7, dtype=np.float32), _f(5), _f(7)),
    "dense mixed a": lambda: K.dense_forward(_f(5, 7), _f(5), _f(7, dtype=np.float32)),
    "delta_backward mixed": lambda: K.delta_backward(_f(4, 6, dtype=np.float32), _f(3, 4),
                                                     _f(3, 6), "relu"),
    "accumulate mixed": lambda: K.accumulate_gradients(_f(3, 4), _f(3, 6),
                                                       _f(4, 6, dtype=np.float32), _f(4)),
    "step mixed": lambda: K.minibatch_step([_f(4, 6, dtype=np.float32), _f(3, 4)],
                                           [_f(4), _f(3)], _f(5, 6),
                                           np.zeros(5, np.int64), 0.1),
    # NaN in the input
    "dense NaN": lambda: K.dense_forward(_f(5, 7), _f(5), _nan(7)),
    "activation NaN": lambda: K.activation_forward(_nan(3, 4), "sigmoid"),
    "activation_backward NaN": lambda: K.activation_backward(_nan(3, 4), "tanh"),
    "loss NaN": lambda: K.loss_forward(_nan(3, 4), np.array([0, 1, 2]), "ce"),
    "step NaN X": lambda: K.minibatch_step([_f(4, 6), _f(3, 4)], [_f(4), _f(3)], _nan(5, 6),
                                           np.zeros(5, np.int64), 0.1),
    # unknown names
    "activation name": lambda: K.activation_forward(_f(3), "gelu"),
    "activation_backward name": lambda: K.activation_backward(_f(3), "gelu"),
    "activation_backward softmax": lambda: K.activation_backward(_f(3), "softmax"),
    "delta_backward name": lambda: K.delta_backward(_f(4, 6), _f(4), _f(6), "swish"),
    "loss name": lambda: K.loss_forward(_f(4) / 4, 1, "hinge"),
    "output_delta output name": lambda: K.output_delta(_f(4), _f(4) / 4, 1, "softplus", "mse"),
    "output_delta loss name": lambda: K.output_delta(_f(4), _f(4) / 4, 1, "softmax", "hinge"),
    "output_delta ce needs softmax": lambda: K.output_delta(_f(4), _f(4) / 4, 1, "sigmoid", "ce"),
    "output_delta ce identity": lambda: K.output_delta(_f(4), _f(4) / 4, 1, "identity", "ce"),
    "step activation name": lambda: K.minibatch_step([_f(4, 6), _f(3, 4)], [_f(4), _f(3)],
                                                     _f(5, 6), np.zeros(5, np.int64), 0.1,
                                                     activation="gelu"),
    "step ce needs softmax": lambda: K.minibatch_step([_f(4, 6), _f(3, 4)], [_f(4), _f(3)],
                                                      _f(5, 6), np.zeros(5, np.int64), 0.1,
                                                      output="sigmoid", loss="ce"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_kernels_reject_bad_input(name):
    with pytest.raises(ValueError):
        BAD_CALLS[name]()


@pytest.mark.parametrize("dtype", DTYPES, ids=_ids)
def test_line_aligned_scratch_starts_a_cache_line(dtype):
    """The kernels' scratch panels (_line_aligned_empty) start a 64-byte cache line, whatever the
    32-byte alignment Numba's allocator gives, with the asked shape and dtype, rows contiguous."""
    import numba
    from fastmlp import _kernels as P

    @numba.njit
    def make(rows, cols, like):
        return P._line_aligned_empty(rows, cols, like.dtype)

    for rows, cols in [(0, 16), (1, 16), (3, 64), (128, 64), (7, 256)]:
        for _ in range(8):  # (several allocations: some start mid-line)
            x = make(rows, cols, np.zeros(1, dtype))
            assert x.shape == (rows, cols) and x.dtype == np.dtype(dtype)
            assert x.ctypes.data % 64 == 0 and x.flags.c_contiguous
