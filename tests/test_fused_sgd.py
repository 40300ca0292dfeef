"""Plain SGD taken by the AVX-512 weight-gradient tiles themselves (fused: dW is not written) for a
thread's share of W larger than FUSED_SGD_MIN_BYTES: the same bits as the gradient followed by the separate
optimizer pass (_update_range), in the kernel and in training."""
import zlib

import numpy as np
import pytest

from fastmlp import _kernels as P
from fastmlp._buffers import Data, Network, OptimizerState, Results, Workspace, input_bytes, layout
from fastmlp._plan import phase_plan

pytestmark = pytest.mark.skipif(P.TILE_ROWS != 4, reason="only the AVX-512 tiles take the step themselves")


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("wd", [0.0, 0.01])
@pytest.mark.parametrize("rows, cols", [((0, 37), (0, 150)), ((5, 30), (0, 150)), ((0, 37), (40, 101)),
                                        ((36, 37), (149, 150))], ids=str)
def test_the_tiles_step_w_with_the_separate_passs_roundings(rows, cols, wd, dtype):
    """W -= lr (dW + wd W) on rows j0:j1 and columns c0:c1 (partial groups and tiles, a tile moved
    left), each element rounded as NumPy rounds the same operations (no fused multiply-add):
    the bits of the gradient the unfused kernel stores, then _update_range's step. dW is not
    written, db is, and nothing of W outside the block changes."""
    rng = _rng("fused", rows, cols, wd, dtype)
    n, N, M = 21, 37, 150
    (j0, j1), (c0, c1) = rows, cols
    delta = rng.normal(0, 1, (n, N)) * (rng.random((n, N)) < 0.5)
    delta = delta.astype(dtype)
    a_prev = rng.normal(0, 1, (n, M)).astype(dtype)
    # the rows shuffled within each aligned block of GROUP_BLOCK (the orders _group_units makes)
    order = np.concatenate([b0 + rng.permutation(min(P.GROUP_BLOCK, N - b0))
                            for b0 in range(0, N, P.GROUP_BLOCK)]).astype(np.int64)
    lr = 0.3
    W0 = rng.normal(0, 1, (N, M)).astype(dtype)
    grad, gb = np.zeros((N, M), dtype), np.zeros(N, dtype)
    P._weight_grad_block(delta, a_prev, grad, gb, j0, j1, c0, c1, False, True, order, grad, 0.0, 0.0, False)

    W = W0.copy()
    dW, db = np.full((N, M), 7, dtype), np.zeros(N, dtype)
    P._weight_grad_block(delta, a_prev, dW, db, j0, j1, c0, c1, False, True, order, W, lr, wd, True)
    assert (dW == 7).all()
    np.testing.assert_array_equal(db, gb)
    t = np.dtype(dtype).type
    g = grad[j0:j1, c0:c1]
    w0 = W0[j0:j1, c0:c1]
    want = w0 - t(lr) * g if wd == 0.0 else w0 - t(lr) * (g + t(wd) * w0)
    np.testing.assert_array_equal(W[j0:j1, c0:c1], want)
    inside = np.zeros((N, M), bool)
    inside[j0:j1, c0:c1] = True
    np.testing.assert_array_equal(W[~inside], W0[~inside])


def _network(sizes, dtype, n):
    rng = _rng("net", sizes, dtype)
    w_off, b_off, count = layout(sizes)
    params = (rng.standard_normal(count) * 0.05).astype(dtype)
    X = rng.integers(0, 256, (n, sizes[0]), dtype=np.uint8)
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    net = Network(params, w_off, b_off, np.array(sizes, dtype=np.int64), P.RELU, P.SOFTMAX)
    data = Data(*input_bytes(X), 255.0, y, np.zeros((1, sizes[-1]), dtype), False, np.ones(1), False, P.CE)
    return net, data


def _drive(mode, net, data, order, batch, grads, hp, step, nthreads):
    sizes = net.sizes.tolist()
    ws = Workspace(sizes, net.params.dtype, batch, x_capacity=len(order))
    steps = -(-len(order) // batch)
    empty = np.zeros(0, net.params.dtype)
    results = Results(np.zeros(len(order)), np.zeros((steps, 2)), np.zeros((0, sizes[-1]), net.params.dtype))
    return P._drive(phase_plan(sizes, mode), net, ws.buffers(), OptimizerState(grads, empty, empty, P.SGD, hp, step),
                    data, order, batch, nthreads, results)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("nthreads", [1, 2])
@pytest.mark.parametrize("sizes", [[700, 1100, 600, 10], [784, 64, 10]], ids=lambda s: "-".join(map(str, s)))
def test_training_steps_are_the_gradient_then_the_separate_step(sizes, nthreads, dtype):
    """700-1100-600-10: each thread's share of dW^1 (550 or 1100 rows of 700) and of dW^2 (600 rows of
    550 or 1100 columns) is larger than L2 and FUSED_SGD_MIN_BYTES, so the train plan's tiles take
    the SGD step (weight decay on, biases without it); 784-64-10: dW^1's share (32 or 64 rows of
    784) by the tiles too, dW^2's (10 rows of 32 or 64 columns) by the separate pass. Three
    minibatches in one call give the same bits as, per minibatch, the gradient plan followed by
    _update_all."""
    if len(sizes) == 4:
        assert (1100 // 2) * 700 * 4 > P.UPDATE_SPLIT_BYTES and 600 * (1100 // 2) * 4 > P.UPDATE_SPLIT_BYTES
    else:
        assert 32 * 784 * 4 > P.FUSED_SGD_MIN_BYTES >= 10 * 64 * 8
    batch, n = 8, 24
    hp = np.zeros(2 * P.HP_SIZE)
    hp[P.HP_LR] = hp[P.HP_SIZE + P.HP_LR] = 0.2
    hp[P.HP_WEIGHT_DECAY] = 0.001
    fused, data = _network(sizes, dtype, n)
    separate, _ = _network(sizes, dtype, n)
    grads = np.zeros_like(fused.params)
    assert _drive("train", fused, data, np.arange(n), batch, grads, hp, 1, nthreads) == n // batch
    # the tiles took the step where they write no dW: all of dW^1 (and dW^2 of 700-1100-600-10)
    w_off = fused.w_off
    assert not grads[w_off[1]:w_off[1] + sizes[1] * sizes[0]].any()
    assert grads[w_off[2]:w_off[2] + sizes[2] * sizes[1]].any() == (len(sizes) == 3)
    sizes_array = np.array(sizes, dtype=np.int64)
    for s in range(n // batch):
        _drive("gradient", separate, data, np.arange(s * batch, (s + 1) * batch), batch, grads, hp, 1 + s, nthreads)
        empty = np.zeros(0, dtype)
        P._update_all(separate.params, grads, empty, empty, separate.w_off, separate.b_off, sizes_array, P.SGD, hp,
                      1 + s, nthreads)
    assert not np.array_equal(fused.params, _network(sizes, dtype, n)[0].params)
    np.testing.assert_array_equal(fused.params, separate.params)
