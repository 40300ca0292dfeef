"""Workspaces are reused between fits and evaluations of the same shapes in a process
(_buffers.take_workspace / release_workspace): mapping and faulting in a new one costs a tenth of
a short epoch. A reused workspace must change no result."""
import numpy as np
import pytest

import fastmlp
from fastmlp import _buffers as B, training


@pytest.fixture
def empty_pool(monkeypatch):
    monkeypatch.setattr(B, "_pool", [])
    return B._pool


def test_a_released_workspace_goes_to_the_next_caller_with_its_shapes(empty_pool):
    a = B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=16)
    b = B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=16)
    assert a is not b                                  # one caller at a time
    B.release_workspace(a)
    assert B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=16) is a
    B.release_workspace(a)
    for other in [([6, 5, 3], np.float64, 8, 16), ([6, 5, 3], np.float32, 4, 16), ([6, 5, 3], np.float32, 8, 32),
                  ([6, 7, 3], np.float32, 8, 16)]:
        ws = B.take_workspace(*other)
        assert ws is not a and ws.capacity == other[2] and ws.X.dtype == other[1]
        assert ws.X.shape == (max(other[2], other[3]), other[0][0])
    assert B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=16) is a


def test_a_workspace_with_room_for_more_inputs_serves_a_smaller_chunk(empty_pool):
    big = B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=64)
    exact = B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=16)
    B.release_workspace(exact)
    B.release_workspace(big)
    assert B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=16) is exact   # the same shapes first
    assert B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=16) is big     # then any with room
    B.release_workspace(big)
    assert B.take_workspace([6, 5, 3], np.float32, 8, x_capacity=65) is not big  # too few rows
    assert B.take_workspace([6, 5, 3], np.float32, 8) is big                     # (8 rows)


def test_the_pool_keeps_the_newest_few(empty_pool):
    spaces = [B.take_workspace([4, 3, 2], np.float32, c) for c in range(1, B.POOL_SIZE + 3)]
    for ws in spaces:
        B.release_workspace(ws)
    assert [ws for _, ws in empty_pool] == spaces[-B.POOL_SIZE:]


def test_fits_reuse_a_workspace_and_give_the_same_bits(empty_pool):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (600, 30)).astype(np.uint8)
    y = rng.integers(0, 4, 600)
    params = []
    for _ in range(3):
        net = fastmlp.MLP([30, 20, 12, 4], seed=1)
        training.train(net, X, y, epochs=2, batch_size=16, lr=0.1, threads=2, verbose=False)
        params.append(net.params.copy())
        assert len(empty_pool) >= 1
    first = empty_pool[0][1]
    net = fastmlp.MLP([30, 20, 12, 4], seed=1)
    training.train(net, X, y, epochs=2, batch_size=16, lr=0.1, threads=2, verbose=False)
    assert any(ws is first for _, ws in empty_pool)   # taken and given back, not a new one
    np.testing.assert_array_equal(params[0], params[1])
    np.testing.assert_array_equal(params[0], params[2])
    np.testing.assert_array_equal(params[0], net.params)
    # a fit of fewer rows (a smaller chunk) on the larger workspace that the fits above gave back
    small = []
    pooled = [ws for _, ws in empty_pool]
    for pool in ([], empty_pool):
        B._pool = pool
        net = fastmlp.MLP([30, 20, 12, 4], seed=1)
        training.train(net, X[:100], y[:100], epochs=2, batch_size=16, lr=0.1, threads=2, verbose=False)
        small.append(net.params.copy())
    assert sorted(map(id, pooled)) == sorted(id(ws) for _, ws in empty_pool)  # no new one
    assert first.X.shape[0] > 112
    np.testing.assert_array_equal(small[0], small[1])
    assert not np.array_equal(small[0], params[0])
    # evaluation too, on a workspace that a fit of other shapes left behind
    before = net.loss(X[:50], y[:50])
    assert any(ws.capacity == 50 for _, ws in empty_pool)
    assert net.loss(X[:50], y[:50]) == before
