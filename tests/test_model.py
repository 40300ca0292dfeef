"""The model API: fastmlp.MLP (construction, initialisation, parameters as views, forward,
loss, gradients, predict, save/load) and its input validation."""

import pathlib

import numpy as np
import pytest

import reference as ref
from tolerances import tol

from fastmlp import errors
from fastmlp import MLP

ACTIVATIONS = ["sigmoid", "relu", "tanh", "identity"]
OUTPUTS = ["softmax", "sigmoid", "identity"]
SIZES = [13, 7, 5, 3]


def _net(dtype="float64", activation="tanh", output="softmax", sizes=SIZES, seed=0):
    return MLP(sizes, activation=activation, output=output, dtype=dtype, seed=seed)


def _X(n, width, dtype="float64", seed=1):
    return np.random.default_rng(seed).normal(0, 1, (n, width)).astype(dtype)


def _params64(net):
    return ([np.asarray(w, np.float64) for w in net.weights],
            [np.asarray(b, np.float64) for b in net.biases])


# ------------------------------------------------------------------------- shapes and views
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shapes_sizes_and_dtype(dtype):
    net = _net(dtype)
    assert list(net.sizes) == SIZES
    assert len(net.weights) == len(net.biases) == len(SIZES) - 1
    for l in range(1, len(SIZES)):
        assert net.weights[l - 1].shape == (SIZES[l], SIZES[l - 1])      # W^l: (N_l, N_{l-1})
        assert net.biases[l - 1].shape == (SIZES[l],)
        assert net.weights[l - 1].dtype == np.dtype(dtype)
        assert net.biases[l - 1].dtype == np.dtype(dtype)
        assert np.all(np.isfinite(net.weights[l - 1]))


def test_editing_weights_in_place_changes_forward():
    net = _net("float64")
    X = _X(4, SIZES[0])
    before = net.forward(X).copy()
    net.weights[0][...] *= 2.0
    net.biases[2][0] += 1.5
    w = net.weights[1]
    w[0, 0] = 5.0
    assert net.weights[1][0, 0] == 5.0
    after = net.forward(X)
    assert not np.allclose(before, after)
    W, b = _params64(net)
    np.testing.assert_allclose(after, ref.forward(W, b, X, "tanh", "softmax"), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_editing_from_weights_network_in_place(dtype):
    W, b = _params64(_net("float64"))
    net = MLP.from_weights(W, b, activation="tanh", output="softmax", dtype=dtype)
    net.weights[2][...] = 0.0
    net.biases[2][...] = 0.0
    # a zero last layer gives z^L = 0, so a uniform softmax for every input
    np.testing.assert_allclose(net.forward(_X(3, SIZES[0], dtype)), np.full((3, 3), 1 / 3),
                               rtol=1e-6)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_copied_network_keeps_its_weights_as_views_of_its_own_parameters(how, dtype):
    # pickle and deepcopy copy each array on its own: W^l and b^l must come back as views of the
    # copy's parameter buffer (which training and forward use), not as detached copies
    import copy
    import pickle
    from fastmlp import Trainer
    net = _net(dtype)
    twin = {"pickle": lambda n: pickle.loads(pickle.dumps(n)), "deepcopy": copy.deepcopy, "copy": copy.copy}[how](net)
    assert np.array_equal(twin.params, net.params) and twin.sizes == net.sizes and twin.dtype == net.dtype
    assert not np.shares_memory(twin.params, net.params)
    for W, b in zip(twin.weights, twin.biases):
        assert np.shares_memory(W, twin.params) and np.shares_memory(b, twin.params)
    X, y = _X(24, SIZES[0], dtype), np.arange(24) % SIZES[-1]
    Trainer(twin, batch_size=4, lr=0.1).fit(X, y, 1, verbose=False)
    W, b = _params64(twin)
    np.testing.assert_allclose(twin.forward(X), ref.forward(W, b, X, "tanh", "softmax"), **tol(dtype))
    assert not np.array_equal(twin.params, net.params)
    assert np.array_equal(net.forward(X), _net(dtype).forward(X))


# ---------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_matches_reference(activation, output, dtype):
    net = _net(dtype, activation, output)
    X = _X(6, SIZES[0], dtype)
    W, b = _params64(net)
    want = ref.forward(W, b, X, activation, output)
    Y = net.forward(X)
    assert Y.shape == (6, SIZES[-1])
    assert Y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(Y, want, **tol(dtype))
    y1 = net.forward(X[2])                              # one sample, 1-D
    assert y1.shape == (SIZES[-1],)
    np.testing.assert_allclose(y1, want[2], **tol(dtype))


def test_forward_accepts_non_contiguous_and_fortran_input():
    net = _net("float64")
    big = _X(10, 2 * SIZES[0])
    X = big[::2, ::2]                                   # strided view
    want = net.forward(np.ascontiguousarray(X))
    np.testing.assert_allclose(net.forward(X), want, rtol=1e-13)
    np.testing.assert_allclose(net.forward(np.asfortranarray(X)), want, rtol=1e-13)


def test_predict_is_argmax():
    net = _net("float64", sizes=[13, 20, 10], seed=3)
    X = _X(50, 13)
    p = np.asarray(net.predict(X))
    assert p.shape == (50,)
    assert np.issubdtype(p.dtype, np.integer)
    np.testing.assert_array_equal(p, np.argmax(net.forward(X), axis=1))


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_and_gradients_match_reference(dtype, loss):
    net = _net(dtype, "relu", "softmax", seed=5)
    X = _X(8, SIZES[0], dtype, seed=6)
    y = np.random.default_rng(7).integers(0, SIZES[-1], 8)
    W, b = _params64(net)
    assert float(net.loss(X, y, loss=loss)) == pytest.approx(
        ref.cost(W, b, X, y, "relu", "softmax", loss), rel=1e-5 if dtype == "float32" else 1e-12)
    dW, db = net.gradients(X, y, loss=loss)
    rW, rb = ref.gradients(W, b, X, y, "relu", "softmax", loss)
    for got, want in zip(dW + db, rW + rb):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == "float32" else 1e-10,
                                   atol=1e-6 if dtype == "float32" else 1e-13)


def test_mse_with_class_indices_means_one_hot_targets():
    net = _net("float64", "sigmoid", "sigmoid")
    X = _X(5, SIZES[0])
    y = np.array([0, 2, 1, 1, 0])
    onehot = np.eye(SIZES[-1])[y]
    assert float(net.loss(X, y, loss="mse")) == pytest.approx(
        float(net.loss(X, onehot, loss="mse")), rel=1e-14)
    dW_i, db_i = net.gradients(X, y, loss="mse")
    dW_f, db_f = net.gradients(X, onehot, loss="mse")
    for a, c in zip(dW_i + db_i, dW_f + db_f):
        np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-16)


# ------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("as_str", [True, False], ids=["str", "Path"])
@pytest.mark.parametrize("dtype, activation, output",
                         [("float32", "relu", "softmax"), ("float64", "tanh", "sigmoid")])
def test_save_load_round_trip(tmp_path, dtype, activation, output, as_str):
    net = _net(dtype, activation, output, sizes=[13, 9, 4], seed=11)
    path = tmp_path / "model.npz"
    net.save(str(path) if as_str else path)
    loaded = MLP.load(str(path) if as_str else pathlib.Path(path))
    assert list(loaded.sizes) == [13, 9, 4]
    for a, c in zip(net.weights + net.biases, loaded.weights + loaded.biases):
        assert c.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, c)
    X = _X(20, 13, dtype)
    np.testing.assert_array_equal(loaded.forward(X), net.forward(X))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


def test_load_rejects_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a saved fastmlp model")
    with pytest.raises(ValueError):
        MLP.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, something=np.arange(3))
    with pytest.raises(ValueError):
        MLP.load(other)


# ------------------------------------------------------------------------------ initialisation
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_initialisation_he_for_relu_glorot_otherwise(activation):
    net = MLP([1000, 500, 10], activation=activation, output="softmax", dtype="float64", seed=0)
    W1 = np.asarray(net.weights[0])
    want = ref.he_std(1000) if activation == "relu" else ref.glorot_std(1000, 500)
    other = ref.glorot_std(1000, 500) if activation == "relu" else ref.he_std(1000)
    std = float(np.std(W1))
    assert abs(float(np.mean(W1))) < 0.01 * want
    assert std == pytest.approx(want, rel=0.05), (
        f"std of W^1 is {std:.5f}; {'He' if activation == 'relu' else 'Glorot'} gives {want:.5f}"
        f" (the other scheme would give {other:.5f})")


def test_seed_makes_initialisation_reproducible():
    a = MLP([20, 15, 5], activation="relu", output="softmax", dtype="float32", seed=0)
    b = MLP([20, 15, 5], activation="relu", output="softmax", dtype="float32", seed=0)
    c = MLP([20, 15, 5], activation="relu", output="softmax", dtype="float32", seed=1)
    for p, q in zip(a.weights + a.biases, b.weights + b.biases):
        np.testing.assert_array_equal(p, q)
    assert not all(np.array_equal(p, q) for p, q in zip(a.weights, c.weights))


# ------------------------------------------------------------------------------ bad arguments
def test_from_weights_shapes_that_do_not_chain():
    W = [np.ones((4, 3)), np.ones((2, 5))]             # W^2 expects 5 inputs, layer 1 has 4
    b = [np.zeros(4), np.zeros(2)]
    with pytest.raises(ValueError, match="weights"):
        MLP.from_weights(W, b, activation="relu", output="softmax", dtype="float64")


def test_from_weights_biases_that_do_not_fit():
    W = [np.ones((4, 3)), np.ones((2, 4))]
    with pytest.raises(ValueError, match="biases"):
        MLP.from_weights(W, [np.zeros(4), np.zeros(3)], activation="relu", output="softmax",
                         dtype="float64")
    with pytest.raises(ValueError, match="biases"):
        MLP.from_weights(W, [np.zeros(4)], activation="relu", output="softmax", dtype="float64")


@pytest.mark.parametrize("kwargs, name", [
    (dict(activation="gelu"), "activation"),
    (dict(activation="softmax"), "activation"),       # softmax is an output, not hidden
    (dict(output="softplus"), "output"),
    (dict(dtype="int32"), "dtype"),
])
def test_unknown_names_in_constructor(kwargs, name):
    args = dict(activation="relu", output="softmax", dtype="float64", seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        MLP([4, 3, 2], **args)
    W, b = [np.ones((3, 4)), np.ones((2, 3))], [np.zeros(3), np.zeros(2)]
    with pytest.raises(ValueError, match=name):
        MLP.from_weights(W, b, **{k: v for k, v in args.items() if k != "seed"})


@pytest.mark.parametrize("sizes", [[4], [4, 0, 2], [0, 3], [4, -1, 2]])
def test_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes"):
        MLP(sizes, activation="relu", output="softmax", dtype="float64", seed=0)


def test_unknown_loss_name():
    net = _net()
    X, y = _X(3, SIZES[0]), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="loss"):
        net.loss(X, y, loss="hinge")
    with pytest.raises(ValueError, match="loss"):
        net.gradients(X, y, loss="hinge")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(bad):
    net = _net()
    X, y = _X(3, SIZES[0]), np.array([0, 1, 2])
    X[1, 4] = bad
    for call in (lambda: net.forward(X), lambda: net.predict(X), lambda: net.loss(X, y),
                 lambda: net.gradients(X, y), lambda: net.forward(X[1])):
        with pytest.raises(ValueError, match="X"):
            call()


def test_wrong_X_width():
    net = _net()
    y = np.array([0, 1, 2])
    for X in (_X(3, SIZES[0] + 1), _X(3, SIZES[0] - 1)):
        with pytest.raises(ValueError, match="X"):
            net.forward(X)
        with pytest.raises(ValueError, match="X"):
            net.loss(X, y)
        with pytest.raises(ValueError, match="X"):
            net.gradients(X, y)
    with pytest.raises(ValueError, match="X"):
        net.forward(np.ones(SIZES[0] + 2))
    with pytest.raises(ValueError, match="X"):
        net.forward(np.ones((2, 3, SIZES[0])))


@pytest.mark.parametrize("labels", [[0, 1, 3], [0, -1, 2], [0, 1, 100]])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_labels_outside_the_classes(labels, loss):
    net = _net()                                       # N_L = 3: labels must be in [0, 3)
    X = _X(3, SIZES[0])
    y = np.array(labels)
    with pytest.raises(ValueError, match=r"\by\b"):
        net.loss(X, y, loss=loss)
    with pytest.raises(ValueError, match=r"\by\b"):
        net.gradients(X, y, loss=loss)


@pytest.mark.parametrize("output", ["identity", "sigmoid"])
def test_cross_entropy_needs_softmax_output(output):
    net = _net(output=output)
    X, y = _X(3, SIZES[0]), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="softmax"):
        net.loss(X, y, loss="ce")
    with pytest.raises(ValueError, match="softmax"):
        net.gradients(X, y, loss="ce")


@pytest.mark.parametrize("y_shape", [(3, 4), (3, 2), (2, 3), (4, 3), (3, 3, 1)])
def test_float_targets_of_the_wrong_shape(y_shape):
    net = _net()
    X = _X(3, SIZES[0])
    y = np.full(y_shape, 1.0 / 3)
    for loss in ("ce", "mse"):
        with pytest.raises(ValueError, match=r"\by\b"):
            net.loss(X, y, loss=loss)
        with pytest.raises(ValueError, match=r"\by\b"):
            net.gradients(X, y, loss=loss)


def test_label_count_must_match_X():
    net = _net()
    X = _X(3, SIZES[0])
    with pytest.raises(ValueError, match=r"\by\b"):
        net.loss(X, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\by\b"):
        net.gradients(X, np.array([0, 1, 2, 0]))


def test_errors_are_fastmlp_value_errors():
    """The package's own error classes are ValueErrors, as the API promises."""
    assert issubclass(errors.DataError, ValueError)
    assert issubclass(errors.DivergenceError, FloatingPointError)


def test_saved_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        MLP([3, 2], seed=0).save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]     # no temporary file left behind


# ------------------------------------------------------------------------- a few rows on the calling thread
FEW_CASES = [([784, 100, 10], "relu", "softmax"), ([13, 7, 5, 3], "tanh", "softmax"),
             ([9, 6, 1], "sigmoid", "sigmoid"), ([11, 4, 3], "identity", "identity"), ([20, 3], "relu", "softmax")]


def _inputs(rng, n, m, x_dtype):
    """(X, the values it stands for in float64): n rows of m pixels (uint8) or normal values."""
    if x_dtype == "uint8":
        X = rng.integers(0, 256, (n, m)).astype(np.uint8)
        return X, X / 255.0
    X = rng.normal(0, 1, (n, m)).astype(x_dtype)
    return X, X.astype(np.float64)


def _general_forward(net, X):
    """forward through the general path (the driver's evaluate+forward mode), as before the small-rows path."""
    single, _, outputs, _, _ = net._run(X, want_outputs=True)
    return outputs[0] if single else outputs


@pytest.mark.parametrize("x_dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes,activation,output", FEW_CASES)
def test_few_rows_path_is_bit_identical_to_the_general_path_and_matches_reference(sizes, activation, output,
                                                                               dtype, x_dtype):
    from fastmlp import model
    net = _net(dtype, activation, output, sizes=sizes, seed=4)
    rng = np.random.default_rng(5)
    W, b = _params64(net)
    for n in (1, 2, 3, 4, 5, 8, 9):
        X, X64 = _inputs(rng, n, sizes[0], x_dtype)
        assert n * net.n_params < model.SERIAL_WORK
        fast = net._forward_few(X, None)
        assert fast is not None                           # the small-rows path ran
        assert fast.dtype == np.dtype(dtype) and fast.shape == (n, sizes[-1])
        np.testing.assert_array_equal(fast, _general_forward(net, X))
        np.testing.assert_array_equal(net.forward(X), fast)
        np.testing.assert_array_equal(net.forward(X[0]), _general_forward(net, X[0]))
        np.testing.assert_allclose(fast, ref.forward(W, b, X64.astype(dtype), activation, output), **tol(dtype))
        if output == "softmax":
            np.testing.assert_array_equal(net.predict(X), np.argmax(_general_forward(net, X), axis=1))
            assert net.predict(X[0]) == np.argmax(fast[0])


def test_few_rows_path_is_not_taken_when_the_general_path_must_check_or_convert():
    net = _net("float32", sizes=[13, 7, 3])
    X = _X(4, 13)
    for other in (X.astype(np.float16), X.astype(np.int64), np.asfortranarray(X)[:, :], X[::2], X.tolist(),
                  X.astype(X.dtype.newbyteorder(">")), _X(100000, 13)):
        assert net._forward_few(other, None) is None
        want = net.forward(np.ascontiguousarray(np.asarray(other, dtype=np.float64)))
        np.testing.assert_allclose(net.forward(other), want, rtol=1e-6, atol=1e-7)
    std = MLP([13, 7, 3], input_mean=np.zeros(13), input_scale=np.full(13, 2.0))
    assert std._forward_few(X, None) is None
    np.testing.assert_allclose(std.forward(X), MLP([13, 7, 3]).forward(X / 2), rtol=1e-6)


@pytest.mark.parametrize("x_dtype,bad", [("float64", np.nan), ("float64", np.inf), ("float64", -np.inf),
                                         ("float64", 1e39), ("float32", np.nan), ("float32", -np.inf)])
def test_few_rows_path_reports_bad_values_like_the_general_path(x_dtype, bad):
    net = _net("float32")
    X = _X(2, SIZES[0]).astype(x_dtype)
    X[1, 3] = bad
    with pytest.raises(ValueError) as general:
        net._run(X, want_outputs=True)
    for call in (lambda: net.forward(X), lambda: net.predict(X), lambda: net.forward(X[1])):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == str(general.value)
        assert "\n" not in str(e.value)


def test_few_rows_path_checks_threads():
    net = _net()
    with pytest.raises(ValueError, match="threads"):
        net.forward(_X(1, SIZES[0]), threads=0)
    np.testing.assert_array_equal(net.forward(_X(1, SIZES[0]), threads=1), net.forward(_X(1, SIZES[0])))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("x_dtype", ["uint8", "float32", "float64"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_many_rows_path_is_bit_identical_to_the_general_path(dtype, x_dtype, threads):
    """forward() of many rows: the parallel chunked kernel gives the bits of the batched
    _evaluate forward, across batch ends (1024 rows), partial tiles and thread counts."""
    import numba
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    rng = np.random.default_rng(6)
    for sizes in ([40, 33, 17, 10], [30, 5]):
        net = _net(dtype, "relu", "softmax", sizes=sizes, seed=8)
        W, b = _params64(net)
        for n in (1, 5, 1023, 1030, 2051):
            X, X64 = _inputs(rng, n, sizes[0], x_dtype)
            many = net._forward_many(X, threads)
            np.testing.assert_array_equal(many, _general_forward_threads(net, X, threads))
            np.testing.assert_allclose(many, ref.forward(W, b, X64.astype(dtype), "relu", "softmax"), **tol(dtype))
            if n * net.n_params >= 1_000_000:
                np.testing.assert_array_equal(net.forward(X, threads=threads), many)


def _general_forward_threads(net, X, threads):
    single, _, outputs, _, _ = net._run(X, want_outputs=True, threads=threads)
    return outputs[0] if single else outputs


@pytest.mark.parametrize("x_dtype,bad", [("float64", np.nan), ("float64", np.inf), ("float64", 1e39),
                                         ("float32", np.inf), ("float32", np.nan)])
def test_many_rows_path_reports_bad_values_like_the_general_path(x_dtype, bad):
    net = _net("float32", sizes=[13, 40, 3])
    X = _X(3000, 13).astype(x_dtype)
    X[2500, 7] = bad
    with pytest.raises(ValueError) as general:
        net._run(X, want_outputs=True)
    for call in (lambda: net.forward(X), lambda: net.predict(X), lambda: net._forward_many(X, None)):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == str(general.value)


def test_many_rows_with_standardisation_and_strided_input():
    net = MLP([13, 40, 3], input_mean=np.full(13, 0.5), input_scale=np.full(13, 2.0), seed=2)
    X = _X(6000, 26)[:, ::2]
    np.testing.assert_array_equal(net.forward(X), _general_forward_threads(net, np.ascontiguousarray(X), None))
