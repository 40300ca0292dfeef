"""fastmlp.train: learning, determinism, threads, exact optimizer steps against the reference,
history, divergence and argument validation."""

import os
import re

import numpy as np
import pytest

import reference as ref

import fastmlp
from fastmlp import MLP
from fastmlp.errors import DivergenceError

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR_Y = np.array([0, 1, 1, 0])


def _blobs(n=90, d=6, k=3, seed=0, dtype=np.float32):
    """k Gaussian clusters in d dimensions: an easy, not trivial classification problem."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, (k, d))
    y = rng.integers(0, k, n)
    X = centers[y] + rng.normal(0, 1.0, (n, d))
    return X.astype(dtype), y


def _params(net):
    return [np.array(p, copy=True) for p in list(net.weights) + list(net.biases)]


def _params64(net):
    return ([np.asarray(w, np.float64).copy() for w in net.weights],
            [np.asarray(b, np.float64).copy() for b in net.biases])


def _train(net, X, y, **kw):
    args = dict(epochs=1, batch_size=32, lr=0.1, optimizer="sgd", momentum=0.0,
                weight_decay=0.0, loss="ce", seed=0, threads=1, verbose=False)
    args.update(kw)
    return fastmlp.train(net, X, y, **args)


# ------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("activation, hidden, optimizer, lr", [
    ("tanh", 8, "sgd", 0.5),
    ("relu", 16, "sgd", 0.5),
    ("tanh", 8, "momentum", 0.1),
])
def test_learns_xor(activation, hidden, optimizer, lr):
    net = MLP([2, hidden, 2], activation=activation, output="softmax", dtype="float32", seed=0)
    _train(net, XOR_X, XOR_Y, epochs=500, batch_size=4, lr=lr, optimizer=optimizer,
           momentum=0.9)
    assert np.array_equal(np.asarray(net.predict(XOR_X)), XOR_Y)       # 100 % accuracy
    assert float(net.loss(XOR_X, XOR_Y)) < 0.1


# ----------------------------------------------------------------------------------- uint8
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uint8_pixels_are_divided_by_255_exactly(dtype):
    """Every byte value, gathered in a shuffled order, equals NumPy's X / 255 in the model's dtype,
    also after training has compiled the gather as a callee of the (fastmath) training kernel:
    Numba would hand a callee without flags of its own the caller's fastmath, and the division
    would become a multiply by 1/255 (126 of the 256 values off by one unit)."""
    from fastmlp import _kernels as P
    net = MLP([16, 4, 3], dtype=np.dtype(dtype).name, seed=0)
    _train(net, np.arange(256, dtype=np.uint8).reshape(16, 16), np.arange(16) % 3, epochs=1, batch_size=8,
           lr=0.1)
    X8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    idx = np.random.default_rng(0).permutation(16)
    out = np.empty((16, 16), dtype)
    P._gather_range(X8, 0, idx, 255.0, out, 0, 16)
    np.testing.assert_array_equal(out, (X8[idx] / 255).astype(dtype))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_input_dtype_trains_alike_through_one_compiled_kernel(dtype):
    """uint8 pixels and the same pixels / 255 as float64 (and, for a float32 network, as float32)
    train bit-identical networks (the gathered values are the same: the float32 quotient of a byte
    by 255 is NumPy's float64 quotient rounded), and switching the input dtype adds no signature
    to the compiled kernels: they read X as bytes with a code for its dtype."""
    from fastmlp import _kernels as P
    rng = np.random.default_rng(5)
    X8 = rng.integers(0, 256, (70, 12), dtype=np.uint8)
    y = rng.integers(0, 3, 70)
    X64 = X8 / 255
    X32 = X64.astype(np.float32)
    nets = []
    compiled = None
    for X in (X8, X32, X64):
        net = MLP([12, 9, 3], dtype=dtype, seed=2)
        _train(net, X, y, epochs=2, batch_size=16, threads=2)
        nets.append(net)
        assert net.forward(X).shape == (70, 3)
        compiled = compiled or list(P._drive.signatures)
        assert list(P._drive.signatures) == compiled
    np.testing.assert_array_equal(nets[0].params, nets[2].params)
    if dtype == "float32":  # (a float64 network reads float32 X as the rounded values it holds)
        np.testing.assert_array_equal(nets[0].params, nets[1].params)


def test_uint8_X_is_treated_as_pixels_over_255():
    rng = np.random.default_rng(1)
    X8 = rng.integers(0, 256, (48, 12)).astype(np.uint8)
    y = rng.integers(0, 3, 48).astype(np.uint8)          # MNIST-style uint8 labels
    a = MLP([12, 6, 3], activation="relu", output="softmax", dtype="float32", seed=0)
    b = MLP([12, 6, 3], activation="relu", output="softmax", dtype="float32", seed=0)
    _train(a, X8, y, epochs=3, batch_size=8, lr=0.1)
    _train(b, (X8 / 255.0).astype(np.float32), y.astype(np.int64), epochs=3, batch_size=8, lr=0.1)
    for p, q in zip(_params(a), _params(b)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    # and it actually moved: uint8 read as 0..255 would give very different parameters
    fresh = MLP([12, 6, 3], activation="relu", output="softmax", dtype="float32", seed=0)
    assert not np.allclose(_params(a)[0], _params(fresh)[0])


# ---------------------------------------------------------------------- determinism, threads
@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_is_bit_identical(threads):
    X, y = _blobs(n=200)
    runs = []
    for _ in range(2):
        net = MLP([6, 16, 3], activation="relu", output="softmax", dtype="float32", seed=0)
        _train(net, X, y, epochs=3, batch_size=32, lr=0.1, optimizer="momentum", momentum=0.9,
               seed=7, threads=threads)
        runs.append(_params(net))
    for p, q in zip(*runs):
        assert np.array_equal(p, q)


def test_different_shuffle_seed_changes_the_result():
    X, y = _blobs(n=200)
    runs = []
    for seed in (0, 1):
        net = MLP([6, 16, 3], activation="relu", output="softmax", dtype="float64", seed=0)
        _train(net, X.astype(np.float64), y, epochs=2, batch_size=16, lr=0.1, seed=seed)
        runs.append(_params(net))
    assert not all(np.array_equal(p, q) for p, q in zip(*runs))


def test_one_thread_and_two_threads_agree():
    X, y = _blobs(n=256, d=20)
    runs = []
    for threads in (1, 2):
        net = MLP([20, 64, 3], activation="relu", output="softmax", dtype="float32", seed=0)
        _train(net, X, y, epochs=3, batch_size=64, lr=0.05, seed=3, threads=threads)
        runs.append(_params(net))
    for p, q in zip(*runs):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- exact optimizer steps vs reference
STEP_CASES = [("tanh", "softmax", "ce"), ("relu", "softmax", "mse"),
              ("sigmoid", "sigmoid", "mse"), ("identity", "identity", "mse")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation, output, loss", STEP_CASES)
def test_one_full_batch_sgd_step_equals_reference(activation, output, loss, dtype):
    X, y = _blobs(n=24, d=6, k=3, seed=2, dtype=np.dtype(dtype))
    net = MLP([6, 9, 3], activation=activation, output=output, dtype=dtype, seed=4)
    W, b = _params64(net)
    lr = 0.3
    gW, gb = ref.gradients(W, b, X, y, activation, output, loss)
    want_W, want_b = ref.sgd_step(W, b, gW, gb, lr)
    _train(net, X, y, epochs=1, batch_size=len(X), lr=lr, optimizer="sgd", momentum=0.0,
           weight_decay=0.0, loss=loss)
    t = dict(rtol=1e-10, atol=1e-13) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    for got, want in zip(list(net.weights) + list(net.biases), want_W + want_b):
        np.testing.assert_allclose(got, want, **t)


def test_full_batch_sgd_step_with_float_targets():
    """Regression-style float targets (n, N_L) with an identity output and MSE."""
    X, _ = _blobs(n=20, d=6, seed=3, dtype=np.float64)
    T = np.random.default_rng(4).normal(0, 1, (20, 2))
    net = MLP([6, 5, 2], activation="tanh", output="identity", dtype="float64", seed=2)
    W, b = _params64(net)
    gW, gb = ref.gradients(W, b, X, T, "tanh", "identity", "mse")
    want_W, want_b = ref.sgd_step(W, b, gW, gb, 0.05)
    _train(net, X, T, epochs=1, batch_size=20, lr=0.05, loss="mse")
    for got, want in zip(list(net.weights) + list(net.biases), want_W + want_b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_last_partial_batch_is_a_step_on_its_own_mean():
    """n = 5, batch_size = 3: an epoch is 2 steps (3 rows, then 2 rows), each on the MEAN over
    its own rows.  With 5 identical samples every minibatch gradient equals the one-sample
    gradient whatever the shuffle, so an epoch is exactly 2 SGD steps with it."""
    x = np.array([[0.3, -1.2, 0.8, 0.1, 2.0, -0.5]])
    X, y = np.repeat(x, 5, axis=0), np.array([2] * 5)
    net = MLP([6, 9, 3], activation="tanh", output="softmax", dtype="float64", seed=4)
    W, b = _params64(net)
    lr = 0.2
    for _ in range(2):
        gW, gb = ref.gradients(W, b, x, [2], "tanh", "softmax", "ce")
        W, b = ref.sgd_step(W, b, gW, gb, lr)
    _train(net, X, y, epochs=1, batch_size=3, lr=lr)
    for got, want in zip(list(net.weights) + list(net.biases), W + b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_sgd_ignores_momentum():
    X, y = _blobs(n=24, seed=2, dtype=np.float64)
    runs = []
    for momentum in (0.0, 0.9):
        net = MLP([6, 9, 3], activation="tanh", output="softmax", dtype="float64", seed=4)
        _train(net, X, y, epochs=3, batch_size=8, lr=0.2, optimizer="sgd", momentum=momentum)
        runs.append(_params(net))
    for p, q in zip(*runs):
        np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-15)


def test_sgd_weight_decay_step_on_weights():
    """W <- W - lr (g + weight_decay W) for one full-batch step."""
    X, y = _blobs(n=24, seed=2, dtype=np.float64)
    net = MLP([6, 9, 3], activation="tanh", output="softmax", dtype="float64", seed=4)
    W, b = _params64(net)
    lr, wd = 0.3, 0.05
    gW, _ = ref.gradients(W, b, X, y, "tanh", "softmax", "ce")
    _train(net, X, y, epochs=1, batch_size=len(X), lr=lr, optimizer="sgd", weight_decay=wd)
    for got, w, g in zip(net.weights, W, gW):
        np.testing.assert_allclose(got, w - lr * (g + wd * w), rtol=1e-10, atol=1e-13)


def _reference_full_batch_run(net, X, y, steps, update):
    """Run `steps` full-batch optimizer steps with the reference gradients; returns params."""
    W, b = _params64(net)
    params = W + b
    L = len(W)
    state = None
    for t in range(1, steps + 1):
        gW, gb = ref.gradients(params[:L], params[L:], X, y, "tanh", "softmax", "ce")
        params, state = update(params, gW + gb, state, t)
    return params


def test_momentum_full_batch_steps_equal_reference():
    X, y = _blobs(n=24, seed=2, dtype=np.float64)
    lr, mu, wd, steps = 0.1, 0.9, 0.01, 4
    net = MLP([6, 9, 3], activation="tanh", output="softmax", dtype="float64", seed=4)

    def update(params, grads, velocity, t):
        if velocity is None:
            velocity = [np.zeros_like(p) for p in params]
        return ref.momentum_step(params, grads, velocity, lr, mu, wd)

    want = _reference_full_batch_run(net, X, y, steps, update)
    _train(net, X, y, epochs=steps, batch_size=len(X), lr=lr, optimizer="momentum", momentum=mu,
           weight_decay=wd)
    for got, w in zip(list(net.weights) + list(net.biases), want):
        np.testing.assert_allclose(got, w, rtol=1e-9, atol=1e-12)


def test_adam_full_batch_steps_equal_reference():
    X, y = _blobs(n=24, seed=2, dtype=np.float64)
    lr, wd, steps = 0.01, 0.01, 4
    net = MLP([6, 9, 3], activation="tanh", output="softmax", dtype="float64", seed=4)

    def update(params, grads, state, t):
        if state is None:
            state = ([np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params])
        new_p, m, v = ref.adam_step(params, grads, state[0], state[1], t, lr, weight_decay=wd)
        return new_p, (m, v)

    want = _reference_full_batch_run(net, X, y, steps, update)
    _train(net, X, y, epochs=steps, batch_size=len(X), lr=lr, optimizer="adam", weight_decay=wd)
    for got, w in zip(list(net.weights) + list(net.biases), want):
        np.testing.assert_allclose(got, w, rtol=1e-8, atol=1e-11)


# ------------------------------------------------------------------------ optimizer behaviour
@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("momentum", 0.02), ("adam", 0.01)])
def test_optimizers_reduce_the_loss(optimizer, lr):
    X, y = _blobs(n=120, seed=5)
    net = MLP([6, 12, 3], activation="relu", output="softmax", dtype="float32", seed=1)
    before = float(net.loss(X, y))
    _train(net, X, y, epochs=5, batch_size=16, lr=lr, optimizer=optimizer, momentum=0.9)
    after = float(net.loss(X, y))
    assert after < 0.8 * before, (before, after)


def test_weight_decay_shrinks_weights():
    X, y = _blobs(n=120, seed=5)
    norms = {}
    for wd in (0.0, 0.05):
        net = MLP([6, 12, 3], activation="relu", output="softmax", dtype="float32", seed=1)
        _train(net, X, y, epochs=10, batch_size=16, lr=0.1, optimizer="sgd", weight_decay=wd)
        norms[wd] = sum(float(np.sum(np.square(w))) for w in net.weights)
    assert norms[0.05] < 0.9 * norms[0.0], norms


# ------------------------------------------------------------------------------------ history
def test_history_with_validation():
    X, y = _blobs(n=120, seed=5)
    Xv, yv = _blobs(n=40, seed=6)
    net = MLP([6, 12, 3], activation="relu", output="softmax", dtype="float32", seed=1)
    history = _train(net, X, y, epochs=3, batch_size=16, lr=0.1, validation=(Xv, yv))
    assert isinstance(history, dict)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_second"):
        assert key in history, key
        assert len(history[key]) == 3, key
        assert all(np.isfinite(float(v)) for v in history[key]), key
    assert all(0.0 <= float(a) <= 1.0 for a in history["accuracy"] + history["val_accuracy"])
    assert all(float(s) > 0 for s in history["seconds"] + history["samples_per_second"])
    # the validation numbers of the last epoch are those of the trained model
    assert float(history["val_loss"][-1]) == pytest.approx(float(net.loss(Xv, yv)), rel=1e-4)
    assert float(history["val_accuracy"][-1]) == pytest.approx(
        float(np.mean(np.asarray(net.predict(Xv)) == yv)), abs=1e-6)
    assert float(history["loss"][-1]) < float(history["loss"][0])


def test_history_without_validation():
    X, y = _blobs(n=60, seed=5)
    net = MLP([6, 12, 3], activation="relu", output="softmax", dtype="float32", seed=1)
    history = _train(net, X, y, epochs=2, batch_size=16)
    for key in ("loss", "accuracy", "seconds", "samples_per_second"):
        assert len(history[key]) == 2, key


# --------------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_raises_and_keeps_finite_parameters(dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (64, 4)).astype(dtype)
    y = rng.normal(0, 1, (64, 2)).astype(dtype)
    net = MLP([4, 8, 2], activation="identity", output="identity", dtype=dtype, seed=0)
    with pytest.raises(DivergenceError) as info:
        _train(net, X, y, epochs=50, batch_size=8, lr=1e6, loss="mse")
    assert isinstance(info.value, FloatingPointError)
    message = str(info.value)
    assert re.search(r"epoch\D{0,3}\d+", message, re.I), message
    assert re.search(r"step\D{0,3}\d+", message, re.I), message
    for p in _params(net):
        assert np.all(np.isfinite(p))


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("kwargs, name", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=-3), "batch_size"),
    (dict(lr=0.0), "lr"),
    (dict(lr=-0.1), "lr"),
    (dict(epochs=0), "epochs"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(loss="hinge"), "loss"),
    (dict(threads=0), "threads"),
])
def test_bad_arguments(kwargs, name):
    X, y = _blobs(n=20)
    net = MLP([6, 5, 3], activation="relu", output="softmax", dtype="float32", seed=0)
    before = _params(net)
    with pytest.raises(ValueError, match=name):
        _train(net, X, y, **kwargs)
    for p, q in zip(before, _params(net)):
        assert np.array_equal(p, q), "a rejected call must not change the model"


def test_X_and_y_of_different_lengths():
    X, y = _blobs(n=20)
    net = MLP([6, 5, 3], activation="relu", output="softmax", dtype="float32", seed=0)
    with pytest.raises(ValueError, match=r"\b(X|y)\b"):
        _train(net, X, y[:-1])
    with pytest.raises(ValueError, match=r"\b(X|y)\b"):
        _train(net, X[:-2], y)


def test_ce_with_non_softmax_output_is_rejected():
    X, y = _blobs(n=20)
    net = MLP([6, 5, 3], activation="relu", output="sigmoid", dtype="float32", seed=0)
    with pytest.raises(ValueError, match="softmax"):
        _train(net, X, y, loss="ce")


def test_validation_of_the_wrong_width_is_rejected():
    X, y = _blobs(n=20)
    Xv, yv = _blobs(n=10, d=5)
    net = MLP([6, 5, 3], activation="relu", output="softmax", dtype="float32", seed=0)
    with pytest.raises(ValueError, match="validation|X"):
        _train(net, X, y, validation=(Xv, yv))


def test_verbose_training_reports_progress(capsys):
    X, y = _blobs(n=20)
    net = MLP([6, 5, 3], activation="relu", output="softmax", dtype="float32", seed=0)
    _train(net, X, y, epochs=2, verbose=True)
    out = capsys.readouterr()
    assert (out.out + out.err).strip(), "verbose=True printed nothing"


def test_an_update_that_overflows_the_parameters_is_caught_in_the_same_epoch():
    # One full-batch step per epoch: the loss before the update is finite, the update itself
    # overflows float32 (lr * gradient > 3.4e38), and no later step of the epoch would notice.
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32) * 1000
    y = np.array([0, 1, 1, 0])
    net = fastmlp.MLP([2, 8, 2], activation="identity", output="identity", seed=0)
    assert np.isfinite(net.loss(X, y, loss="mse"))
    before = net.params.copy()
    with pytest.raises(DivergenceError, match=r"parameters became NaN or infinite at epoch 1, step 1") as info:
        fastmlp.train(net, X, y, epochs=3, batch_size=4, lr=1e38, loss="mse", verbose=False, threads=1)
    assert (info.value.epoch, info.value.step) == (1, 1)
    assert np.array_equal(net.params, before)      # the last finite parameters: the initial ones


def test_compilation_is_kept_out_of_the_first_epochs_time():
    X = np.random.default_rng(0).random((64, 3)).astype(np.float32)
    trainer = fastmlp.Trainer(fastmlp.MLP([3, 4, 2], seed=0), batch_size=8, threads=1)
    trainer.fit(X, np.arange(64) % 2, 1, verbose=False)
    assert trainer.compile_seconds >= 0
    assert trainer.history["seconds"][0] > 0


def _resident_bytes():
    try:
        with open("/proc/self/statm") as f:  # (Linux) size resident ... in pages
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        pytest.skip("no /proc/self/statm")


def test_new_workspaces_and_optimizer_state_are_already_mapped_when_the_kernels_write_them():
    # Page faults taken at once by the threads of a parallel region stall them all, and the thread
    # pacer then mistakes two threads for slower than one: the buffers a fit writes are mapped in
    # when they are allocated, so writing them all adds nothing to the resident memory. 64 MB
    # each, beyond glibc's largest mmap threshold (32 MB): fresh pages from the operating system.
    from fastmlp._buffers import Workspace
    ws = Workspace([4096, 8, 2], np.float32, 16, x_capacity=4096)
    before = _resident_bytes()
    ws.X.fill(1.0)
    assert _resident_bytes() - before < 4 << 20
    trainer = fastmlp.Trainer(MLP([4096, 4096, 2], seed=0), optimizer="adam")
    before = _resident_bytes()
    for a in (trainer.grads, trainer.m, trainer.v):
        a.fill(1.0)
    assert _resident_bytes() - before < 4 << 20


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_buffers_the_kernels_stream_through_start_on_a_cache_line(dtype):
    # A large allocation sits 16 bytes past a page boundary: each 64-byte vector access of it then
    # straddles two cache lines, and Adam's update ran 2.2x slower. The sizes are large enough
    # for every buffer here to get a mapping of its own.
    from fastmlp._buffers import LINE_BYTES, Workspace
    net = MLP([784, 100, 10], dtype=dtype, seed=0)
    trainer = fastmlp.Trainer(net, optimizer="adam")
    ws = Workspace(net.sizes, net.dtype, 512)
    for a in (net.params, trainer.grads, trainer.m, trainer.v, ws.X, ws.A, ws.D, ws.Z):
        assert a.ctypes.data % LINE_BYTES == 0
        assert a.flags.c_contiguous and a.flags.writeable and a.dtype == net.dtype
    assert not np.any(net.params[net.b_off[1]:net.w_off[2]]) and not np.any(trainer.m) and not np.any(trainer.grads)
    assert np.shares_memory(net.params, net.weights[0]) and not np.shares_memory(trainer.m, trainer.v)


@pytest.mark.parametrize("shape", [0, 1, 79510, (0, 3), (5, 3), (512, 784), (1024, 1024)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_aligned_arrays_have_the_shape_dtype_and_zeros_asked_for(shape, dtype):
    from fastmlp._buffers import LINE_BYTES, aligned_empty, aligned_zeros
    for make in (aligned_empty, aligned_zeros):
        a = make(shape, dtype)
        assert a.shape == np.zeros(shape).shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.size == 0 or a.ctypes.data % LINE_BYTES == 0
        a[...] = 7
        assert np.all(a == 7)
    assert not np.any(aligned_zeros(shape, dtype))


def _mapping_flags(address):
    # the VmFlags of the memory mapping of this process that holds address (/proc/self/smaps)
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                a, b = (int(x, 16) for x in head.split("-"))
                inside = a <= address < b
            elif head == "VmFlags:" and inside:
                return set(line.split()[1:])
    return None


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_HUGEPAGE"), reason="no transparent huge pages here")
def test_large_buffers_ask_for_huge_pages_of_private_memory(monkeypatch):
    # A 10 MB workspace in 4 KiB pages took 2-20 ms of page faults at every fit (a tenth of an
    # epoch of 784-100-10 on a virtual machine), and weights larger than the TLB's reach cost the
    # kernels page walks: buffers of 2 MiB or more start a 2 MiB page and are advised as huge
    # (VmFlags "hg"), private to the process (no "sh": a forked child's writes stay its own).
    from fastmlp import _buffers
    for dtype in (np.float32, np.float64):
        a = _buffers.aligned_zeros((1000, 1000), dtype)
        assert a.ctypes.data % _buffers.HUGE_PAGE_BYTES == 0 and a.flags.writeable and not np.any(a)
        flags = _mapping_flags(a.ctypes.data)
        assert flags is not None and "hg" in flags and "sh" not in flags
        b = _buffers.aligned_empty((2, 1000, 1000), dtype)
        assert b.shape == (2, 1000, 1000) and not np.shares_memory(a, b)
    # where mmap cannot ask for them, the same arrays from np.empty / np.zeros (which NumPy itself
    # may advise as huge from 4 MiB, on pages that are not 2 MiB-aligned)
    import mmap
    monkeypatch.delattr(mmap, "MADV_HUGEPAGE")
    assert _buffers._huge_pages(4 << 20) is None
    c = _buffers.aligned_zeros((1000, 1000), np.float32)
    assert c.ctypes.data % _buffers.LINE_BYTES == 0 and c.flags.writeable and not np.any(c)


def test_a_chunk_holds_at_least_min_chunk_samples_so_its_bookkeeping_stays_small():
    # Between chunks fit() backs up the parameters and checks them: a few passes over them, which
    # for a large network cost as much as a few samples' arithmetic. Sized by CHUNK_FLOPS alone,
    # a chunk of 784-2048-2048-10 would hold one minibatch of 256.
    from fastmlp import training
    big = fastmlp.Trainer(MLP([784, 2048, 2048, 10], seed=0), batch_size=256)
    assert int(training.CHUNK_FLOPS / training._chunk_cost_per_sample(big.net.sizes)) < 256
    assert big.chunk_samples(60000) == training.MIN_CHUNK_SAMPLES == 4096
    assert big.chunk_samples(1000) == 1024  # never more than the data's minibatches
    # a small network's chunk is still sized by its flops: 1.5e9 / (6 * 39,700) = 6297 samples
    small = fastmlp.Trainer(MLP([784, 50, 10], seed=0), batch_size=32)
    assert small.chunk_samples(60000) == 6272


def test_fit_of_a_large_network_calls_the_kernel_once_per_chunk_of_several_minibatches(monkeypatch):
    from fastmlp import training
    calls = []
    steps = training.Trainer._steps

    def counted(self, data, order, *args, **kwargs):
        calls.append(len(order))
        return steps(self, data, order, *args, **kwargs)

    monkeypatch.setattr(training.Trainer, "_steps", counted)
    X, y = _blobs(n=8192, d=8, k=3)
    trainer = fastmlp.Trainer(MLP([8, 512, 512, 3], seed=0), batch_size=64, threads=1)
    trainer.fit(X, y, 1, verbose=False)
    # one warm-up call of no samples (the compile), then two chunks of 4096 samples: CHUNK_FLOPS
    # alone would give 1.5e9 / (6 * 267,776) = 933 samples, 14 minibatches
    assert calls == [0, 4096, 4096]


def test_divergence_in_a_later_epoch_puts_back_that_epochs_starting_parameters():
    # One full-batch step per epoch, so each epoch is a chunk of its own: the step of epoch 3
    # overflows the parameters, and the fit puts back those that epoch 2 left (not the fit's first).
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32) * 1000
    y = np.array([0, 1, 1, 0])
    schedule = fastmlp.callbacks.LearningRateScheduler(lambda epoch, lr: 1e-9 if epoch < 2 else 1e38)
    net = fastmlp.MLP([2, 8, 2], activation="identity", output="identity", seed=0)
    with pytest.raises(DivergenceError, match=r"parameters became NaN or infinite at epoch 3, step 1"):
        fastmlp.Trainer(net, batch_size=4, lr=1e-9, loss="mse", threads=1).fit(X, y, 5, verbose=False,
                                                                              callbacks=[schedule])
    reference = fastmlp.MLP([2, 8, 2], activation="identity", output="identity", seed=0)
    fastmlp.Trainer(reference, batch_size=4, lr=1e-9, loss="mse", threads=1).fit(X, y, 2, verbose=False)
    assert not np.array_equal(reference.params, fastmlp.MLP([2, 8, 2], activation="identity", seed=0).params)
    np.testing.assert_array_equal(net.params, reference.params)
