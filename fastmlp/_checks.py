"""Argument checks shared by the public API. Each raises ValueError with one line naming the
argument, what it got and what was expected."""
import numbers

import numpy as np

from ._choices import DTYPES, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, OUTPUTS  # noqa: F401 (re-exported)
# the library also has scikit-learn's Nesterov momentum (for fastmlp.MLPClassifier / MLPRegressor)
OPTIMIZERS = OPTIMIZERS + ("nesterov",)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: got {value!r}, expected one of {', '.join(map(repr, choices))}")
    return value


def check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in DTYPES:
        raise ValueError(f"dtype: got {dtype!r}, expected 'float32' or 'float64'")
    return dt


def check_loss_output(loss, output):
    check_choice("loss", loss, LOSSES)
    if loss == "ce" and output == "sigmoid":
        raise ValueError("loss: got 'ce' with output 'sigmoid'; cross-entropy needs output='softmax' "
                         "(a probability distribution over the classes); for sigmoid outputs use loss='bce' "
                         "(binary cross-entropy) or loss='mse'")
    if loss == "ce" and output != "softmax":
        raise ValueError(f"loss: got 'ce' with output {output!r}; cross-entropy needs output='softmax' "
                         "(a probability distribution over the classes); use loss='mse' instead")
    if loss == "bce" and output != "sigmoid":
        raise ValueError(f"loss: got 'bce' with output {output!r}; binary cross-entropy needs "
                         "output='sigmoid' (each output a probability)" +
                         ("; use loss='ce' for softmax" if output == "softmax" else "; use loss='mse' instead"))


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: got {value!r}, expected an integer >= {minimum}")
    return int(value)


def check_float(name, value, minimum=None, strict=False, maximum=None, max_strict=False):
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if max_strict else value <= maximum
    if not ok:
        bounds = []
        if minimum is not None:
            bounds.append(f"{'>' if strict else '>='} {minimum}")
        if maximum is not None:
            bounds.append(f"{'<' if max_strict else '<='} {maximum}")
        expected = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
        raise ValueError(f"{name}: got {value!r}, expected {expected}")
    return float(value)


def check_finite(name, a):
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); expected finite numbers")


def as_float_array(name, a, dtype=None, ndims=(1, 2)):
    """a as a C-contiguous float array (of dtype, or its own float32/float64 dtype)."""
    arr = np.asarray(a)
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ValueError(f"{name}: got an array of dtype {arr.dtype}, expected numbers")
    if arr.ndim not in ndims:
        raise ValueError(f"{name}: got {arr.ndim} dimension(s) (shape {arr.shape}), "
                         f"expected {' or '.join(map(str, ndims))}")
    if dtype is None:
        if arr.dtype not in (np.float32, np.float64):
            raise ValueError(f"{name}: got dtype {arr.dtype}, expected float32 or float64")
        dtype = arr.dtype
    check_finite(name, arr)
    return np.ascontiguousarray(arr, dtype=dtype)


def same_dtype(**arrays):
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        got = ", ".join(f"{k} {v}" for k, v in dtypes.items())
        raise ValueError(f"dtypes differ: {got}; expected all float32 or all float64")


def check_input(name, X, width):
    """X (n, width) or (width,) of numbers, finite; returns (array, was_1d), array kept in its dtype
    when uint8/float32/float64 (uint8 means pixel values, scaled by 1/255 later)."""
    arr = np.asarray(X)
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ValueError(f"{name}: got an array of dtype {arr.dtype}, expected numbers")
    single = arr.ndim == 1
    if single:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{name}: got shape {np.shape(X)}, expected (n, {width}) or ({width},) "
                         f"to match the network's {width} inputs")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: got 0 samples, expected at least 1")
    if arr.dtype not in (np.uint8, np.float32, np.float64):
        arr = arr.astype(np.float64)
    check_finite(name, arr)
    return np.ascontiguousarray(arr), single


def is_regression(output, n_outputs):
    """One identity output unit: a 1-D y is the float target, and there is no accuracy."""
    return output == "identity" and n_outputs == 1


def check_targets(name, y, n, n_outputs, loss, dtype, output=None):
    """y: class indices (n,) in [0, n_outputs) or float targets (n, n_outputs); for one sigmoid
    output (binary) y (n,) holds 0/1, for one identity output (regression) y (n,) holds the targets.
    Returns (labels int64 (n,), targets (n, K) or None)."""
    arr = np.asarray(y)
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ValueError(f"{name}: got an array of dtype {arr.dtype}, expected class indices or targets")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 1 and arr.shape[0] == n and n_outputs == 1 and output in ("identity", "sigmoid"):
        if output == "identity":
            check_finite(name, arr)
            return np.zeros(n, dtype=np.int64), np.ascontiguousarray(arr.reshape(n, 1), dtype=dtype)
        check_finite(name, arr)
        bad = arr[(arr != 0) & (arr != 1)]
        if bad.size:
            raise ValueError(f"{name}: got label {bad[0].item()!r}, expected 0 or 1 for the network's single sigmoid "
                             "output (binary classification)")
        return (np.ascontiguousarray(arr, dtype=np.int64),
                np.ascontiguousarray(arr.reshape(n, 1), dtype=dtype))
    if arr.ndim == 1:
        if arr.shape[0] != n:
            raise ValueError(f"{name}: got {arr.shape[0]} labels for {n} samples, expected {n}")
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
                raise ValueError(f"{name}: got non-integer class labels, expected integers in [0, {n_outputs}) "
                                 "(a 1-D float y is a regression target only for a network with one "
                                 "identity output)")
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= n_outputs):
            bad = arr[(arr < 0) | (arr >= n_outputs)][0]
            raise ValueError(f"{name}: label {bad!r} is outside [0, {n_outputs}), expected class indices "
                             f"for the network's {n_outputs} outputs")
        return np.ascontiguousarray(arr, dtype=np.int64), None
    if arr.ndim != 2 or arr.shape != (n, n_outputs):
        raise ValueError(f"{name}: got shape {arr.shape}, expected class indices ({n},) "
                         f"or targets ({n}, {n_outputs})")
    check_finite(name, arr)
    targets = np.ascontiguousarray(arr, dtype=dtype)
    if loss == "ce":
        if (targets < 0).any() or not np.allclose(targets.sum(axis=1), 1.0, atol=1e-4):
            raise ValueError(f"{name}: cross-entropy targets must be probabilities (rows >= 0 summing to 1)")
    if loss == "bce" and ((targets < 0).any() or (targets > 1).any()):
        raise ValueError(f"{name}: binary cross-entropy targets must be in [0, 1] (0/1 for multi-label)")
    if output == "sigmoid" and n_outputs == 1:
        return np.ascontiguousarray(targets[:, 0] > 0.5, dtype=np.int64), targets
    return np.ascontiguousarray(targets.argmax(axis=1), dtype=np.int64), targets


def check_sample_weight(name, w, n):
    """Per-sample weights (n,) >= 0, not all 0, or None; returns (float64 array, has_weights)."""
    if w is None:
        return np.ones(1), False
    arr = np.asarray(w)
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ValueError(f"{name}: got an array of dtype {arr.dtype}, expected numbers")
    if arr.shape != (n,):
        raise ValueError(f"{name}: got shape {arr.shape}, expected ({n},), one weight per sample")
    check_finite(name, arr)
    if (arr < 0).any() or not arr.any():
        raise ValueError(f"{name}: expected weights >= 0, not all zero")
    return np.ascontiguousarray(arr, dtype=np.float64), True


def check_standardization(mean, scale, width):
    """input_mean, input_scale: both None, or both finite arrays (width,), scale > 0."""
    if (mean is None) != (scale is None):
        raise ValueError("input_mean, input_scale: got one without the other, expected both or neither")
    if mean is None:
        return None, None
    out = []
    for name, a in (("input_mean", mean), ("input_scale", scale)):
        arr = np.asarray(a)
        if arr.dtype == object or arr.dtype.kind not in "fiub":
            raise ValueError(f"{name}: got an array of dtype {arr.dtype}, expected numbers")
        if arr.shape != (width,):
            raise ValueError(f"{name}: got shape {arr.shape}, expected ({width},), one value per input")
        check_finite(name, arr)
        out.append(np.array(arr, dtype=np.float64))
    if (out[1] <= 0).any():
        raise ValueError("input_scale: expected values > 0 (use 1 for a constant feature)")
    return out[0], out[1]
