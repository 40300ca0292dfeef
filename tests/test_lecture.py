"""The lecture's two exercises as golden tests, with the values worked out by hand below.

Exercise 1 (Neural Networks I): compute the output y of a ReLU / softmax network.
Exercise 2 (Neural Networks II): compute the cross-entropy loss and dC/dw_21^1.

Each exercise is checked through tests/reference.py, through fastmlp.MLP.from_weights and through
the individual kernels of fastmlp.kernels, in float64 (tight) and float32 (looser).
"""

import math

import numpy as np
import pytest

import reference as ref

E = math.e

# ----------------------------------------------------------------------------------- Exercise 1
# x = [1, 0]
# W1 = [[1, 1], [0, 1], [-1, 0]],  b1 = [1, 0, -1]
# z1 = W1 x + b1 = [1*1 + 1*0 + 1,  0*1 + 1*0 + 0,  -1*1 + 0*0 - 1] = [2, 0, -2]
# a1 = relu(z1) = [2, 0, 0]
# W2 = [[1, 1, -1], [0, 1, 0]],  b2 = [0, 1]
# z2 = W2 a1 + b2 = [1*2 + 1*0 - 1*0 + 0,  0*2 + 1*0 + 0*0 + 1] = [2, 1]
# y = softmax(z2) = [e^2, e^1] / (e^2 + e) = [e/(e+1), 1/(e+1)]
#   = [2.718281828/3.718281828, 1/3.718281828] = [0.731059, 0.268941]
EX1_X = [1.0, 0.0]
EX1_W = [[[1, 1], [0, 1], [-1, 0]], [[1, 1, -1], [0, 1, 0]]]
EX1_B = [[1, 0, -1], [0, 1]]
EX1_Z1 = [2.0, 0.0, -2.0]
EX1_A1 = [2.0, 0.0, 0.0]
EX1_Z2 = [2.0, 1.0]
EX1_Y = [E / (E + 1), 1 / (E + 1)]

# ----------------------------------------------------------------------------------- Exercise 2
# x = [1, 2]
# W1 = [[1, 1], [-1, 1], [1, -1]],  b1 = 0
# z1 = [1 + 2, -1 + 2, 1 - 2] = [3, 1, -1];   a1 = relu(z1) = [3, 1, 0];   relu'(z1) = [1, 1, 0]
# W2 = [[0, 1, 0], [1, -1, 0], [0, 0, 1]],  b2 = 0
# z2 = [0*3 + 1*1 + 0*0,  1*3 - 1*1 + 0*0,  0*3 + 0*1 + 1*0] = [1, 2, 0]
# With S = e + e^2 + 1 = 2.718282 + 7.389056 + 1 = 11.107338:
# yhat = softmax(z2) = [e, e^2, 1] / S = [0.244728, 0.665241, 0.090031]
# Truth y = [0, 1, 0] (class index 1, 0-based; t = 2 in the lecture's 1-based numbering).
# CE = -log(yhat_t) = -log(e^2 / S) = log(S) - 2 = 2.407606 - 2 = 0.407606
# delta2 = yhat - onehot = [e/S, e^2/S - 1, 1/S] = [e/S, -(e+1)/S, 1/S]
#        = [0.244728, -0.334759, 0.090031]
# (W2)^T delta2 = [delta2_2,  delta2_1 - delta2_2,  delta2_3]
#               = [-(e+1)/S,  (e + e + 1)/S,  1/S] = [-0.334759, 0.579488, 0.090031]
# delta1 = relu'(z1) * (W2)^T delta2 = [-(e+1)/S, (2e+1)/S, 0] = [-0.334759, 0.579488, 0]
# dC/dw_21^1 = delta1_2 * x_1 = (2e+1)/S * 1 = 6.436564 / 11.107338 = 0.579488
#   (w_21^1 is row 2, column 1 in the lecture's 1-based indices: dW1[1, 0] in 0-based numpy.)
# dC/dW1 = delta1 x^T = [[-0.334759, -0.669518], [0.579488, 1.158975], [0, 0]]
# dC/dW2 = delta2 a1^T = [[3e/S, e/S, 0], [-3(e+1)/S, -(e+1)/S, 0], [3/S, 1/S, 0]]
#        = [[0.734185, 0.244728, 0], [-1.004277, -0.334759, 0], [0.270092, 0.090031, 0]]
# dC/db1 = delta1,  dC/db2 = delta2 (one sample, so the mean over samples is that sample).
EX2_X = [1.0, 2.0]
EX2_W = [[[1, 1], [-1, 1], [1, -1]], [[0, 1, 0], [1, -1, 0], [0, 0, 1]]]
EX2_B = [[0, 0, 0], [0, 0, 0]]
EX2_T = 1
S = E + E ** 2 + 1
EX2_Z1 = [3.0, 1.0, -1.0]
EX2_A1 = [3.0, 1.0, 0.0]
EX2_Z2 = [1.0, 2.0, 0.0]
EX2_YHAT = [E / S, E ** 2 / S, 1 / S]
EX2_CE = math.log(S) - 2
EX2_DELTA2 = [E / S, -(E + 1) / S, 1 / S]
EX2_DELTA1 = [-(E + 1) / S, (2 * E + 1) / S, 0.0]
EX2_DW1 = [[-(E + 1) / S, -2 * (E + 1) / S], [(2 * E + 1) / S, 2 * (2 * E + 1) / S], [0.0, 0.0]]
EX2_DW2 = [[3 * E / S, E / S, 0.0], [-3 * (E + 1) / S, -(E + 1) / S, 0.0], [3 / S, 1 / S, 0.0]]

# Exercise 2 with MSE instead of cross-entropy (softmax output, same network):
# c = sum_i (yhat_i - y_i)^2 = (e/S)^2 + ((e+1)/S)^2 + (1/S)^2 = (e^2 + (e+1)^2 + 1) / S^2
#   = (7.389056 + 13.825621 + 1) / 123.372900 = 0.180061
# g = dc/dyhat = 2 (yhat - y) = 2 delta2 = [0.489457, -0.669518, 0.180061]
# Softmax Jacobian (lecture): dy_i/dz_j = y_j (1 - y_j) if i == j, -y_i y_j otherwise, so
# delta_j = sum_i dy_i/dz_j g_i = y_j (g_j - sum_i y_i g_i), with
# sum_i y_i g_i = 0.244728*0.489457 - 0.665241*0.669518 + 0.090031*0.180061 = -0.309396
# delta2_mse = [0.244728*(0.489457+0.309396), 0.665241*(-0.669518+0.309396),
#               0.090031*(0.180061+0.309396)] = [0.195502, -0.239568, 0.044066]
EX2_MSE = (E ** 2 + (E + 1) ** 2 + 1) / S ** 2
EX2_DELTA2_MSE = [0.19550201, -0.23956810, 0.04406609]


def _close(dtype):
    if np.dtype(dtype) == np.float64:
        return dict(rtol=1e-12, atol=1e-12)
    return dict(rtol=2e-6, atol=2e-7)


def _approx(value, dtype):
    t = _close(dtype)
    return pytest.approx(value, rel=t["rtol"], abs=t["atol"])


def _arr(values, dtype):
    return np.array(values, dtype=dtype)


# ---------------------------------------------------------------- the hand values themselves
def test_hand_values_match_their_decimals():
    """The closed forms above agree with the decimals written in the comments."""
    np.testing.assert_allclose(EX1_Y, [0.731059, 0.268941], atol=5e-7)
    np.testing.assert_allclose(EX2_YHAT, [0.244728, 0.665241, 0.090031], atol=5e-7)
    assert EX2_CE == pytest.approx(0.407606, abs=5e-7)
    np.testing.assert_allclose(EX2_DELTA1, [-0.334759, 0.579488, 0.0], atol=5e-7)
    assert EX2_DW1[1][0] == pytest.approx(0.579488, abs=5e-7)
    assert EX2_MSE == pytest.approx(0.180061, abs=5e-7)
    np.testing.assert_allclose(EX2_DELTA2_MSE, [0.195502, -0.239568, 0.044066], atol=5e-7)


# ------------------------------------------------------------------------ through the reference
def test_exercise1_reference():
    zs, acts = ref.forward_sample(EX1_W, EX1_B, EX1_X, "relu", "softmax")
    np.testing.assert_allclose(zs[0], EX1_Z1, rtol=0, atol=1e-15)
    np.testing.assert_allclose(acts[1], EX1_A1, rtol=0, atol=1e-15)
    np.testing.assert_allclose(zs[1], EX1_Z2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(acts[2], EX1_Y, rtol=1e-14)
    assert np.sum(acts[2]) == pytest.approx(1.0, abs=1e-15)


def test_exercise2_reference():
    zs, acts = ref.forward_sample(EX2_W, EX2_B, EX2_X, "relu", "softmax")
    np.testing.assert_allclose(zs[0], EX2_Z1, atol=1e-15)
    np.testing.assert_allclose(acts[1], EX2_A1, atol=1e-15)
    np.testing.assert_allclose(zs[1], EX2_Z2, atol=1e-15)
    np.testing.assert_allclose(acts[2], EX2_YHAT, rtol=1e-14)
    assert ref.cost(EX2_W, EX2_B, [EX2_X], [EX2_T], "relu", "softmax", "ce") == \
        pytest.approx(EX2_CE, rel=1e-14)
    delta2 = ref.output_delta(zs[1], acts[2], EX2_T, "softmax", "ce")
    np.testing.assert_allclose(delta2, EX2_DELTA2, rtol=1e-14)
    # the general route through the softmax Jacobian with a one-hot float target agrees
    delta2_jac = ref.output_delta(zs[1], acts[2], np.array([0.0, 1.0, 0.0]), "softmax", "ce")
    np.testing.assert_allclose(delta2_jac, EX2_DELTA2, rtol=1e-13, atol=1e-15)
    delta1 = ref.delta_backward(np.array(EX2_W[1], float), delta2, zs[0], "relu")
    np.testing.assert_allclose(delta1, EX2_DELTA1, rtol=1e-14, atol=1e-15)
    dW, db = ref.gradients(EX2_W, EX2_B, [EX2_X], [EX2_T], "relu", "softmax", "ce")
    assert dW[0][1, 0] == pytest.approx(0.579488, abs=5e-7)          # dC/dw_21^1
    np.testing.assert_allclose(dW[0], EX2_DW1, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dW[1], EX2_DW2, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(db[0], EX2_DELTA1, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(db[1], EX2_DELTA2, rtol=1e-14, atol=1e-15)


def test_exercise2_mse_reference():
    zs, acts = ref.forward_sample(EX2_W, EX2_B, EX2_X, "relu", "softmax")
    assert ref.cost(EX2_W, EX2_B, [EX2_X], [EX2_T], "relu", "softmax", "mse") == \
        pytest.approx(EX2_MSE, rel=1e-14)
    delta2 = ref.output_delta(zs[1], acts[2], EX2_T, "softmax", "mse")
    np.testing.assert_allclose(delta2, EX2_DELTA2_MSE, atol=1e-8)


# ---------------------------------------------------------------------- through fastmlp.MLP
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exercise1_model(fm, dtype):
    net = fm.MLP.from_weights([np.array(W, float) for W in EX1_W],
                              [np.array(b, float) for b in EX1_B],
                              activation="relu", output="softmax", dtype=dtype)
    assert net.sizes == [2, 3, 2]
    y = net.forward(_arr(EX1_X, dtype))
    assert y.shape == (2,)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, EX1_Y, **_close(dtype))
    Y = net.forward(_arr([EX1_X], dtype))
    assert Y.shape == (1, 2)
    np.testing.assert_allclose(Y[0], EX1_Y, **_close(dtype))
    assert list(np.asarray(net.predict(_arr([EX1_X], dtype)))) == [0]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exercise2_model(fm, dtype):
    net = fm.MLP.from_weights([np.array(W, float) for W in EX2_W],
                              [np.array(b, float) for b in EX2_B],
                              activation="relu", output="softmax", dtype=dtype)
    X = _arr([EX2_X], dtype)
    y = np.array([EX2_T])
    np.testing.assert_allclose(net.forward(X)[0], EX2_YHAT, **_close(dtype))
    assert float(net.loss(X, y, loss="ce")) == _approx(EX2_CE, dtype)
    dW, db = net.gradients(X, y, loss="ce")
    assert float(dW[0][1, 0]) == pytest.approx(0.579488, abs=5e-7)    # dC/dw_21^1
    assert dW[0].dtype == np.dtype(dtype) and db[1].dtype == np.dtype(dtype)
    np.testing.assert_allclose(dW[0], EX2_DW1, **_close(dtype))
    np.testing.assert_allclose(dW[1], EX2_DW2, **_close(dtype))
    np.testing.assert_allclose(db[0], EX2_DELTA1, **_close(dtype))
    np.testing.assert_allclose(db[1], EX2_DELTA2, **_close(dtype))
    # the same exercise with MSE (softmax Jacobian); dC/db2 = delta2_mse
    assert float(net.loss(X, y, loss="mse")) == _approx(EX2_MSE, dtype)
    _, db_mse = net.gradients(X, y, loss="mse")
    np.testing.assert_allclose(db_mse[1], EX2_DELTA2_MSE, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exercise2_model_mean_over_identical_samples(fm, dtype):
    """C is the MEAN of c: three copies of the sample give the same loss and gradients."""
    net = fm.MLP.from_weights([np.array(W, float) for W in EX2_W],
                              [np.array(b, float) for b in EX2_B],
                              activation="relu", output="softmax", dtype=dtype)
    X = _arr([EX2_X] * 3, dtype)
    y = np.array([EX2_T] * 3)
    assert float(net.loss(X, y, loss="ce")) == _approx(EX2_CE, dtype)
    dW, db = net.gradients(X, y, loss="ce")
    np.testing.assert_allclose(dW[0], EX2_DW1, **_close(dtype))
    np.testing.assert_allclose(db[1], EX2_DELTA2, **_close(dtype))


# ------------------------------------------------------------------ through fastmlp.kernels
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exercise1_kernels(kernels, dtype):
    W1, W2 = (_arr(W, dtype) for W in EX1_W)
    b1, b2 = (_arr(b, dtype) for b in EX1_B)
    x = _arr(EX1_X, dtype)
    z1 = kernels.dense_forward(W1, b1, x)
    np.testing.assert_allclose(z1, EX1_Z1, **_close(dtype))
    a1 = kernels.activation_forward(z1, "relu")
    np.testing.assert_allclose(a1, EX1_A1, **_close(dtype))
    z2 = kernels.dense_forward(W2, b2, a1)
    np.testing.assert_allclose(z2, EX1_Z2, **_close(dtype))
    y = kernels.activation_forward(z2, "softmax")
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y, EX1_Y, **_close(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exercise2_kernels(kernels, dtype):
    W1, W2 = (_arr(W, dtype) for W in EX2_W)
    b1, b2 = (_arr(b, dtype) for b in EX2_B)
    x = _arr(EX2_X, dtype)
    z1 = kernels.dense_forward(W1, b1, x)
    a1 = kernels.activation_forward(z1, "relu")
    z2 = kernels.dense_forward(W2, b2, a1)
    yhat = kernels.activation_forward(z2, "softmax")
    np.testing.assert_allclose(z1, EX2_Z1, **_close(dtype))
    np.testing.assert_allclose(z2, EX2_Z2, **_close(dtype))
    np.testing.assert_allclose(yhat, EX2_YHAT, **_close(dtype))
    c = kernels.loss_forward(yhat, EX2_T, "ce")
    assert np.shape(c) == ()
    assert float(c) == _approx(EX2_CE, dtype)
    assert float(kernels.loss_forward(yhat, EX2_T, "mse")) == _approx(EX2_MSE, dtype)
    delta2 = kernels.output_delta(z2, yhat, EX2_T, "softmax", "ce")
    np.testing.assert_allclose(delta2, EX2_DELTA2, **_close(dtype))
    np.testing.assert_allclose(kernels.output_delta(z2, yhat, EX2_T, "softmax", "mse"),
                               EX2_DELTA2_MSE, rtol=1e-6, atol=1e-7)
    delta1 = kernels.delta_backward(W2, delta2, z1, "relu")
    np.testing.assert_allclose(delta1, EX2_DELTA1, **_close(dtype))
    dW1, db1 = np.zeros((3, 2), dtype), np.zeros(3, dtype)
    dW2, db2 = np.zeros((3, 3), dtype), np.zeros(3, dtype)
    assert kernels.accumulate_gradients(delta1, x, dW1, db1) is None
    kernels.accumulate_gradients(delta2, a1, dW2, db2)
    assert dW1[1, 0] == pytest.approx(0.579488, abs=5e-7)              # dC/dw_21^1
    np.testing.assert_allclose(dW1, EX2_DW1, **_close(dtype))
    np.testing.assert_allclose(dW2, EX2_DW2, **_close(dtype))
    np.testing.assert_allclose(db1, EX2_DELTA1, **_close(dtype))
    np.testing.assert_allclose(db2, EX2_DELTA2, **_close(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exercise2_minibatch_step(kernels, dtype):
    """One SGD step on the exercise: W <- W - lr dC/dW, b <- b - lr dC/db; returns the CE."""
    weights = [_arr(W, dtype) for W in EX2_W]
    biases = [_arr(b, dtype) for b in EX2_B]
    lr = 0.5
    c = kernels.minibatch_step(weights, biases, _arr([EX2_X], dtype), np.array([EX2_T]), lr,
                               activation="relu", output="softmax", loss="ce", threads=1)
    assert float(c) == _approx(EX2_CE, dtype)
    np.testing.assert_allclose(weights[0], np.array(EX2_W[0]) - lr * np.array(EX2_DW1),
                               **_close(dtype))
    np.testing.assert_allclose(weights[1], np.array(EX2_W[1]) - lr * np.array(EX2_DW2),
                               **_close(dtype))
    np.testing.assert_allclose(biases[0], -lr * np.array(EX2_DELTA1), **_close(dtype))
    np.testing.assert_allclose(biases[1], -lr * np.array(EX2_DELTA2), **_close(dtype))
    assert weights[0].dtype == np.dtype(dtype)
