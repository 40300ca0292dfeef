"""The grouping of a ReLU layer's units for the weight gradient (fastmlp._kernels._group_units):
which 4 rows of dW share a register tile, and so which samples a tile leaves out (those whose 4
deltas are all zero). It must be a permutation within each aligned block of GROUP_BLOCK units,
group units that are off together, and change no bit of any gradient or of training."""
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reference as ref
from tolerances import DTYPES, tol

from fastmlp import _kernels as P


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _skipped(delta, order):
    """(sample, group) pairs whose 4 deltas are all zero, with the rows grouped 4 at a time in
    order (a last partial group repeats its last row), counted the obvious way."""
    groups = [order[i:i + 4] for i in range(0, len(order), 4)]
    return sum(int((delta[:, g] == 0).all(axis=1).sum()) for g in groups)


def test_group_units_worked_example():
    """Units 0, 2, 4, 6 are off for samples 0-2 and units 1, 3, 5, 7 for samples 3-5: in place, no
    group of 4 neighbours is ever all off; grouped, each group is all off for 3 of the 6 samples."""
    delta = np.ones((6, 8))
    delta[:3, 0::2] = 0
    delta[3:, 1::2] = 0
    order = np.full(8, -1, np.int64)
    P._group_units(delta, order)
    assert order.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert _skipped(delta, np.arange(8)) == 0
    assert _skipped(delta, order) == 6


def test_group_units_prefers_the_units_off_most_often_with_the_group():
    """Greedy, lowest unit first: unit 0 is off for samples 0-3, and units 3 and 4 share all 4 of
    them (3, the lower, joins first; the group is then still off for all 4, and 4 joins), unit 2
    shares 3 and unit 1 only 2: the group is 0, 3, 4, 2, and unit 1 is left on its own."""
    off = {0: [0, 1, 2, 3], 1: [0, 1, 5], 2: [0, 1, 2, 6], 3: [0, 1, 2, 3, 7], 4: [0, 1, 2, 3]}
    delta = np.ones((8, 5), np.float32)
    for u, samples in off.items():
        delta[samples, u] = 0
    order = np.empty(5, np.int64)
    P._group_units(delta, order)
    assert order.tolist() == [0, 3, 4, 2, 1]


@settings(max_examples=60, deadline=None, database=None)
@given(n=st.integers(1, 140), N=st.integers(1, 100), p=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_group_units_permutes_each_block(n, N, p, seed):
    """Any deltas (more than one 64-sample word, ragged blocks, all or no zeros): each aligned block
    of GROUP_BLOCK entries holds exactly that block's units."""
    rng = np.random.default_rng(seed)
    delta = rng.normal(0, 1, (n, N)) * (rng.random((n, N)) >= p)
    order = np.full(N, -1, np.int64)
    P._group_units(delta, order)
    B = P.GROUP_BLOCK
    for b0 in range(0, N, B):
        assert sorted(order[b0:b0 + B].tolist()) == list(range(b0, min(b0 + B, N)))


def _relu_deltas(rng, n, N, dtype):
    """Deltas of a ReLU layer whose units come in 6 kinds that are off for the same samples."""
    kind = rng.integers(0, 6, N)
    off_kind = rng.random((n, 6)) < 0.5
    off = off_kind[:, kind] & (rng.random((n, N)) < 0.95) | (rng.random((n, N)) < 0.1)
    return (rng.normal(0, 1, (n, N)) * ~off).astype(dtype)


def test_group_units_leaves_out_more_samples_than_neighbours():
    rng = _rng("more")
    delta = _relu_deltas(rng, 128, 96, np.float32)
    order = np.empty(96, np.int64)
    P._group_units(delta, order)
    natural, grouped = _skipped(delta, np.arange(96)), _skipped(delta, order)
    assert grouped > 2 * natural, (natural, grouped)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("rows", [(0, 70), (0, 36), (36, 70), (4, 30), (52, 68), (64, 70), (33, 34)],
                         ids=lambda r: f"{r[0]}-{r[1]}")
def test_weight_gradient_has_the_same_bits_in_any_grouping(rows, dtype):
    """The kernel on a share of the rows (whole blocks, blocks cut at either end, the ragged last
    block, one row) with the rows in place, grouped by _group_units, and shuffled within each
    block: the same bits every time, the reference's values, and nothing outside the share."""
    rng = _rng("grouping", rows, dtype)
    n, N, M = 45, 70, 83
    j0, j1 = rows
    delta = _relu_deltas(rng, n, N, dtype)
    a_prev = rng.normal(0, 1, (n, M)).astype(dtype)
    grouped = np.empty(N, np.int64)
    P._group_units(delta, grouped)
    shuffled = np.concatenate([b0 + rng.permutation(min(P.GROUP_BLOCK, N - b0))
                               for b0 in range(0, N, P.GROUP_BLOCK)]).astype(np.int64)
    results = []
    for order in (np.arange(N), grouped, shuffled):
        dW = np.full((N, M), 7, dtype)
        db = np.full(N, 7, dtype)
        P._weight_grad_block(delta, a_prev, dW, db, j0, j1, 0, M, False, True, order, dW, 0.0, 0.0, False)
        results.append((dW, db))
    for dW, db in results[1:]:
        np.testing.assert_array_equal(dW, results[0][0])
        np.testing.assert_array_equal(db, results[0][1])
    want_W, want_b = np.zeros((N, M)), np.zeros(N)
    ref.accumulate_gradients(delta, a_prev, want_W, want_b)
    t = tol(dtype)
    np.testing.assert_allclose(results[0][0][j0:j1], want_W[j0:j1], rtol=t["rtol"], atol=t["atol"] * np.sqrt(n))
    np.testing.assert_allclose(results[0][1][j0:j1], want_b[j0:j1], rtol=t["rtol"], atol=t["atol"] * np.sqrt(n))
    outside = np.r_[0:j0, j1:N]
    assert (results[0][0][outside] == 7).all() and (results[0][1][outside] == 7).all()


def test_training_regroups_and_changes_no_bit(monkeypatch):
    """A trainer regroups its ReLU layers' units after each chunk of minibatches (from the last
    minibatch's deltas): the weights after two epochs are the same bits as without regrouping."""
    import fastmlp
    from fastmlp import training
    rng = _rng("train")
    X = rng.integers(0, 256, (5000, 64)).astype(np.uint8)
    y = rng.integers(0, 10, 5000)
    calls = []
    real = P.group_units

    def recording(work, sizes, n):
        real(work, sizes, n)
        units = work.units[64:64 + 40]
        calls.append((n, not np.array_equal(units, np.arange(40))))
        assert sorted(units[:32].tolist()) == list(range(32))

    nets = []
    for group in (recording, lambda *args: None):
        monkeypatch.setattr(P, "group_units", group)
        net = fastmlp.MLP([64, 40, 24, 10], seed=3)
        training.train(net, X, y, epochs=2, batch_size=20, lr=0.05, threads=2, verbose=False)
        nets.append(net)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    if P.TILE_ROWS != 6:  # (the AVX2 micro-kernel skips no sample: nothing to regroup for)
        assert len(calls) >= 2 and all(n == 20 for n, _ in calls)
        assert any(moved for _, moved in calls)


def test_label_grouped_worked_example():
    """Rows 5, 3, 0 | 1, 4, 2 | 6 in minibatches of 3, labels by row 2 0 1 0 2 1 0: each minibatch's
    rows sorted by label, ties in their order, the short last minibatch too."""
    from fastmlp._plan import label_grouped
    labels = np.array([2, 0, 1, 0, 2, 1, 0])
    order = np.array([5, 3, 0, 1, 4, 2, 6])
    assert label_grouped(order, labels, 3).tolist() == [3, 5, 0, 1, 2, 4, 6]
    assert label_grouped(order, labels, 7).tolist() == [3, 1, 6, 5, 2, 0, 4]
    assert label_grouped(order, labels, 1).tolist() == order.tolist()


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), batch=st.integers(1, 12), classes=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_label_grouped_keeps_each_minibatch_and_sorts_it_stably(n, batch, classes, seed):
    from fastmlp._plan import label_grouped
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n + 3)
    order = rng.permutation(n + 3)[:n]
    out = label_grouped(order, labels, batch)
    assert out.dtype == np.int64 and out.shape == (n,)
    for b0 in range(0, n, batch):
        block, got = order[b0:b0 + batch].tolist(), out[b0:b0 + batch].tolist()
        # the obvious stable sort: by (label, position in the minibatch)
        assert got == [r for _, _, r in sorted((labels[r], i, r) for i, r in enumerate(block))]


def _driver_orders(monkeypatch, train):
    """The orders the trainer hands the driver while train() runs, concatenated."""
    seen = []
    real = P._drive

    class Recording:
        def __call__(self, plan, net, work, opt, data, order, *rest):
            seen.append(np.array(order))
            return real(plan, net, work, opt, data, order, *rest)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(P, "_drive", Recording())
    train()
    monkeypatch.setattr(P, "_drive", real)
    return np.concatenate(seen)


def test_forward_gathers_where_a_layer_takes_the_gather_tile():
    assert P.forward_gathers([784, 512, 512, 10], 128) == P.GATHER_ZMM
    assert P.forward_gathers([784, 2048, 2048, 10], 256) == P.GATHER_ZMM
    assert not P.forward_gathers([784, 512, 512, 10], 32)
    assert not P.forward_gathers([784, 100, 10], 512)


def test_the_trainer_sorts_minibatches_by_label_where_the_forward_takes_the_gather_tile(monkeypatch):
    """Trainer._steps hands the driver each minibatch with its samples sorted by label (the same
    samples per minibatch as the epoch's permutation) where a layer's forward pass takes the
    gather tile (16-512-4 at batch 128, on AVX-512 CPUs); elsewhere, and with regression
    targets, as drawn."""
    import fastmlp
    from fastmlp import training
    rng = _rng("label order")
    X = rng.integers(0, 256, (300, 16)).astype(np.uint8)
    y = rng.integers(0, 4, 300)

    def minibatches_sorted(order, batch):
        assert sorted(order.tolist()) == list(range(300))
        return [bool((np.diff(y[order[b0:b0 + batch]]) >= 0).all()) for b0 in range(0, 300, batch)]

    net = fastmlp.MLP([16, 512, 4], seed=0)
    order = _driver_orders(monkeypatch, lambda: training.train(net, X, y, epochs=1, batch_size=128, lr=0.05,
                                                                threads=2, verbose=False))
    assert minibatches_sorted(order, 128) == [P.GATHER_ZMM] * 3
    net = fastmlp.MLP([16, 8, 4], seed=0)
    order = _driver_orders(monkeypatch, lambda: training.train(net, X, y, epochs=1, batch_size=32, lr=0.05,
                                                                threads=1, verbose=False))
    assert not any(minibatches_sorted(order, 32))
    reg = fastmlp.MLP([16, 512, 2], seed=0, output="identity")
    order = _driver_orders(monkeypatch, lambda: training.train(reg, X, rng.standard_normal((300, 2)), epochs=1,
                                                                batch_size=128, lr=0.01, loss="mse", threads=1,
                                                                verbose=False))
    assert not any(minibatches_sorted(order, 128))


@pytest.mark.skipif(not P.GATHER_ZMM, reason="the gather tile is for AVX-512 CPUs")
def test_the_forward_gather_tile_gives_each_sample_the_same_bits_in_any_order():
    """The forward pass through a layer that takes the gather tile (512 units, 128 samples) leaves out
    the inputs zero for all 4 samples of a group: which inputs depends on the samples' order, the
    bits of each sample's outputs do not."""
    rng = _rng("gather order")
    N, n, M = 512, 128, 200
    assert P.forward_takes_micro(N, M, n)
    A = rng.standard_normal((n, M)).astype(np.float32)
    A[rng.random((n, M)) < 0.6] = 0
    A[:, 150:] = 0
    A[rng.permutation(n)[:64], :60] = 0  # half the samples have their first 60 inputs zero
    W = rng.standard_normal((N, M)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    out = np.zeros((n, N), np.float32)
    P._dense_forward_block(W, b, A, out, P.ACTIVATION_CODES["relu"], 0, N, n, 0, 1)
    perm = rng.permutation(n)
    out_p = np.zeros((n, N), np.float32)
    P._dense_forward_block(W, b, A[perm], out_p, P.ACTIVATION_CODES["relu"], 0, N, n, 0, 1)
    np.testing.assert_array_equal(out_p, out[perm])
    np.testing.assert_allclose(out, np.maximum(A.astype(np.float64) @ W.T.astype(np.float64) + b, 0),
                               rtol=1e-4, atol=1e-3)
