"""Per-kernel benchmarks: each kernel is checked against NumPy, warmed up (compiled), then timed.

Shapes are those of MNIST training: 784 inputs, 100 or 512 hidden units, 10 classes, batches of
10, 32 and 128 samples. `--benchmark-group-by=param` puts each batch size's kernels together.
"""
import numpy as np
import pytest

from fastmlp import _kernels as k

BATCHES = [10, 32, 128]
TOL = dict(rtol=1e-4, atol=1e-5)


def _flops_info(benchmark, flops):
    benchmark.extra_info["flops"] = flops
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.min > 0:
        benchmark.extra_info["gflops"] = flops / stats.stats.min / 1e9


def _layer(rng, n, N, M):
    W = (rng.standard_normal((N, M)) * np.sqrt(2.0 / M)).astype(np.float32)
    b = (rng.standard_normal(N) * 0.1).astype(np.float32)
    a = rng.random((n, M)).astype(np.float32)
    return W, b, a


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("width", [100, 512])
def test_dense_forward(benchmark, rng, threads, batch, width):
    """z = a W^T + b for the first layer (784 -> width), rows of W split over the threads."""
    W, b, a = _layer(rng, batch, width, 784)
    out = np.empty((batch, width), np.float32)
    k._dense_forward(W, b, a, out, k.RELU, threads)
    np.testing.assert_allclose(out, np.maximum(a @ W.T + b, 0), **TOL)
    benchmark(k._dense_forward, W, b, a, out, k.RELU, threads)
    _flops_info(benchmark, 2 * batch * width * 784)


@pytest.mark.parametrize("batch", BATCHES)
def test_softmax_ce_delta(benchmark, rng, batch):
    """The output layer: softmax, cross-entropy loss, delta^L = (a^L - y) / n, argmax count."""
    K = 10
    Z = rng.standard_normal((batch, K)).astype(np.float32) * 3
    labels = rng.integers(0, K, batch).astype(np.int64)
    AL = np.empty_like(Z)
    for s in range(batch):
        k._output_activation(Z[s], AL[s], k.SOFTMAX)
    D = np.empty_like(Z)
    losses = np.empty(batch)
    targets = np.zeros((1, K), np.float32)
    idx = np.arange(batch)
    scale = np.float32(1.0 / batch)
    args = (Z, AL, D, labels, targets, False, idx, k.SOFTMAX, k.CE, scale, losses, np.ones(1), False)
    correct = k._output_step(*args)
    z64 = Z.astype(np.float64)
    p = np.exp(z64 - z64.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(K)[labels]
    np.testing.assert_allclose(AL, p, **TOL)
    np.testing.assert_allclose(D, (p - onehot) / batch, **TOL)
    np.testing.assert_allclose(losses, -np.log(p[idx, labels]), rtol=1e-5)
    assert correct == int((p.argmax(axis=1) == labels).sum())
    benchmark(k._output_step, *args)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("width", [100, 512])
def test_delta_backward(benchmark, rng, threads, batch, width):
    """The backward recursion delta^l = relu'(z^l) * delta^{l+1} W^{l+1} (width -> width)."""
    W, _, z = _layer(rng, batch, width, width)
    z -= 0.5
    delta_next = rng.standard_normal((batch, width)).astype(np.float32)
    out = np.empty((batch, width), np.float32)
    k._delta_backward(W, delta_next, z, k.RELU, out, threads)
    np.testing.assert_allclose(out, (delta_next @ W) * (z > 0), **TOL)
    benchmark(k._delta_backward, W, delta_next, z, k.RELU, out, threads)
    _flops_info(benchmark, 2 * batch * width * width)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("width", [100, 512])
def test_accumulate_gradients(benchmark, rng, threads, batch, width):
    """The outer-product accumulation dW += delta^T a_prev, db += sum delta (784 -> width)."""
    _, _, a = _layer(rng, batch, width, 784)
    delta = rng.standard_normal((batch, width)).astype(np.float32)
    dW = np.zeros((width, 784), np.float32)
    db = np.zeros(width, np.float32)
    k._accumulate_gradients(delta, a, dW, db, threads)
    np.testing.assert_allclose(dW, delta.T @ a, **TOL)
    np.testing.assert_allclose(db, delta.sum(axis=0), **TOL)
    benchmark(k._accumulate_gradients, delta, a, dW, db, threads)
    _flops_info(benchmark, 2 * batch * width * 784)


def _step_setup(sizes, batch, rng):
    from fastmlp._buffers import Workspace
    from fastmlp.model import MLP
    net = MLP(sizes, seed=0)
    X = rng.integers(0, 256, (batch, sizes[0]), dtype=np.uint8)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return net, X, y, Workspace(sizes, net.dtype, batch)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("hidden", [(100,), (512, 512)], ids=["784-100-10", "784-512-512-10"])
def test_minibatch_step(benchmark, rng, threads, batch, hidden):
    """One whole SGD step (gather, forward, softmax-CE, backward, update), as the trainer runs it."""
    from fastmlp import bench
    sizes = bench.sizes_of(hidden)
    net, X, y, ws = _step_setup(sizes, batch, rng)
    lr = 0.05
    # the NumPy reference step from the same weights
    Ws = [W.copy() for W in net.weights]
    bs = [b.copy() for b in net.biases]
    bench._numpy_epoch(X, y, Ws, bs, np.arange(batch), batch, lr)
    hp = np.zeros(2 * k.HP_SIZE)  # the weights' and the biases' hyperparameters
    hp[k.HP_LR] = hp[k.HP_SIZE + k.HP_LR] = lr
    grads = np.zeros_like(net.params)
    empty = np.zeros(0, net.dtype)
    targets = np.zeros((1, sizes[-1]), net.dtype)
    order = np.arange(batch)
    losses = np.zeros(batch)
    stats = np.zeros((1, 2))

    from fastmlp._buffers import Data, Network, OptimizerState, Results
    from fastmlp._plan import phase_plan
    plan = phase_plan(sizes, "train")
    data = Data(X, 0, 255.0, y, targets, False, np.ones(1), False, k.CE)
    results = Results(losses, stats, np.empty((0, sizes[-1]), net.dtype))

    def step(params):
        return k._drive(plan, Network(params, net.w_off, net.b_off, net.sizes_array, k.RELU, k.SOFTMAX),
                        ws.buffers(), OptimizerState(grads, empty, empty, k.SGD, hp, 1), data, order, batch,
                        threads, results)

    start = net.params.copy()
    assert step(net.params) == 1
    for l in range(len(sizes) - 1):
        np.testing.assert_allclose(net.weights[l], Ws[l], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(net.biases[l], bs[l], rtol=1e-4, atol=1e-6)
    params = start.copy()
    # always stepping from the same start keeps the timed work identical
    benchmark.pedantic(step, setup=lambda: (params.__setitem__(slice(None), start), ((params,), {}))[1],
                       rounds=50 if batch <= 32 else 20, warmup_rounds=2)
    _flops_info(benchmark, batch * bench.flops_per_sample(sizes))
