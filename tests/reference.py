"""A slow, obvious NumPy reference of the lecture's mathematics (Neural Networks I and II).

Written from the lecture, not from fastmlp, and it must never import fastmlp.  Everything is
computed one sample at a time in float64 and cast back to the dtype of the inputs (float64 unless
every float input is float32), so the tests can compare fastmlp's float32 results against an
accurate value.

Notation (lecture): W^l has shape (N_l, N_{l-1}), b^l shape (N_l,),
    z^l = W^l a^{l-1} + b^l,  a^l = sigma(z^l),  a^0 = x,  yhat = a^L.
Per-sample losses:  MSE c = sum_i (yhat_i - y_i)^2,   CE c = -log yhat_t
(for float targets CE c = -sum_i y_i log yhat_i).  The cost C is the MEAN of c over the samples.
Backward pass:  delta^L = dc/dz^L,  delta^l = sigma'(z^l) * (W^{l+1})^T delta^{l+1},
    dc/dW^l = delta^l (a^{l-1})^T,  dc/db^l = delta^l.
"""

import numpy as np

HIDDEN_ACTIVATIONS = ("sigmoid", "relu", "tanh", "identity")
OUTPUTS = ("softmax", "sigmoid", "identity")
LOSSES = ("ce", "mse", "bce")


# --------------------------------------------------------------------------------------- dtypes
def result_dtype(*arrays):
    """float32 if every floating input is float32, else float64 (also when there is none)."""
    floats = [np.asarray(a).dtype for a in arrays
              if a is not None and np.issubdtype(np.asarray(a).dtype, np.floating)]
    if floats and all(d == np.float32 for d in floats):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------------- activations
def sigmoid(z):
    """sigma(z) = 1 / (1 + e^-z), written so that neither branch overflows."""
    z = _f64(z)
    e = np.exp(-np.abs(z))                      # in (0, 1], never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_prime(z):
    s = sigmoid(z)
    return s * (1.0 - s)


def relu(z):
    return np.maximum(_f64(z), 0.0)


def relu_prime(z):
    """1 for z > 0, else 0 (so relu'(0) = 0)."""
    return (_f64(z) > 0).astype(np.float64)


def tanh(z):
    return np.tanh(_f64(z))


def tanh_prime(z):
    return 1.0 - np.tanh(_f64(z)) ** 2


def identity(z):
    return _f64(z).copy()


def identity_prime(z):
    return np.ones_like(_f64(z))


def softmax(z):
    """y_i = e^{z_i} / sum_j e^{z_j}, per sample (last axis); the max is subtracted for stability."""
    z = _f64(z)
    if z.ndim == 1:
        e = np.exp(z - np.max(z))
        return e / np.sum(e)
    return np.stack([softmax(row) for row in z])


def softmax_jacobian(y):
    """J[i, j] = dy_i / dz_j for one sample: y_j (1 - y_j) if i == j, else -y_i y_j (lecture)."""
    y = _f64(y)
    n = y.shape[0]
    J = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            J[i, j] = y[j] * (1.0 - y[j]) if i == j else -y[i] * y[j]
    return J


_FORWARD = {"sigmoid": sigmoid, "relu": relu, "tanh": tanh, "identity": identity,
            "softmax": softmax}
_PRIME = {"sigmoid": sigmoid_prime, "relu": relu_prime, "tanh": tanh_prime,
          "identity": identity_prime}


def activation_forward(z, activation):
    """a = sigma(z), elementwise (softmax: per sample). Keeps the dtype of z."""
    if activation not in _FORWARD:
        raise ValueError(f"unknown activation {activation!r}")
    return _FORWARD[activation](z).astype(result_dtype(z))


def activation_backward(z, activation):
    """sigma'(z), elementwise. Not defined for softmax (its derivative is a Jacobian)."""
    if activation not in _PRIME:
        raise ValueError(f"no elementwise derivative for activation {activation!r}")
    return _PRIME[activation](z).astype(result_dtype(z))


# -------------------------------------------------------------------------------- dense layer
def dense_forward(W, b, a_prev):
    """z_i = sum_j w_ij a_j + b_i for one sample (1-D a_prev) or each row of a 2-D a_prev."""
    dtype = result_dtype(W, b, a_prev)
    W, b, a_prev = _f64(W), _f64(b), _f64(a_prev)
    if a_prev.ndim == 1:
        n_out, n_in = W.shape
        z = np.empty(n_out)
        for i in range(n_out):
            s = b[i]
            for j in range(n_in):
                s += W[i, j] * a_prev[j]
            z[i] = s
        return z.astype(dtype)
    return np.stack([dense_forward(W, b, row) for row in a_prev]).astype(dtype)


# ------------------------------------------------------------------------------------- losses
def one_hot(t, n):
    y = np.zeros(n)
    y[int(t)] = 1.0
    return y


def _is_index(target):
    return np.issubdtype(np.asarray(target).dtype, np.integer)


def target_vector(target, n_out):
    """A class index becomes its one-hot row (for a single output unit: the 0/1 value itself);
    float targets are used as they are."""
    if _is_index(target):
        if n_out == 1:
            return np.array([float(target)])
        return one_hot(target, n_out)
    return _f64(target)


def sample_loss(yhat, target, loss):
    """Per-sample loss c of one sample (yhat 1-D; target an index or a float row)."""
    yhat = _f64(yhat)
    if loss == "mse":
        y = target_vector(target, yhat.shape[0])
        return float(np.sum((yhat - y) ** 2))
    if loss == "ce":
        if _is_index(target):
            return float(-np.log(yhat[int(target)]))
        y = _f64(target)
        return float(-np.sum(y * np.log(yhat)))
    if loss == "bce":
        # binary cross-entropy, each output a probability: -sum_i [y_i log yhat_i + (1 - y_i) log(1 - yhat_i)]
        y = target_vector(target, yhat.shape[0])
        return float(-np.sum(y * np.log(yhat) + (1 - y) * np.log(1 - yhat)))
    raise ValueError(f"unknown loss {loss!r}")


def loss_forward(yhat, target, loss):
    """Per-sample losses: shape () for 1-D yhat, (n,) for 2-D yhat. Keeps the dtype of yhat."""
    dtype = result_dtype(yhat)
    yhat = _f64(yhat)
    if yhat.ndim == 1:
        return np.asarray(sample_loss(yhat, target, loss), dtype=dtype)
    target = np.asarray(target)
    return np.array([sample_loss(yhat[k], target[k], loss) for k in range(yhat.shape[0])],
                    dtype=dtype)


def loss_gradient_wrt_output(yhat, target, loss):
    """dc/dyhat_i for one sample: MSE 2 (yhat_i - y_i); CE -y_i / yhat_i."""
    yhat = _f64(yhat)
    y = target_vector(target, yhat.shape[0])
    if loss == "mse":
        return 2.0 * (yhat - y)
    if loss == "ce":
        return -y / yhat
    if loss == "bce":
        return -y / yhat + (1 - y) / (1 - yhat)
    raise ValueError(f"unknown loss {loss!r}")


def _sample_output_delta(z, yhat, target, output, loss):
    z, yhat = _f64(z), _f64(yhat)
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}")
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}")
    if loss == "ce" and output != "softmax":
        raise ValueError("cross-entropy needs a softmax output")
    if loss == "bce" and output != "sigmoid":
        raise ValueError("binary cross-entropy needs a sigmoid output")
    if output == "softmax" and loss == "ce" and _is_index(target):
        # lecture: delta_i = yhat_t - 1 if i == t, yhat_i otherwise  =  yhat - onehot(t)
        return yhat - one_hot(target, yhat.shape[0])
    grad = loss_gradient_wrt_output(yhat, target, loss)
    if output == "softmax":
        # chain rule through the softmax Jacobian: delta_j = sum_i dy_i/dz_j * dc/dy_i
        J = softmax_jacobian(yhat)
        n = yhat.shape[0]
        delta = np.zeros(n)
        for j in range(n):
            for i in range(n):
                delta[j] += J[i, j] * grad[i]
        return delta
    # elementwise output: delta^L = sigma'(z^L) * dc/dyhat
    return _PRIME[output](z) * grad


def output_delta(z, yhat, target, output, loss):
    """delta^L = dc/dz^L per sample (no 1/n), shaped like z. Keeps the dtype of z/yhat."""
    dtype = result_dtype(z, yhat)
    z = _f64(z)
    if z.ndim == 1:
        return _sample_output_delta(z, yhat, target, output, loss).astype(dtype)
    yhat, target = _f64(yhat), np.asarray(target)
    return np.stack([_sample_output_delta(z[k], yhat[k], target[k], output, loss)
                     for k in range(z.shape[0])]).astype(dtype)


# --------------------------------------------------------------------------------- backward
def delta_backward(W_next, delta_next, z, activation):
    """delta^l_i = sigma'(z^l_i) * sum_k w^{l+1}_{ki} delta^{l+1}_k, per sample."""
    dtype = result_dtype(W_next, delta_next, z)
    W_next, delta_next, z = _f64(W_next), _f64(delta_next), _f64(z)
    if z.ndim == 1:
        n_next, n = W_next.shape
        d = np.empty(n)
        prime = _PRIME[activation](z)
        for i in range(n):
            s = 0.0
            for k in range(n_next):
                s += W_next[k, i] * delta_next[k]
            d[i] = prime[i] * s
        return d.astype(dtype)
    return np.stack([delta_backward(W_next, delta_next[k], z[k], activation)
                     for k in range(z.shape[0])]).astype(dtype)


def accumulate_gradients(delta, a_prev, dW, db):
    """In place: dW += sum over samples of delta a_prev^T, db += sum of delta."""
    delta, a_prev = _f64(delta), _f64(a_prev)
    if delta.ndim == 1:
        delta, a_prev = delta[None, :], a_prev[None, :]
    for k in range(delta.shape[0]):
        dW += np.outer(delta[k], a_prev[k]).astype(dW.dtype)
        db += delta[k].astype(db.dtype)


# ------------------------------------------------------------------------------- the network
def forward_sample(weights, biases, x, activation, output):
    """Forward pass of one sample; returns the lists zs = [z^1..z^L] and acts = [a^0..a^L]."""
    a = _f64(x)
    zs, acts = [], [a]
    L = len(weights)
    for l in range(L):
        z = dense_forward(_f64(weights[l]), _f64(biases[l]), a)
        a = _FORWARD[output if l == L - 1 else activation](z)
        zs.append(z)
        acts.append(a)
    return zs, acts


def forward(weights, biases, X, activation="relu", output="softmax"):
    """Output activations for (N_0,) or (n, N_0) inputs; dtype of the weights."""
    dtype = result_dtype(*weights)
    X = _f64(X)
    if X.ndim == 1:
        return forward_sample(weights, biases, X, activation, output)[1][-1].astype(dtype)
    return np.stack([forward_sample(weights, biases, x, activation, output)[1][-1]
                     for x in X]).astype(dtype)


def _targets_per_sample(y, n_out, n):
    y = np.asarray(y)
    if n_out == 1 and y.ndim == 1 and y.shape[0] == n and not _is_index(y):
        return y[:, None]          # one output unit: y (n,) holds each sample's target
    if y.ndim == 0 or (not _is_index(y) and y.ndim == 1):
        y = y[None]
    return y


def cost(weights, biases, X, y, activation="relu", output="softmax", loss="ce", sample_weight=None):
    """C = mean over the samples of the per-sample loss c (always a Python float, in float64);
    with sample_weight, the weighted mean sum_k w_k c_k / sum_k w_k."""
    X = np.atleast_2d(_f64(X))
    y = _targets_per_sample(y, np.shape(weights[-1])[0], X.shape[0])
    w = np.ones(X.shape[0]) if sample_weight is None else _f64(sample_weight)
    total = 0.0
    for k in range(X.shape[0]):
        yhat = forward_sample(weights, biases, X[k], activation, output)[1][-1]
        total += w[k] * sample_loss(yhat, y[k], loss)
    return total / w.sum()


def backprop_sample(weights, biases, x, target, activation, output, loss):
    """dc/dW^l and dc/db^l of one sample (lists, float64)."""
    zs, acts = forward_sample(weights, biases, x, activation, output)
    L = len(weights)
    deltas = [None] * L
    deltas[L - 1] = _sample_output_delta(zs[-1], acts[-1], target, output, loss)
    for l in range(L - 2, -1, -1):
        deltas[l] = delta_backward(_f64(weights[l + 1]), deltas[l + 1], zs[l], activation)
    dW = [np.outer(deltas[l], acts[l]) for l in range(L)]      # acts[l] is a^{l-1} of layer l+1
    db = [deltas[l].copy() for l in range(L)]
    return dW, db


def gradients(weights, biases, X, y, activation="relu", output="softmax", loss="ce", sample_weight=None):
    """Gradients of the MEAN cost over the samples: loop, add up outer products, divide by n
    (with sample_weight: add up w_k times them, divide by sum_k w_k).

    Returned in the dtype of the weights (computed in float64)."""
    dtype = result_dtype(*weights)
    X = np.atleast_2d(_f64(X))
    n = X.shape[0]
    y = _targets_per_sample(y, np.shape(weights[-1])[0], n)
    w = np.ones(n) if sample_weight is None else _f64(sample_weight)
    dW = [np.zeros(np.shape(W)) for W in weights]
    db = [np.zeros(np.shape(b)) for b in biases]
    for k in range(n):
        gW, gb = backprop_sample(weights, biases, X[k], y[k], activation, output, loss)
        for l in range(len(weights)):
            dW[l] += w[k] * gW[l]
            db[l] += w[k] * gb[l]
    total = w.sum()
    return ([(g / total).astype(dtype) for g in dW], [(g / total).astype(dtype) for g in db])


# ---------------------------------------------------------------------------------- optimizers
def sgd_step(weights, biases, dW, db, lr, weight_decay=0.0):
    """Plain gradient descent theta <- theta - lr (g + weight_decay theta); returns new lists."""
    new_W = [_f64(W) - lr * (_f64(g) + weight_decay * _f64(W)) for W, g in zip(weights, dW)]
    new_b = [_f64(b) - lr * (_f64(g) + weight_decay * _f64(b)) for b, g in zip(biases, db)]
    return new_W, new_b


def momentum_step(params, grads, velocity, lr, momentum, weight_decay=0.0):
    """PyTorch SGD with momentum (dampening 0): v = mu v + (g + wd p); p -= lr v.

    params/grads/velocity are lists of float64 arrays; returns (new params, new velocity)."""
    new_p, new_v = [], []
    for p, g, v in zip(params, grads, velocity):
        g = _f64(g) + weight_decay * _f64(p)
        v = momentum * _f64(v) + g
        new_v.append(v)
        new_p.append(_f64(p) - lr * v)
    return new_p, new_v


def adam_step(params, grads, m, v, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """PyTorch Adam (L2 weight decay added to g); t is the 1-based step number.

    Returns (new params, new m, new v)."""
    b1, b2 = betas
    new_p, new_m, new_v = [], [], []
    for p, g, mk, vk in zip(params, grads, m, v):
        g = _f64(g) + weight_decay * _f64(p)
        mk = b1 * _f64(mk) + (1 - b1) * g
        vk = b2 * _f64(vk) + (1 - b2) * g * g
        m_hat = mk / (1 - b1 ** t)
        v_hat = vk / (1 - b2 ** t)
        new_p.append(_f64(p) - lr * m_hat / (np.sqrt(v_hat) + eps))
        new_m.append(mk)
        new_v.append(vk)
    return new_p, new_m, new_v


# ------------------------------------------------------------------------ finite differences
def numerical_gradients(f, params, eps=1e-6, entries=None, order=2):
    """Central differences of the scalar f() for entries of the arrays in params (each entry is
    perturbed in place and restored).

    order=2: (f(p + eps) - f(p - eps)) / (2 eps)                       error O(eps^2)
    order=4: (-f(p + 2eps) + 8 f(p + eps) - 8 f(p - eps) + f(p - 2eps)) / (12 eps)   O(eps^4)
    entries: optional list of (array index, flat index) pairs to check; default all.
    Returns a dict {(array index, flat index): derivative}."""
    if entries is None:
        entries = [(k, i) for k, p in enumerate(params) for i in range(p.size)]
    steps, coefs, denom = {2: ((1, -1), (1, -1), 2.0), 4: ((2, 1, -1, -2), (-1, 8, -8, 1), 12.0)}[order]
    out = {}
    for k, i in entries:
        p = params[k]
        flat = p.reshape(-1)
        assert np.shares_memory(flat, p), "parameters must be contiguous to be perturbed"
        old = flat[i]
        total = 0.0
        for s, c in zip(steps, coefs):
            flat[i] = old + s * eps
            total += c * f()
        flat[i] = old
        out[(k, i)] = total / (denom * eps)
    return out


def glorot_std(fan_in, fan_out):
    """Std of Glorot/Xavier initialisation (normal or uniform): sqrt(2 / (fan_in + fan_out))."""
    return float(np.sqrt(2.0 / (fan_in + fan_out)))


def he_std(fan_in):
    """Std of He/Kaiming initialisation for ReLU (normal or uniform): sqrt(2 / fan_in)."""
    return float(np.sqrt(2.0 / fan_in))
