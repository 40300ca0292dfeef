"""The compute kernels, public and validated, for float32 and float64 arrays.

Each function checks its arguments and calls a private Numba kernel in fastmlp._kernels (the one
the trainer uses). A 1-D array is one sample; a 2-D array holds one sample per row. Notation as in
the lecture: W^l has shape (N_l, N_{l-1}), z^l = W^l a^{l-1} + b^l, a^l = sigma(z^l),
delta^l = dc/dz^l.

    dense_forward(W, b, a_prev)                      z = W a_prev + b
    activation_forward(z, activation)                a = sigma(z)  (or softmax per sample)
    activation_backward(z, activation)               sigma'(z)
    loss_forward(yhat, target, loss)                 per-sample c: mse sum_i (yhat_i - y_i)^2, ce -log yhat_t,
                                                     bce -sum_i [y_i log yhat_i + (1 - y_i) log(1 - yhat_i)]
    output_delta(z, yhat, target, output, loss)      delta^L = dc/dz^L
    delta_backward(W_next, delta_next, z, activation)  delta^l = sigma'(z^l) * (W^{l+1})^T delta^{l+1}
    accumulate_gradients(delta, a_prev, dW, db)      dW += delta a_prev^T, db += delta (summed over samples)
    minibatch_step(weights, biases, X, target, lr, ...)  one SGD step on the mean cost of a minibatch

Compilation happens on first use (and is cached on disk), never at import.
"""
import numpy as np

from . import _checks
from ._buffers import (Data, Network, OptimizerState, Results, Workspace, input_bytes, input_divisor, layout,
                       no_targets)
from ._plan import phase_plan
from ._threads import resolve_threads, thread_count
from .errors import DivergenceError

__all__ = ["dense_forward", "activation_forward", "activation_backward", "loss_forward",
           "output_delta", "delta_backward", "accumulate_gradients", "minibatch_step"]


def _k():
    from . import _kernels
    return _kernels


def _threads(threads):
    return resolve_threads(threads)


def _as_batch(name, a, dtype=None):
    arr = _checks.as_float_array(name, a, dtype)
    if arr.shape[-1] == 0:
        raise ValueError(f"{name}: got shape {arr.shape}, expected at least one value per sample")
    return (arr.reshape(1, -1) if arr.ndim == 1 else arr), arr.ndim == 1


def dense_forward(W, b, a_prev, threads=None):
    """z = W a_prev + b. W (N_l, N_{l-1}), b (N_l,), a_prev (N_{l-1},) or (n, N_{l-1}) -> z (N_l,) or (n, N_l)."""
    W = _checks.as_float_array("W", W, ndims=(2,))
    b = _checks.as_float_array("b", b, ndims=(1,))
    a, single = _as_batch("a_prev", a_prev)
    _checks.same_dtype(W=W, b=b, a_prev=a)
    if b.shape[0] != W.shape[0]:
        raise ValueError(f"b: got shape {b.shape}, expected ({W.shape[0]},) to match W {W.shape}")
    if a.shape[1] != W.shape[1]:
        raise ValueError(f"a_prev: got {a.shape[1]} features, expected {W.shape[1]} to match W {W.shape}")
    z = np.empty((a.shape[0], W.shape[0]), dtype=W.dtype)
    _k()._dense_forward(W, b, a, z, _k().IDENTITY, _threads(threads))
    return z[0] if single else z


def activation_forward(z, activation):
    """a = sigma(z) elementwise for 'sigmoid', 'relu', 'tanh', 'identity'; 'softmax' per sample."""
    _checks.check_choice("activation", activation, _checks.HIDDEN_ACTIVATIONS + ("softmax",))
    zb, single = _as_batch("z", z)
    out = np.empty_like(zb)
    _k()._activation_rows(zb, out, _k().ACTIVATION_CODES[activation], 0, zb.shape[0])
    return out[0] if single else out


def activation_backward(z, activation):
    """sigma'(z) elementwise for 'sigmoid', 'relu' (0 at z = 0), 'tanh', 'identity'."""
    _checks.check_choice("activation", activation, _checks.HIDDEN_ACTIVATIONS)
    zb, single = _as_batch("z", z)
    out = np.empty_like(zb)
    _k()._activation_grad_rows(zb, out, _k().ACTIVATION_CODES[activation])
    return out[0] if single else out


def _targets(yhat_b, target, loss, output=None):
    n, K = yhat_b.shape
    t = np.asarray(target)
    if yhat_b.shape[0] == 1 and t.ndim == (0 if t.dtype.kind in "iu" else 1) and t.size in (1, K):
        t = t.reshape(1, -1) if t.ndim == 1 else t.reshape(1)
    return _checks.check_targets("target", t, n, K, loss, yhat_b.dtype, output)


def loss_forward(yhat, target, loss):
    """Per-sample loss, in yhat's dtype (summed in float64): 'mse' c = sum_i (yhat_i - y_i)^2, 'ce' c = -log yhat_t
    (-sum_i y_i log yhat_i for target rows), 'bce' c = -sum_i [y_i log yhat_i + (1 - y_i) log(1 - yhat_i)]
    (yhat: sigmoid outputs; infinite where yhat is exactly 0 or 1 on the wrong side: the trainer computes
    it from z instead). target: class index/indices, or targets shaped like yhat (for bce with one output,
    0/1 labels). Returns a 0-d array for one sample, (n,) for a batch; the cost is their mean."""
    _checks.check_choice("loss", loss, _checks.LOSSES)
    yb, single = _as_batch("yhat", yhat)
    labels, targets = _targets(yb, target, loss, "sigmoid" if loss == "bce" else None)
    if targets is None:
        targets = np.zeros_like(yb)
        targets[np.arange(yb.shape[0]), labels] = 1
    if loss == "ce":
        if (yb < 0).any() or (yb > 1).any():
            raise ValueError("yhat: cross-entropy needs probabilities in [0, 1] (a softmax output)")
        with np.errstate(divide="ignore"):
            logs = np.where(targets != 0, np.log(np.where(targets != 0, yb, 1).astype(np.float64)), 0.0)
        c = -(targets * logs).sum(axis=1)
    elif loss == "bce":
        if (yb < 0).any() or (yb > 1).any():
            raise ValueError("yhat: binary cross-entropy needs probabilities in [0, 1] (sigmoid outputs)")
        y64, t = yb.astype(np.float64), targets.astype(np.float64)
        with np.errstate(divide="ignore"):
            pos = np.where(t != 0, t * np.log(np.where(t != 0, y64, 1.0)), 0.0)
            neg = np.where(t != 1, (1 - t) * np.log(np.where(t != 1, 1 - y64, 1.0)), 0.0)
        c = -(pos + neg).sum(axis=1)
    else:
        c = ((yb.astype(np.float64) - targets) ** 2).sum(axis=1)
    c = c.astype(yb.dtype)
    return c[0] if single else c


def output_delta(z, yhat, target, output, loss):
    """delta^L = dc/dz^L for one sample or per row (no 1/n). Pairs: softmax+ce (yhat - y),
    softmax+mse, sigmoid+mse, identity+mse, sigmoid+bce (yhat - y). yhat must be the output activation
    of z."""
    _checks.check_choice("output", output, _checks.OUTPUTS)
    _checks.check_loss_output(loss, output)
    zb, single = _as_batch("z", z)
    yb, _ = _as_batch("yhat", yhat)
    _checks.same_dtype(z=zb, yhat=yb)
    if yb.shape != zb.shape:
        raise ValueError(f"yhat: got shape {yb.shape}, expected {zb.shape} like z")
    labels, targets = _targets(yb, target, loss, output)
    has_targets = targets is not None
    if not has_targets:
        targets = no_targets(zb.shape[1], zb.dtype)
    delta = np.empty_like(zb)
    losses = np.empty(zb.shape[0])
    k = _k()
    k._output_step(zb, yb, delta, labels, targets, has_targets, np.arange(zb.shape[0]),
                   k.ACTIVATION_CODES[output], k.LOSS_CODES[loss], zb.dtype.type(1), losses, np.ones(1), False)
    return delta[0] if single else delta


def delta_backward(W_next, delta_next, z, activation, threads=None):
    """delta^l = sigma'(z^l) * (W^{l+1})^T delta^{l+1}. W_next (N_{l+1}, N_l), delta_next (N_{l+1},)
    or (n, N_{l+1}), z = z^l (N_l,) or (n, N_l) -> delta^l shaped like z."""
    _checks.check_choice("activation", activation, _checks.HIDDEN_ACTIVATIONS)
    W = _checks.as_float_array("W_next", W_next, ndims=(2,))
    d, single = _as_batch("delta_next", delta_next)
    zb, _ = _as_batch("z", z)
    _checks.same_dtype(W_next=W, delta_next=d, z=zb)
    if d.shape[1] != W.shape[0]:
        raise ValueError(f"delta_next: got {d.shape[1]} values per sample, expected {W.shape[0]} "
                         f"(the rows of W_next {W.shape})")
    if zb.shape != (d.shape[0], W.shape[1]):
        raise ValueError(f"z: got shape {zb.shape}, expected {(d.shape[0], W.shape[1])}")
    out = np.empty_like(zb)
    _k()._delta_backward(W, d, zb, _k().ACTIVATION_CODES[activation], out, _threads(threads))
    return out[0] if single else out


def accumulate_gradients(delta, a_prev, dW, db, threads=None):
    """In place: dW += sum over samples of delta a_prev^T (outer products), db += sum of delta.
    delta (N_l,) or (n, N_l), a_prev (N_{l-1},) or (n, N_{l-1}), dW (N_l, N_{l-1}), db (N_l,)."""
    d, _ = _as_batch("delta", delta)
    a, _ = _as_batch("a_prev", a_prev)
    for name, arr, nd in (("dW", dW, 2), ("db", db, 1)):
        if not isinstance(arr, np.ndarray) or arr.ndim != nd or not arr.flags.c_contiguous \
                or not arr.flags.writeable:
            raise ValueError(f"{name}: expected a writeable C-contiguous {nd}-D NumPy array")
    _checks.same_dtype(delta=d, a_prev=a, dW=dW, db=db)
    if a.shape[0] != d.shape[0]:
        raise ValueError(f"a_prev: got {a.shape[0]} samples, expected {d.shape[0]} like delta")
    if dW.shape != (d.shape[1], a.shape[1]) or db.shape != (d.shape[1],):
        raise ValueError(f"dW/db: got shapes {dW.shape}/{db.shape}, expected "
                         f"{(d.shape[1], a.shape[1])}/{(d.shape[1],)}")
    _k()._accumulate_gradients(d, a, dW, db, _threads(threads))


def minibatch_step(weights, biases, X, target, lr, activation="relu", output="softmax", loss="ce",
                   threads=None):
    """One SGD step, in place, on the mean cost over the rows of X: W^l -= lr dC/dW^l, b^l -= lr dC/db^l.
    The minibatch runs through the same parallel kernel the trainer uses. Returns the mean loss
    before the step."""
    sizes, dtype = _check_layers(weights, biases)
    activation = _checks.check_choice("activation", activation, _checks.HIDDEN_ACTIVATIONS)
    output = _checks.check_choice("output", output, _checks.OUTPUTS)
    _checks.check_loss_output(loss, output)
    lr = _checks.check_float("lr", lr, 0.0, strict=True)
    nthreads = _threads(threads)
    Xc, _ = _checks.check_input("X", X, sizes[0])
    n = Xc.shape[0]
    labels, targets = _checks.check_targets("target", target, n, sizes[-1], loss, dtype, output)
    has_targets = targets is not None
    if not has_targets:
        targets = no_targets(sizes[-1], dtype)
    w_off, b_off, n_params = layout(sizes)
    params = np.empty(n_params, dtype=dtype)
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        params[w_off[l]:w_off[l] + W.size] = W.ravel()
        params[b_off[l]:b_off[l] + b.size] = b
    k = _k()
    hp = np.zeros(2 * k.HP_SIZE)  # the weights' and the biases' hyperparameters
    hp[k.HP_LR] = hp[k.HP_SIZE + k.HP_LR] = lr
    ws, stats, empty = Workspace(sizes, dtype, n), np.zeros((1, 2)), np.zeros(0, dtype=dtype)
    net = Network(params, w_off, b_off, np.array(sizes, dtype=np.int64), k.ACTIVATION_CODES[activation],
                  k.ACTIVATION_CODES[output])
    data = Data(*input_bytes(Xc), input_divisor(Xc), labels, targets, has_targets, np.ones(1), False,
                k.LOSS_CODES[loss])
    with thread_count(nthreads):
        done = k._drive(phase_plan(sizes, "train"), net, ws.buffers(),
                        OptimizerState(np.zeros_like(params), empty, empty, k.SGD, hp, 1), data, np.arange(n), n,
                        nthreads, Results(np.zeros(n), stats, np.empty((0, sizes[-1]), dtype=dtype)))
    if done < 1:
        raise DivergenceError(f"the loss is {stats[0, 0]} for this minibatch; nothing was changed", step=1)
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        W[...] = params[w_off[l]:w_off[l] + W.size].reshape(W.shape)
        b[...] = params[b_off[l]:b_off[l] + b.size]
    return stats[0, 0] / n


def _check_layers(weights, biases):
    """The layer sizes and dtype of W^l (N_l, N_{l-1}) and b^l (N_l,), writeable arrays of one
    float dtype that chain; ValueError otherwise."""
    if not isinstance(weights, (list, tuple)) or not isinstance(biases, (list, tuple)) or not weights:
        raise ValueError("weights, biases: expected two lists of NumPy arrays, updated in place")
    if len(biases) != len(weights):
        raise ValueError(f"biases: got {len(biases)}, expected a list of {len(weights)} 1-D arrays, one per layer")
    arrays = {f"weights[{i}]": W for i, W in enumerate(weights)}
    arrays.update({f"biases[{i}]": b for i, b in enumerate(biases)})
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray) or not arr.flags.writeable or arr.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name}: expected a writeable float32 or float64 NumPy array (updated in place), "
                             f"got {type(arr).__name__} {getattr(arr, 'dtype', '')}")
    _checks.same_dtype(**arrays)
    sizes = [weights[0].shape[1] if weights[0].ndim == 2 else -1]
    for i, (W, b) in enumerate(zip(weights, biases)):
        if W.ndim != 2 or W.shape[1] != sizes[-1]:
            raise ValueError(f"weights: weights[{i}] has shape {W.shape}, expected ({W.shape[0]}, {sizes[-1]}) "
                             f"to chain with the layer before")
        if b.shape != (W.shape[0],):
            raise ValueError(f"biases: biases[{i}] has shape {b.shape}, expected ({W.shape[0]},)")
        sizes.append(W.shape[0])
    if min(sizes) < 1:
        raise ValueError(f"weights: got layer sizes {sizes}, expected positive sizes")
    for name, arr in arrays.items():
        _checks.check_finite(name, arr)
    return sizes, weights[0].dtype
