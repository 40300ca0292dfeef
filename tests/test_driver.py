"""The phase plans and the one compiled driver (_kernels._drive) that walks them, in each mode,
against the NumPy reference written from the lecture (tests/reference.py)."""
import platform

import numpy as np
import pytest

import reference as ref
from tolerances import tol

from fastmlp import _kernels as k
from fastmlp._buffers import (Data, Network, OptimizerState, Results, Workspace, first_layer_by_samples, input_bytes,
                              layout)
from fastmlp._plan import (BACKWARD, BACKWARD_ACCUMULATE, BACKWARD_UPDATE, FORWARD, GATHER, GATHER_CHUNK, LOSS,
                           SAMPLE_SUM,
                           OUTPUT, OUTPUT_COPY, OUTPUT_STEP, describe, phase_plan)

ACC, UPD = BACKWARD_ACCUMULATE, BACKWARD_UPDATE


# ------------------------------------------------------------------------------------ the plans
@pytest.mark.parametrize("sizes, mode, rows", [
    # no hidden layer: the output step, then one backward region for dW^1 (k = 1 = L)
    ([4, 3], "train", [(GATHER, 0, GATHER_CHUNK), (OUTPUT_STEP, 1, 0), (BACKWARD, 1, UPD)]),
    # with hidden layers, the sum of the sample parts' gradients of layer 1 last (work only when
    # a minibatch's inputs are large: _buffers.first_layer_by_samples)
    ([4, 5, 3], "train", [(GATHER, 0, GATHER_CHUNK), (FORWARD, 1, 0), (OUTPUT_STEP, 2, 0), (BACKWARD, 1, UPD),
                          (SAMPLE_SUM, 1, UPD)]),
    ([4, 5, 6, 3], "train", [(GATHER, 0, GATHER_CHUNK), (FORWARD, 1, 0), (FORWARD, 2, 0), (OUTPUT_STEP, 3, 0),
                             (BACKWARD, 2, UPD), (BACKWARD, 1, UPD), (SAMPLE_SUM, 1, UPD)]),
    ([4, 5, 6, 3], "gradient", [(GATHER, 0, GATHER_CHUNK), (FORWARD, 1, 0), (FORWARD, 2, 0),
                                (OUTPUT_STEP, 3, 0), (BACKWARD, 2, 0), (BACKWARD, 1, 0), (SAMPLE_SUM, 1, 0)]),
    ([4, 3], "forward", [(GATHER, 0, 0), (FORWARD, 1, 0), (OUTPUT, 1, OUTPUT_COPY)]),
    ([4, 5, 6, 3], "forward", [(GATHER, 0, 0), (FORWARD, 1, 0), (FORWARD, 2, 0), (FORWARD, 3, 0),
                               (OUTPUT, 3, OUTPUT_COPY)]),
    ([4, 5, 3], "evaluate", [(GATHER, 0, 0), (FORWARD, 1, 0), (FORWARD, 2, 0), (OUTPUT, 2, 0), (LOSS, 2, 0)]),
    ([4, 5, 3], "evaluate+forward", [(GATHER, 0, 0), (FORWARD, 1, 0), (FORWARD, 2, 0), (OUTPUT, 2, OUTPUT_COPY),
                                     (LOSS, 2, 0)]),
    ([4, 5, 6, 3], "gradients", [(GATHER, 0, 0), (FORWARD, 1, 0), (FORWARD, 2, 0), (FORWARD, 3, 0),
                                 (OUTPUT, 3, 0), (LOSS, 3, 0), (BACKWARD, 2, ACC), (BACKWARD, 1, ACC),
                                 (SAMPLE_SUM, 1, ACC)]),
])
def test_phase_plan(sizes, mode, rows):
    plan = phase_plan(sizes, mode)
    assert plan.dtype == np.int64 and plan.shape == (len(rows), 3)
    assert [tuple(r) for r in plan.tolist()] == rows


def test_phase_plan_described_and_checked():
    assert describe(phase_plan([4, 5, 3], "train")).splitlines() == [
        "gather 0 (chunk)", "forward 1", "output step 2", "backward 1 (update)", "sum 1 (update)"]
    with pytest.raises(ValueError, match="mode: got 'predict'"):
        phase_plan([4, 3], "predict")


# ---------------------------------------------------------------------------- the driver's modes
def _setup(dtype, sizes=(7, 9, 6, 4), n=23, activation="tanh", seed=0):
    rng = np.random.default_rng(seed)
    w_off, b_off, P = layout(list(sizes))
    params = (rng.standard_normal(P) * 0.5).astype(dtype)
    W = [params[w_off[l]:w_off[l] + sizes[l] * sizes[l - 1]].reshape(sizes[l], sizes[l - 1])
         for l in range(1, len(sizes))]
    b = [params[b_off[l]:b_off[l] + sizes[l]] for l in range(1, len(sizes))]
    X = rng.integers(0, 256, (n, sizes[0]), dtype=np.uint8)
    y = rng.integers(0, sizes[-1], n).astype(np.int64)
    net = Network(params, w_off, b_off, np.array(sizes, dtype=np.int64), k.ACTIVATION_CODES[activation], k.SOFTMAX)
    data = Data(*input_bytes(X), 255.0, y, np.zeros((1, sizes[-1]), dtype), False, np.ones(1), False, k.CE)
    return net, W, b, X / 255, y, data


# ------------------------------------------------------------------------------------ the views
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_views_are_the_flat_buffers_own_memory(dtype):
    # W^l and a layer's rows of a workspace, as the driver and the prediction kernel see them: the
    # (N_l, N_{l-1}) and (n, N_l) blocks at their offsets, C-contiguous, and views (writes reach the
    # flat buffer)
    sizes = [5, 3, 2]
    w_off, b_off, n_params = layout(sizes)
    s = np.array(sizes, dtype=np.int64)
    params = np.arange(n_params, dtype=dtype)
    for l in (1, 2):
        W = k._weights(params, w_off, s, l)
        assert W.dtype == dtype and W.shape == (sizes[l], sizes[l - 1]) and W.flags.c_contiguous
        np.testing.assert_array_equal(W, np.arange(w_off[l], w_off[l] + W.size).reshape(W.shape))
        W[-1, -1] = -1.0
        assert params[w_off[l] + W.size - 1] == -1.0
    buf = np.arange(40, dtype=dtype)
    a_off = np.array([0, 7, 19], dtype=np.int64)
    for l, n in ((1, 4), (2, 1), (2, 0)):
        R = k._rows(buf, a_off, s, l, n)
        assert R.shape == (n, sizes[l]) and R.flags.c_contiguous
        np.testing.assert_array_equal(R, np.arange(a_off[l], a_off[l] + n * sizes[l]).reshape(n, sizes[l]))
    k._rows(buf, a_off, s, 1, 4)[3, 2] = -5.0
    assert buf[7 + 3 * 3 + 2] == -5.0 and np.count_nonzero(buf < 0) == 1


def _run(mode, net, data, n, batch, hp=None, grads=None, nthreads=2):
    dtype = net.params.dtype
    sizes = net.sizes.tolist()
    ws = Workspace(sizes, dtype, batch, x_capacity=n)
    steps = -(-n // batch)
    results = Results(np.zeros(n), np.zeros((steps, 2)), np.zeros((n, sizes[-1]), dtype))
    if hp is None:
        hp = np.zeros(2 * k.HP_SIZE)
    grads = np.zeros_like(net.params) if grads is None else grads
    empty = np.zeros(0, dtype)
    done = k._drive(phase_plan(sizes, mode), net, ws.buffers(), OptimizerState(grads, empty, empty, k.SGD, hp, 1),
                    data, np.arange(n), batch, nthreads, results)
    return done, grads, results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_mode_is_the_lecture_forward_pass(dtype):
    net, W, b, X, y, data = _setup(dtype)
    done, _, res = _run("forward", net, data, 23, 5)
    assert done == 5
    np.testing.assert_allclose(res.outputs, ref.forward(W, b, X, "tanh", "softmax"), **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [(1100, 20, 10), (50, 1030, 17, 3)])
def test_forward_mode_of_wide_layers_is_the_lecture_forward_pass(sizes, dtype):
    """Layers of 1024 inputs or more (on AVX2 CPUs their forward pass takes the micro-kernel), in
    minibatches of 20 and a last one of 7."""
    net, W, b, X, y, data = _setup(dtype, sizes=sizes, n=47, activation="relu", seed=4)
    done, _, res = _run("forward", net, data, 47, 20)
    assert done == 3
    np.testing.assert_allclose(res.outputs, ref.forward(W, b, X, "relu", "softmax"), **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes,batch", [((200, 100, 10), 200), ((30, 16, 3), 17), ((30, 52, 3), 40)])
def test_forward_split_by_tiles_is_the_lecture_forward_pass_on_any_thread_count(sizes, batch, dtype):
    """Where the threads share a layer's (panel of rows, group of 6 samples) tiles (a thread's
    rows would be fewer than the samples; _kernels._dense_forward_block with T > 1): on 1-4
    threads the same bits, and the lecture's forward pass. 100 units of 200 samples: 7 panels of
    16 rows (float32) or 13 of 8 (float64), one split by samples on 2 threads; 16 units of 17
    samples on 3 threads: one panel split 6 + 6 + 5 samples (a part with fewer samples than rows)."""
    n = 2 * batch + 5
    net, W, b, X, y, data = _setup(dtype, sizes=sizes, n=n, activation="relu", seed=5)
    outs = [_run("forward", net, data, n, batch, nthreads=t)[2].outputs for t in (1, 2, 3, 4)]
    for out in outs[1:]:
        assert out.tobytes() == outs[0].tobytes()
    np.testing.assert_allclose(outs[0], ref.forward(W, b, X, "relu", "softmax"), **tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_evaluate_mode_gives_the_losses_and_correct_count(dtype):
    net, W, b, X, y, data = _setup(dtype)
    done, _, res = _run("evaluate+forward", net, data, 23, 5)
    yhat = ref.forward(W, b, X, "tanh", "softmax")
    np.testing.assert_allclose(res.losses, ref.loss_forward(yhat, y, "ce").astype(np.float64),
                               rtol=10 * tol(dtype)["rtol"])
    assert res.stats[:, 1].sum() == np.sum(np.argmax(yhat, axis=1) == y)
    np.testing.assert_allclose(res.stats[:, 0].sum(), res.losses.sum(), rtol=1e-12)
    np.testing.assert_allclose(res.outputs, yhat, **tol(dtype))
    # evaluate alone computes the same losses and writes no outputs
    _, _, alone = _run("evaluate", net, data, 23, 5)
    np.testing.assert_array_equal(alone.losses, res.losses)
    assert not alone.outputs.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_mode_accumulates_the_gradient_of_the_mean_cost(dtype):
    net, W, b, X, y, data = _setup(dtype)
    hp = np.zeros(2 * k.HP_SIZE)
    hp[k.HP_GRAD_SCALE] = 1.0 / 23   # the mean over all rows, in minibatches of 5
    before = net.params.copy()
    _, grads, _ = _run("gradients", net, data, 23, 5, hp=hp)
    dW, db = ref.gradients(W, b, X, y, "tanh", "softmax", "ce")
    for l in range(3):
        g = grads[net.w_off[l + 1]:net.w_off[l + 1] + W[l].size].reshape(W[l].shape)
        np.testing.assert_allclose(g, dW[l], rtol=20 * tol(dtype)["rtol"], atol=20 * tol(dtype)["atol"])
        np.testing.assert_allclose(grads[net.b_off[l + 1]:net.b_off[l + 1] + b[l].size], db[l],
                                   rtol=20 * tol(dtype)["rtol"], atol=20 * tol(dtype)["atol"])
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_and_train_modes_are_one_minibatch_step(dtype):
    net, W, b, X, y, data = _setup(dtype)
    start = net.params.copy()
    done, grads, res = _run("gradient", net, data, 23, 23)
    assert done == 1
    np.testing.assert_array_equal(net.params, start)       # no update
    dW, db = ref.gradients(W, b, X, y, "tanh", "softmax", "ce")
    np.testing.assert_allclose(grads[:net.b_off[1]].reshape(W[0].shape), dW[0], rtol=20 * tol(dtype)["rtol"],
                               atol=20 * tol(dtype)["atol"])
    np.testing.assert_allclose(res.stats[0, 0] / 23, ref.cost(W, b, X, y, "tanh", "softmax", "ce"),
                               rtol=10 * tol(dtype)["rtol"])
    hp = np.zeros(2 * k.HP_SIZE)
    hp[k.HP_LR] = hp[k.HP_SIZE + k.HP_LR] = 0.5
    new_W, new_b = ref.sgd_step(W, b, dW, db, 0.5)
    done, grads2, _ = _run("train", net, data, 23, 23, hp=hp)
    assert done == 1
    np.testing.assert_array_equal(grads2, grads)            # the same gradient, then the step
    for l in range(3):
        np.testing.assert_allclose(W[l], new_W[l], rtol=20 * tol(dtype)["rtol"], atol=20 * tol(dtype)["atol"])
        np.testing.assert_allclose(b[l], new_b[l], rtol=20 * tol(dtype)["rtol"], atol=20 * tol(dtype)["atol"])


def test_train_mode_stops_before_the_update_of_a_non_finite_step():
    net, W, b, X, y, data = _setup(np.float64)
    net.params[0] = np.nan
    start = net.params.copy()
    hp = np.zeros(2 * k.HP_SIZE)
    hp[k.HP_LR] = hp[k.HP_SIZE + k.HP_LR] = 0.5
    done, _, res = _run("train", net, data, 23, 8, hp=hp)
    assert done == 0 and not np.isfinite(res.stats[0, 0])
    np.testing.assert_array_equal(net.params[1:], start[1:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", ["adam", "nesterov"])
def test_train_mode_takes_one_hyperparameter_row_per_step_and_reports_weight_norms(dtype, optimizer):
    """hp with one row per minibatch (the last row serving the rest) trains exactly like one call per
    minibatch with that row, and a third stats column receives sum ||W^l||^2 before each update."""
    rows = []
    for s in range(4):  # a different step, decay and epsilon for every minibatch
        hp = np.zeros(2 * k.HP_SIZE)
        hp[k.HP_LR], hp[k.HP_WEIGHT_DECAY], hp[k.HP_EPS] = 0.05 * (s + 1), 0.1 * s, 1e-3 / (s + 1)
        hp[k.HP_MOMENTUM] = hp[k.HP_BETA1] = 0.9
        hp[k.HP_BETA2] = 0.999
        hp[k.HP_SIZE:] = hp[:k.HP_SIZE]
        hp[k.HP_SIZE + k.HP_WEIGHT_DECAY] = 0.0
        rows.append(hp)
    code = k.OPTIMIZER_CODES[optimizer]
    n, batch = 23, 5  # 5 minibatches, the last of 3 rows; the table has 4 rows
    net, W, b, X, y, data = _setup(dtype, n=n)
    sizes = net.sizes.tolist()
    start = net.params.copy()
    order = np.random.default_rng(1).permutation(n)

    def train(params, m, v, order, hp, step, stats):
        ws = Workspace(sizes, dtype, batch, x_capacity=n)
        return k._drive(phase_plan(sizes, "train"), net._replace(params=params), ws.buffers(),
                        OptimizerState(np.zeros_like(params), m, v, code, hp, step), data, order, batch, 2,
                        Results(np.zeros(batch), stats, np.zeros((0, sizes[-1]), dtype)))

    chunked = start.copy(), np.zeros_like(start), np.zeros_like(start)
    stats = np.zeros((5, 3))
    assert train(*chunked, order, np.concatenate(rows), 7, stats) == 5
    stepped = start.copy(), np.zeros_like(start), np.zeros_like(start)
    for s in range(5):
        params = stepped[0]
        W_sq = sum(float(np.sum(params[net.w_off[l]:net.w_off[l] + sizes[l] * sizes[l - 1]].astype(np.float64) ** 2))
                   for l in range(1, len(sizes)))
        one = np.zeros((1, 3))
        assert train(*stepped, order[batch * s:batch * (s + 1)], rows[min(s, 3)], 7 + s, one) == 1
        np.testing.assert_array_equal(one, stats[s:s + 1])
        np.testing.assert_allclose(stats[s, 2], W_sq, rtol=1e-13)
    for a, b_ in zip(chunked, stepped):
        assert a.tobytes() == b_.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes,batch", [((300, 20, 12, 4), 200), ((300, 17, 10), 200), ((300, 36, 10), 200),
                                         ((300, 100, 10), 200), ((64, 40, 2048, 10), 200), ((1100, 20, 10), 200),
                                         ((1400, 20, 10), 200), ((784, 36, 10), 344), ((16, 520, 520, 3), 40),
                                         ((2100, 260, 10), 40), ((64, 30, 22, 18, 5), 40)])
def test_train_and_forward_are_bit_identical_on_one_and_two_threads(sizes, batch, dtype):
    """Layers whose units do not split evenly into the kernels' row groups (20 units: 12 and 8 per
    thread; 17 units: 12 and 5, a share smaller than the AVX2 micro-kernel's 6-row tile; 100
    units: 7 panels of 16 rows (float32), one of them split by samples between the threads)
    give the same bits on one thread and two: the trainers switch thread counts between chunks of
    minibatches on timing alone (fastmlp._pacer), so any difference would make runs differ. (2048
    units above 40: on AVX2 CPUs the delta recursion takes the micro-kernel there; 1100 inputs: its
    forward pass. 1400 inputs of 200 samples and 784 of 344: a_prev over FORWARD_SPLIT_BYTES in
    float32, so the forward pass splits the samples, 200 = 112 + 88 and 344 = 176 + 168, with
    the micro-kernel (AVX2) and without. 520 x 520: with the AVX-512 tiles, one thread's dW^2 in
    float32, and either thread's in float64, is larger than UPDATE_SPLIT_BYTES, so the gradient
    and the step go by blocks of rows there, and in one go for each thread's half in float32. 2100 x
    260: the same for dW^1, whose blocks end in a partial one, 130 = 4 x 32 + 2 rows. 64-30-22-18-5:
    three hidden layers, so delta^2 and delta^1 are sums of the partial products of W^3's and W^2's
    row parts, 12 + 10 and 16 + 14 rows.)"""
    if sizes == (16, 520, 520, 3):
        assert 520 * 520 * 4 > k.UPDATE_SPLIT_BYTES >= 520 * 260 * 4
    if sizes == (2100, 260, 10):
        assert 130 * 2100 * 4 > k.UPDATE_SPLIT_BYTES and 130 % k.UPDATE_SPLIT_ROWS != 0
    n = 2 * batch
    out = []
    for nthreads in (1, 2):
        net, W, b, X, y, data = _setup(dtype, sizes=sizes, n=n, activation="relu", seed=2)
        hp = np.zeros(2 * k.HP_SIZE)
        hp[k.HP_LR] = hp[k.HP_SIZE + k.HP_LR] = 0.01
        hp[k.HP_BETA1], hp[k.HP_BETA2], hp[k.HP_EPS] = 0.9, 0.999, 1e-8
        hp[k.HP_SIZE:k.HP_SIZE + k.HP_EPS + 1] = hp[:k.HP_EPS + 1]
        m, v = np.zeros_like(net.params), np.zeros_like(net.params)
        ws = Workspace(list(sizes), dtype, batch, x_capacity=n)
        stats = np.zeros((2, 3))
        assert k._drive(phase_plan(list(sizes), "train"), net, ws.buffers(),
                        OptimizerState(np.zeros_like(net.params), m, v, k.ADAM, hp, 1), data, np.arange(n), batch,
                        nthreads, Results(np.zeros(batch), stats, np.zeros((0, sizes[-1]), dtype))) == 2
        _, _, res = _run("forward", net, data, n, batch, nthreads=nthreads)
        out.append((net.params.tobytes(), m.tobytes(), v.tobytes(), stats.tobytes(), res.outputs.tobytes()))
    assert out[0] == out[1]


def test_every_mode_and_input_dtype_runs_one_compiled_driver():
    """After a first training run of a float64 network, evaluation, forward, predict and the
    gradients, and training on float32 and float64 X, all run the driver compiled for it: no call
    adds a signature, nor do read-only X and y (a memory-mapped data set)."""
    from fastmlp import MLP, train
    rng = np.random.default_rng(3)
    X8 = rng.integers(0, 256, (40, 7), dtype=np.uint8)
    y = rng.integers(0, 4, 40)
    net = MLP([7, 9, 4], dtype="float64", seed=0)
    train(net, X8, y, epochs=1, batch_size=8, verbose=False, threads=2)
    compiled = list(k._drive.signatures)
    X_ro, y_ro = X8.copy(), y.astype(np.int64)
    X_ro.flags.writeable = y_ro.flags.writeable = False
    train(net, X_ro, y_ro, epochs=1, batch_size=8, verbose=False, threads=2)
    net.evaluate(X_ro, y_ro)
    for X in (X8, (X8 / 255).astype(np.float32), X8 / 255):
        train(net, X, y, epochs=1, batch_size=8, verbose=False, threads=2)
        net.evaluate(X, y)
        net.loss(X, y)
        net.predict(X[:3])
        net.forward(X)
        net.gradients(X, y)
    assert list(k._drive.signatures) == compiled


def test_read_only_rows_compile_no_new_forward_kernel():
    """forward/predict of a few rows (the serial kernel) and of many (the parallel one) take a
    read-only X (a memory-mapped data set) through the signatures a writable X compiled."""
    from fastmlp import MLP
    X = np.random.default_rng(4).random((300, 7))
    net = MLP([7, 9, 4], seed=0)
    expected = net.forward(X)
    net.forward(X[:2])
    compiled = list(k._forward_rows.signatures), list(k._forward_parallel.signatures)
    X_ro = X.copy()
    X_ro.flags.writeable = False
    np.testing.assert_array_equal(net.forward(X_ro), expected)
    np.testing.assert_array_equal(net.predict(X_ro[:2]), expected[:2].argmax(axis=1))
    assert (list(k._forward_rows.signatures), list(k._forward_parallel.signatures)) == compiled


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prediction_kernels_compile_once_per_network_dtype(dtype):
    """forward/predict of a few rows and of many, on uint8, float32 and float64 X, run one compiled
    _forward_rows and one _forward_parallel per network dtype (X reaches them as bytes and a code)."""
    from fastmlp import MLP
    rng = np.random.default_rng(5)
    net = MLP([7, 9, 4], dtype=dtype, seed=0)
    X8 = rng.integers(0, 256, (9000, 7), dtype=np.uint8)  # 9000 rows x 112 parameters: the parallel path
    expected = net.forward(X8)
    net.forward(X8[:2])
    compiled = set(k._forward_rows.signatures), set(k._forward_parallel.signatures)
    for X in ((X8 / 255).astype(np.float32), X8 / 255):
        np.testing.assert_allclose(net.forward(X), expected, rtol=1e-5)
        np.testing.assert_allclose(net.forward(X[:2]), expected[:2], rtol=1e-5)
    assert (set(k._forward_rows.signatures), set(k._forward_parallel.signatures)) == compiled


# ------------------------------------------------------------------- the driver's threads
SPLIT_SIZES = (300, 256, 128, 10)  # every phase but the output step is split between 2 threads at batch 64


def _train_args(nthreads, n=200, batch=64):
    net, _, _, _, _, data = _setup(np.float32, sizes=SPLIT_SIZES, n=n, activation="relu")
    hp = np.zeros(2 * k.HP_SIZE)
    hp[k.HP_LR] = hp[k.HP_SIZE + k.HP_LR] = 0.05
    ws = Workspace(list(SPLIT_SIZES), np.float32, batch, x_capacity=n)
    results = Results(np.zeros(n), np.zeros((-(-n // batch), 2)), np.zeros((0, SPLIT_SIZES[-1]), np.float32))
    empty = np.zeros(0, np.float32)
    return (phase_plan(list(SPLIT_SIZES), "train"), net, ws.buffers(),
            OptimizerState(np.zeros_like(net.params), empty, empty, k.SGD, hp, 1), data, np.arange(n), batch,
            nthreads, results)


def _trained_params(nthreads):
    args = _train_args(nthreads)
    assert k._drive(*args) == 4
    return args[1].params.tobytes()


def test_backward_phases_above_the_first_layer_split_rows_into_fixed_parts():
    """Above layer 1, a backward phase has one unit per part of W^k's rows (ROW_PARTS, the split of
    the forward pass's rows on two threads), whatever the thread count: on three threads, on two
    and on one (one unit taking every part) training gives the same bits."""
    sizes = np.array(SPLIT_SIZES)
    assert k.ROW_PARTS == 2
    assert k._phase_threads(BACKWARD, 2, sizes, 64, 3, 4) == 2 and k._phase_threads(BACKWARD, 1, sizes, 64, 3, 4) == 3
    assert [k._row_part(128, p) for p in range(2)] == [k._chunk(128, t, 2) for t in range(2)] == [(0, 64), (64, 128)]
    assert _trained_params(3) == _trained_params(2) == _trained_params(1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [(2100, 9, 4), (2100, 9, 6, 4)])
def test_layer_one_split_by_samples_gives_the_lecture_gradients_with_the_same_bits_on_any_thread_count(sizes,
                                                                                                    dtype):
    """Inputs over SAMPLE_SPLIT_BYTES in a minibatch of at least N_1 samples: the backward phase of
    layer 1 takes the samples in SAMPLE_PARTS (2) fixed parts (260 = 144 + 116, 130 = 80 + 50), each
    summing its own gradient of W^1 (with one hidden layer, of W^2 too), and the SAMPLE_SUM phase
    adds them and takes the step. One minibatch's gradient, the gradients accumulated over two
    minibatches and an SGD step are the lecture's, with the same bits on 1, 2 and 3 threads."""
    n = 260
    s = np.array(sizes, dtype=np.int64)
    itemsize = np.dtype(dtype).itemsize
    for rows in (n, n // 2):
        assert first_layer_by_samples(list(sizes), rows, itemsize) and k._by_samples(s, rows, itemsize)
    assert not first_layer_by_samples(list(sizes), 8, itemsize) and not k._by_samples(s, 8, itemsize)
    assert [k._sample_part(n, p) for p in range(2)] == [(0, 144), (144, 260)]
    assert k._phase_threads(BACKWARD, 1, s, n, 3, itemsize) == 2
    assert k._phase_threads(SAMPLE_SUM, 1, s, n, 3, itemsize) > 0 == k._phase_threads(SAMPLE_SUM, 1, s, 8, 3,
                                                                                        itemsize)
    close = {"rtol": 20 * tol(dtype)["rtol"], "atol": 20 * tol(dtype)["atol"]}
    bits = []
    for nthreads in (1, 2, 3):
        net, W, b, X, y, data = _setup(dtype, sizes=sizes, n=n, seed=6)
        dW, db = ref.gradients(W, b, X, y, "tanh", "softmax", "ce")
        _, grad, _ = _run("gradient", net, data, n, n, nthreads=nthreads)
        hp = np.zeros(2 * k.HP_SIZE)
        hp[k.HP_GRAD_SCALE] = 1.0 / n
        _, grads, _ = _run("gradients", net, data, n, n // 2, hp=hp, nthreads=nthreads)
        for g in (grad, grads):
            for l in range(len(sizes) - 1):
                np.testing.assert_allclose(g[net.w_off[l + 1]:net.b_off[l + 1]].reshape(W[l].shape), dW[l], **close)
                np.testing.assert_allclose(g[net.b_off[l + 1]:net.b_off[l + 1] + b[l].size], db[l], **close)
        hp = np.zeros(2 * k.HP_SIZE)
        hp[k.HP_LR] = hp[k.HP_SIZE + k.HP_LR] = 0.5
        new_W, new_b = ref.sgd_step(W, b, dW, db, 0.5)
        _run("train", net, data, n, n, hp=hp, nthreads=nthreads)
        for l in range(len(sizes) - 1):
            np.testing.assert_allclose(W[l], new_W[l], **close)
            np.testing.assert_allclose(b[l], new_b[l], **close)
        bits.append((grad.tobytes(), grads.tobytes(), net.params.tobytes()))
    assert bits[0] == bits[1] == bits[2]


def test_a_thread_that_never_starts_holds_nobody_up():
    """The driver's threads take each other's work units: thread 0 of 2 alone (thread 1 descheduled
    for the whole call) does every unit, with the bits of two threads running; thread 1, started
    afterwards, finds nothing left to do."""
    sizes = np.array(SPLIT_SIZES)
    assert k._phase_threads(FORWARD, 1, sizes, 64, 2, 4) == 2 and k._phase_threads(BACKWARD, 1, sizes, 64, 2, 4) == 2
    two = _train_args(2)
    assert k._drive(*two) == 4
    alone = _train_args(2)
    kern = k.kernels(np.float32)
    sync = np.zeros(k._sync_size(alone[0], 2), np.int64)
    k._drive_plan(*alone, kern, 0, sync)
    assert alone[1].params.tobytes() == two[1].params.tobytes()
    np.testing.assert_array_equal(alone[8].stats, two[8].stats)
    done = sync.copy()
    k._drive_plan(*alone, kern, 1, sync)
    np.testing.assert_array_equal(sync, done)
    assert alone[1].params.tobytes() == two[1].params.tobytes()


def test_the_calls_rows_are_gathered_in_blocks_by_whichever_thread_comes():
    """At a call's first minibatch its rows are gathered GATHER_BLOCK at a time, each block by the
    thread that takes it next from a shared count (minibatches smaller than PRIVATE_INPUT_MIN):
    thread 1 of 2 alone (thread 0 late) takes both units of the gather and gathers every block
    once, and trains to the bits of two threads."""
    n, batch = 1000, 4
    assert batch < k.PRIVATE_INPUT_MIN
    assert k._phase_threads(GATHER, 1, np.array(SPLIT_SIZES), n, 2, 4) == 2
    two = _train_args(2, n=n, batch=batch)
    assert k._drive(*two) == -(-n // batch)
    late = _train_args(2, n=n, batch=batch)
    plan = late[0]
    sync = np.zeros(k._sync_size(plan, 2), np.int64)
    k._drive_plan(*late, k.kernels(np.float32), 1, sync)
    assert late[1].params.tobytes() == two[1].params.tobytes()
    np.testing.assert_array_equal(late[2].X[:n], two[2].X[:n])
    # every block once (1000 rows: 16 blocks), and each of the two units one look past the end
    assert sync[k._stop_index(plan, 2) + 1 + 2] == (16 + 2) * k.GATHER_BLOCK


def test_minibatches_of_64_rows_are_gathered_by_each_thread_into_rows_of_its_own():
    """From PRIVATE_INPUT_MIN samples a minibatch, on up to PRIVATE_INPUT_THREADS threads, training
    gathers each minibatch's rows into rows of each thread's own (X[t * batch:]) before the thread's
    first unit of layer 1: thread 0 of 2 alone leaves the last minibatch's rows in its rows and
    none in thread 1's, gathers no row in blocks, and trains to the bits of 3 threads, which gather
    the call's rows in blocks at its first minibatch."""
    n, batch = 200, 64
    assert batch >= k.PRIVATE_INPUT_MIN and k.PRIVATE_INPUT_THREADS == 2
    three = _train_args(3, n=n, batch=batch)
    assert k._drive(*three) == 4
    alone = _train_args(2, n=n, batch=batch)
    alone[2].X[:] = np.nan
    plan = alone[0]
    sync = np.zeros(k._sync_size(plan, 2), np.int64)
    k._drive_plan(*alone, k.kernels(np.float32), 0, sync)
    assert alone[1].params.tobytes() == three[1].params.tobytes()
    np.testing.assert_array_equal(alone[8].stats, three[8].stats)
    last = n - 3 * batch  # (the last minibatch's rows, over the 64 of the one before)
    np.testing.assert_array_equal(alone[2].X[:last], three[2].X[3 * batch:n])
    np.testing.assert_array_equal(alone[2].X[last:batch], three[2].X[2 * batch + last:3 * batch])
    assert np.isnan(alone[2].X[batch:]).all()
    assert sync[k._stop_index(plan, 2) + 1 + 2] == 0  # (no block counted)
    assert _trained_params(2) == alone[1].params.tobytes()


@pytest.mark.parametrize("nthreads", [1, 2])
def test_a_traced_call_trains_to_the_same_bits_and_counts_each_slots_cycles(nthreads):
    """_drive.traced runs the same call and returns, per thread and slot (the weight norm, then each
    phase of the plan and its statistics slot), the time-stamp counter's cycles spent waiting and in
    the slot's units: the same parameters and statistics as an untraced call, bit for bit. On x86
    (where LLVM's cycle counter is rdtsc, at a constant rate), the threads spent at least 10,000
    cycles in each forward and backward phase (each at least 2.1 million multiply-adds over the 4
    minibatches: no core does 200 a cycle), and the output step's slot and its statistics' are
    counted. (How little the slots without units take is not asserted: a thread descheduled there
    would count the time.)"""
    plain = _train_args(nthreads)
    assert k._drive(*plain) == 4
    args = _train_args(nthreads)
    done, cycles = k._drive.traced(*args)
    assert done == 4
    assert args[1].params.tobytes() == plain[1].params.tobytes()
    np.testing.assert_array_equal(args[8].stats, plain[8].stats)
    plan = args[0]
    assert cycles.shape == (nthreads, 2 * len(plan) + 1, 2) and cycles.dtype == np.int64
    assert (cycles >= 0).all()
    if platform.machine() not in ("x86_64", "AMD64"):
        return
    kinds = [row[0] for row in plan]
    heavy = [2 * p + 1 for p, kind in enumerate(kinds) if kind in (FORWARD, BACKWARD)]
    assert len(heavy) == 4  # (forward 1, 2; backward 2, 1)
    assert (cycles[:, heavy, 1].sum(axis=0) >= 10_000).all()
    output = 2 * kinds.index(OUTPUT_STEP) + 1
    assert (cycles[0, [output, output + 1], 1] > 0).all()


def test_a_network_that_takes_no_micro_kernel_gets_the_kernels_without_it(monkeypatch):
    """micro_layers tells, from a network's sizes, whether any layer's forward pass and any W^l
    (l >= 2) of the delta recursion may take the AVX2 micro-kernel; network_kernels then hands the
    driver _dense_forward_loops and _delta_backward_tiles where none does (their compile time is
    a third of the full kernels'), and the two bundles train a network to the same bits."""
    with monkeypatch.context() as m:  # thresholds between always (AVX2) and never
        m.setattr(k, "GATHER_ZMM", False)
        m.setattr(k, "MICRO_FORWARD_MIN_INPUTS", 1024)
        m.setattr(k, "MICRO_DELTA_MIN_ROWS", 2048)
        assert k.micro_layers((784, 100, 10)) == (False, False)
        assert k.micro_layers((1100, 64, 10)) == (True, False)
        assert k.micro_layers((1100, 15, 10)) == (False, False)     # fewer than MICRO_FORWARD_MIN units
        assert k.micro_layers((784, 2048, 2048, 10)) == (True, True)
        assert k.micro_layers((50, 40, 2100, 10)) == (False, True)
        assert k.micro_layers((50, 2100, 10)) == (False, False)     # the rows of W^1 are never summed over
        assert k.micro_layers((0, 2048, 0)) == (False, False)       # sizes not known yet
        m.setattr(k, "MICRO_FORWARD_MIN_INPUTS", -1)
        m.setattr(k, "MICRO_DELTA_MIN_ROWS", -1)
        assert k.micro_layers((784, 2048, 2048, 10)) == (False, False)
        m.setattr(k, "MICRO_FORWARD_MIN_INPUTS", 0)                # AVX2: always
        m.setattr(k, "MICRO_DELTA_MIN_ROWS", 0)
        assert k.micro_layers((784, 100, 10)) == (True, True)
        assert k.micro_layers((20, 12, 3)) == (False, True)
        m.setattr(k, "MICRO_FORWARD_MIN_INPUTS", 2048)             # AVX-512 CPUs
        m.setattr(k, "MICRO_DELTA_MIN_ROWS", -1)
        m.setattr(k, "GATHER_ZMM", True)
        assert k.micro_layers((784, 100, 10)) == (False, False)
        assert k.micro_layers((784, 511, 10)) == (False, False)
        assert k.micro_layers((784, 512, 10)) == (True, False)      # the gather tile: any inputs
        assert k.micro_layers((2048, 100, 10)) == (True, False)
    assert k.kernels("float32").forward_block.dispatcher is k._dense_forward_block
    assert k.kernels("float32").delta_cols.dispatcher is k._delta_backward_cols
    assert k.kernels("float64", False, False).forward_block.dispatcher is k._dense_forward_loops
    assert k.kernels("float64", False, False).delta_cols.dispatcher is k._delta_backward_tiles
    micro = k.micro_layers(SPLIT_SIZES)
    assert k.network_kernels(np.float32, np.array(SPLIT_SIZES)) == k.kernels("float32", *micro)
    # (without the forward micro-kernel where a layer takes it, the bits would differ; the delta's
    # micro-kernel and tiles give the same bits)
    trained = []
    for kern in (k.kernels("float32"), k.kernels("float32", micro[0], False)):
        args = _train_args(1)
        k._drive_plan(*args, kern, 0, np.zeros(k._sync_size(args[0], 1), np.int64))
        trained.append(args[1].params.tobytes())
    assert trained[0] == trained[1] and trained[0] == _trained_params(1)


@pytest.mark.parametrize("nthreads", [2, 3])
def test_an_error_in_the_driver_reaches_the_caller(nthreads):
    """An exception raised in the compiled driver (here: a batch size of 0) is raised in the calling
    thread, whichever threads raised it, and leaves the threads ready for the next call."""
    args = list(_train_args(nthreads))
    args[6] = 0
    with pytest.raises(ZeroDivisionError):
        k._drive(*args)
    assert _trained_params(nthreads) == _trained_params(1)


def _child_params():
    return _trained_params(2)


def test_a_forked_child_starts_its_own_threads():
    """After a fork the child has none of the parent's worker threads: it starts its own, and
    trains to the same bits (a child that used the parent's would wait for them forever)."""
    import multiprocessing as mp
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    expected = _trained_params(2)  # the parent's workers are running now
    with mp.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_child_params).get(timeout=300) == expected
