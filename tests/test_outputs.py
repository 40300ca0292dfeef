"""Binary and multi-label outputs (binary cross-entropy), regression, sample and class weights, and
input standardisation: predictions, accuracy, finite saturated losses, and gradients against finite
differences and the NumPy reference (tests/reference.py) for every hidden activation."""
import numpy as np
import pytest

import reference as ref
from test_gradcheck import ACTIVATIONS, BOUND_ORDER4, make_problem, relative_errors

import fastmlp
from fastmlp import MLP

pytestmark = pytest.mark.usefixtures("one_numba_thread")


def _grad_check(W, b, X, y, activation, output, loss, sample_weight=None):
    """fastmlp's gradients against finite differences of its own loss and against the reference."""
    def net():
        return MLP.from_weights(W, b, activation=activation, output=output, dtype="float64")

    dW, db = net().gradients(X, y, loss=loss, sample_weight=sample_weight)
    analytic = [np.asarray(g, np.float64) for g in dW + db]
    num = ref.numerical_gradients(lambda: net().loss(X, y, loss=loss, sample_weight=sample_weight), W + b,
                                  eps=1e-4, order=4)
    assert max(relative_errors(num, analytic).values()) < BOUND_ORDER4
    rW, rb = ref.gradients(W, b, X, y, activation, output, loss, sample_weight=sample_weight)
    for got, want in zip(dW + db, rW + rb):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    assert net().loss(X, y, loss=loss, sample_weight=sample_weight) == pytest.approx(
        ref.cost(W, b, X, y, activation, output, loss, sample_weight=sample_weight), rel=1e-12)


# --------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_binary_gradients(activation, loss):
    W, b, X, _ = make_problem(50, activation, "sigmoid", "float", sizes=[5, 7, 6, 1], n=4)
    y = np.array([0, 1, 1, 0])
    _grad_check(W, b, X, y, activation, "sigmoid", loss)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_multilabel_bce_gradients(activation):
    W, b, X, _ = make_problem(60, activation, "sigmoid", "float")
    y = np.random.default_rng(61).integers(0, 2, (X.shape[0], 4)).astype(np.float64)
    _grad_check(W, b, X, y, activation, "sigmoid", "bce")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output, loss, kind", [("softmax", "ce", "index"), ("sigmoid", "bce", "float"),
                                                ("identity", "mse", "float"), ("softmax", "mse", "index")])
def test_weighted_gradients(activation, output, loss, kind):
    W, b, X, y = make_problem(70, activation, output, kind, n=5)
    w = np.array([0.5, 2.0, 0.0, 1.0, 3.0])
    _grad_check(W, b, X, y, activation, output, loss, sample_weight=w)


def test_regression_gradients_with_1d_targets():
    W, b, X, _ = make_problem(80, "tanh", "identity", "float", sizes=[5, 7, 1], n=6)
    y = np.random.default_rng(81).normal(size=6)
    _grad_check(W, b, X, y, "tanh", "identity", "mse")


def test_reference_bce_delta_is_a_minus_y():
    # the reference derives delta through sigma'(z) * dc/da; the lecture-style simplification is a - y
    z = np.array([-3.0, 0.5, 2.0])
    a = ref.sigmoid(z)
    y = np.array([1.0, 0.0, 1.0])
    np.testing.assert_allclose(ref.output_delta(z, a, y, "sigmoid", "bce"), a - y, rtol=1e-12)


# ------------------------------------------------------------------ binary classification
def _binary(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    return X, y


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_single_sigmoid_unit_is_a_binary_classifier(loss):
    X, y = _binary()
    net = MLP([4, 8, 1], activation="tanh", output="sigmoid", seed=0)
    history = fastmlp.train(net, X, y, epochs=10, lr=0.5, loss=loss, verbose=False, threads=1)
    out = net.forward(X)[:, 0]
    pred = net.predict(X)
    assert pred.shape == (200,)
    assert np.array_equal(pred, (out > 0.5).astype(np.int64))
    assert pred.min() == 0 and pred.max() == 1  # not the argmax of one column (always 0)
    accuracy = float(np.mean(pred == y))
    assert accuracy > 0.9
    assert net.evaluate(X, y, loss=loss)[1] == accuracy
    assert net.predict(X[0]) == pred[0]
    assert history["accuracy"][-1] > 0.9


def test_binary_labels_must_be_0_or_1():
    X, y = _binary(n=20)
    net = MLP([4, 3, 1], output="sigmoid")
    with pytest.raises(ValueError, match="got label 2, expected 0 or 1"):
        fastmlp.train(net, X, np.where(y == 1, 2, 0), loss="bce", verbose=False)


def test_bce_is_finite_for_saturated_outputs():
    # z = +-60: float32 sigmoid rounds to exactly 1 or 0, log(a) would be -inf
    net = MLP.from_weights([np.array([[60.0]])], [np.array([0.0])], activation="identity", output="sigmoid",
                           dtype="float32")
    X = np.array([[1.0], [-1.0], [1.0], [-1.0]], dtype=np.float32)
    y = np.array([1, 0, 0, 1])
    losses = [net.loss(X[i:i + 1], y[i:i + 1], loss="bce") for i in range(4)]
    # right with certainty: about e^-60; wrong: log(1 + e^60) = 60 (+ e^-60)
    assert losses[0] == pytest.approx(np.exp(-60), rel=1e-6) and losses[1] == pytest.approx(np.exp(-60), rel=1e-6)
    assert losses[2] == pytest.approx(60.0, rel=1e-12) and losses[3] == pytest.approx(60.0, rel=1e-12)
    dW, db = net.gradients(X[2:3], y[2:3], loss="bce")
    assert np.isfinite(dW[0]).all() and dW[0][0, 0] == pytest.approx(1.0)  # (a - y) x = (1 - 0) 1


def test_ce_with_sigmoid_names_bce():
    net = MLP([4, 3, 2], output="sigmoid")
    X, y = _binary(n=20)
    with pytest.raises(ValueError, match="loss='bce'"):
        fastmlp.train(net, X, y, loss="ce", verbose=False)
    with pytest.raises(ValueError, match="needs output='sigmoid'"):
        fastmlp.train(MLP([4, 3, 2]), X, y, loss="bce", verbose=False)


# ----------------------------------------------------------------------------- multi-label
def test_multilabel():
    X, _ = _binary(n=300, seed=3)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 2] > 0], axis=1).astype(np.float32)
    net = MLP([4, 16, 3], activation="relu", output="sigmoid", seed=0)
    history = fastmlp.train(net, X, Y, epochs=20, lr=0.5, loss="bce", verbose=False, threads=1)
    assert net.multilabel
    pred = net.predict(X)
    assert pred.shape == (300, 3)
    assert np.array_equal(pred, (net.forward(X) > 0.5).astype(np.int64))
    exact = float(np.mean((pred == Y).all(axis=1)))
    assert net.evaluate(X, Y, loss="bce")[1] == exact > 0.8
    assert history["accuracy"][-1] > 0.8


def test_multilabel_survives_save_and_load(tmp_path):
    X, _ = _binary(n=40, seed=3)
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(np.float32)
    net = MLP([4, 5, 2], output="sigmoid", seed=0)
    fastmlp.train(net, X, Y, epochs=1, loss="bce", verbose=False, threads=1)
    net.save(tmp_path / "m.npz")
    back = MLP.load(tmp_path / "m.npz")
    assert back.multilabel and np.array_equal(back.predict(X), net.predict(X))
    assert not MLP([4, 5, 2], output="sigmoid").multilabel


# ----------------------------------------------------------------------------- regression
def test_regression_with_1d_float_targets():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    t = (2 * X[:, 0] - X[:, 1] + 0.5).astype(np.float32)
    net = MLP([3, 16, 1], activation="tanh", output="identity", seed=0)
    history = fastmlp.train(net, X, t, epochs=30, lr=0.02, loss="mse", verbose=False, threads=1,
                            validation_split=0.2)
    assert history["accuracy"] == [None] * 30 and history["val_accuracy"] == [None] * 30
    pred = net.predict(X)
    assert pred.shape == (300,)
    mse, accuracy = net.evaluate(X, t, loss="mse")
    assert accuracy is None
    assert mse == pytest.approx(float(np.mean((pred - t) ** 2)), rel=1e-5) and mse < 0.1
    with pytest.raises(ValueError, match="is not in the history"):
        fastmlp.train(net, X, t, loss="mse", verbose=False, validation_split=0.2,
                      callbacks=[fastmlp.callbacks.EarlyStopping(monitor="val_accuracy")])


def test_float_labels_for_several_outputs_still_rejected():
    with pytest.raises(ValueError, match="non-integer class labels.*regression target only"):
        fastmlp.train(MLP([3, 2, 2], output="identity"), np.zeros((4, 3)), np.array([0.5, 1, 2, 3]),
                      loss="mse", verbose=False)


# -------------------------------------------------------------------------------- weights
def _blobs(n=120, seed=0, k=3):
    rng = np.random.default_rng(seed)
    y = rng.choice(k, n, p=[0.7, 0.2, 0.1][:k])
    X = (rng.normal(0, 1.5, (k, 4))[y] + rng.normal(size=(n, 4))).astype(np.float64)
    return X, y


def test_weighted_full_batch_step_equals_reference():
    X, y = _blobs(n=24)
    w = np.random.default_rng(1).uniform(0, 2, 24)
    net = MLP([4, 5, 3], activation="tanh", dtype="float64", seed=2)
    W = [x.copy() for x in net.weights]
    b = [x.copy() for x in net.biases]
    gW, gb = ref.gradients(W, b, X, y, "tanh", "softmax", "ce", sample_weight=w)
    want_W, want_b = ref.sgd_step(W, b, gW, gb, 0.3)
    history = fastmlp.train(net, X, y, epochs=1, batch_size=24, lr=0.3, sample_weight=w, verbose=False,
                            threads=1)
    for got, want in zip(net.weights + net.biases, want_W + want_b):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    assert history["loss"][0] == pytest.approx(ref.cost(W, b, X, y, "tanh", "softmax", "ce", sample_weight=w),
                                               rel=1e-12)


def test_class_weight_balanced_is_sklearns():
    X, y = _blobs()
    counts = np.bincount(y)
    balanced = len(y) / (3 * counts)
    try:  # scikit-learn is not a test dependency; where it is installed, check against it
        from sklearn.utils.class_weight import compute_class_weight
    except ImportError:
        pass
    else:
        np.testing.assert_allclose(balanced, compute_class_weight("balanced", classes=np.arange(3), y=y))
    runs = []
    for kw in (dict(class_weight="balanced"), dict(sample_weight=balanced[y]),
               dict(class_weight={0: balanced[0], 1: balanced[1], 2: balanced[2]})):
        net = MLP([4, 6, 3], dtype="float64", seed=0)
        h = fastmlp.train(net, X, y, epochs=2, lr=0.1, verbose=False, threads=1, **kw)
        runs.append((net.params.copy(), h["loss"]))
    for params, loss in runs[1:]:
        np.testing.assert_array_equal(params, runs[0][0])
        assert loss == runs[0][1]
    unweighted = MLP([4, 6, 3], dtype="float64", seed=0)
    fastmlp.train(unweighted, X, y, epochs=2, lr=0.1, verbose=False, threads=1)
    assert not np.array_equal(unweighted.params, runs[0][0])


def test_class_weight_with_binary_labels_and_sample_weight():
    X, y = _binary(n=40)
    sw = np.linspace(0.5, 1.5, 40)
    a = MLP([4, 3, 1], output="sigmoid", dtype="float64", seed=0)
    fastmlp.train(a, X, y, epochs=1, loss="bce", class_weight={1: 3.0}, sample_weight=sw, verbose=False,
                  threads=1)
    b = MLP([4, 3, 1], output="sigmoid", dtype="float64", seed=0)
    fastmlp.train(b, X, y, epochs=1, loss="bce", sample_weight=sw * np.where(y == 1, 3.0, 1.0), verbose=False,
                  threads=1)
    np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.parametrize("kw, match", [
    (dict(sample_weight=np.ones(5)), r"sample_weight: got shape \(5,\)"),
    (dict(sample_weight=-np.ones(120)), "weights >= 0"),
    (dict(sample_weight=np.zeros(120)), "not all zero"),
    (dict(class_weight="auto"), "class_weight"),
    (dict(class_weight={3: 1.0}), "class 3"),
    (dict(class_weight={0: -1.0}), r"class_weight\[0\]"),
    (dict(class_weight=[1, 2, 3]), "class_weight: got list")])
def test_bad_weights(kw, match):
    X, y = _blobs()
    with pytest.raises(ValueError, match=match):
        fastmlp.train(MLP([4, 6, 3]), X, y, verbose=False, **kw)


def test_class_weight_is_refused_for_regression():
    with pytest.raises(ValueError, match="class_weight"):
        fastmlp.train(MLP([3, 2, 1], output="identity"), np.zeros((4, 3)), np.zeros(4), loss="mse",
                      class_weight="balanced", verbose=False)


# ------------------------------------------------------------------------ standardisation
def test_standardisation_is_applied_to_raw_rows(tmp_path):
    rng = np.random.default_rng(9)
    X = rng.normal(1000, 300, (50, 4))
    mean, scale = X.mean(axis=0), X.std(axis=0)
    net = MLP([4, 5, 3], dtype="float64", seed=1, input_mean=mean, input_scale=scale)
    plain = MLP([4, 5, 3], dtype="float64", seed=1)
    assert np.array_equal(net.params, plain.params)
    Z = (X - mean) / scale
    np.testing.assert_array_equal(net.forward(X), plain.forward(Z))
    y = rng.integers(0, 3, 50)
    assert net.evaluate(X, y) == plain.evaluate(Z, y)
    h1 = fastmlp.train(net, X, y, epochs=2, verbose=False, threads=1)
    h2 = fastmlp.train(plain, Z, y, epochs=2, verbose=False, threads=1)
    np.testing.assert_array_equal(net.params, plain.params)
    assert h1["loss"] == h2["loss"]
    net.save(tmp_path / "m.npz")
    back = MLP.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.input_mean, mean)
    np.testing.assert_array_equal(back.input_scale, scale)
    np.testing.assert_array_equal(back.predict(X), net.predict(X))
    assert MLP.load(tmp_path / "m.npz").input_mean.dtype == np.float64
    assert plain.input_mean is None and plain.input_scale is None


def test_standardisation_of_uint8_rows_follows_the_division_by_255():
    X = np.random.default_rng(0).integers(0, 256, (10, 3), dtype=np.uint8)
    mean, scale = np.full(3, 0.5), np.full(3, 0.25)
    net = MLP([3, 2], dtype="float64", input_mean=mean, input_scale=scale)
    plain = MLP([3, 2], dtype="float64")
    np.testing.assert_array_equal(net.forward(X), plain.forward((X / 255.0 - 0.5) / 0.25))


@pytest.mark.parametrize("kw, match", [
    (dict(input_mean=np.zeros(4)), "both or neither"),
    (dict(input_mean=np.zeros(3), input_scale=np.ones(3)), r"input_mean: got shape \(3,\)"),
    (dict(input_mean=np.zeros(4), input_scale=np.zeros(4)), "input_scale: expected values > 0"),
    (dict(input_mean=np.full(4, np.nan), input_scale=np.ones(4)), "NaN")])
def test_bad_standardisation(kw, match):
    with pytest.raises(ValueError, match=match):
        MLP([4, 3], **kw)
