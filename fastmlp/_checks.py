"""Argument checks shared by the public API. Each raises ValueError with one line naming the
argument, what it got and what was expected."""
import numbers

import numpy as np

from ._choices import DTYPES, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, OUTPUTS  # noqa: F401 (re-exported)
#: Largest layer width: far above any network that fits in memory, small enough for int64 offsets.
MAX_UNITS = 2**31 - 1
#: Largest value of an integer option (epochs, batch size, seed...): beyond it, arithmetic on it
#: would leave int64.
MAX_INT = 2**62
#: Largest number of classes a data set's labels may imply (labels are class indices 0..K-1).
MAX_CLASSES = 100_000
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


def check_int(name, value, minimum, maximum=MAX_INT):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not minimum <= value <= maximum:
        raise ValueError(f"{name}: got {value!r}, expected an integer from {minimum} to {maximum:,}")
    return int(value)


def parse_hidden(text):
    """'100' -> [100], '256,128' -> [256, 128], 'none', '0' or '' -> []; ValueError (one line) for
    anything else: only ASCII digits ('²'.isdigit() is True), each size from 1 to MAX_UNITS."""
    t = text.strip().lower()
    if t in ("", "none", "0"):
        return []
    sizes = []
    for part in t.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or len(part) > 12 or not 1 <= int(part) <= MAX_UNITS:
            raise ValueError(f"got {text!r}, expected positive integers separated by commas, e.g. 100 or "
                             f"256,128 (or 'none' for no hidden layer), each at most {MAX_UNITS:,}")
        sizes.append(int(part))
    return sizes


def memory_bytes():
    """This machine's physical memory in bytes (None if unknown)."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_sizes(sizes, itemsize=4):
    """Layer sizes as a list of ints, each from 1 to MAX_UNITS, whose parameters fit in memory."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 2:
        raise ValueError(f"sizes: got {sizes!r}, expected a list of at least 2 layer sizes, "
                         "e.g. [784, 100, 10]")
    out = []
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 1 <= s <= MAX_UNITS:
            shown = repr(list(sizes))
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise ValueError(f"sizes: got {shown}, expected positive integers up to {MAX_UNITS:,}")
        out.append(int(s))
    n_params = sum(out[i] * out[i - 1] + out[i] for i in range(1, len(out)))
    memory = memory_bytes()
    if memory is not None and n_params * itemsize > memory:
        raise ValueError(f"sizes: {out} need {n_params:,} parameters ({n_params * itemsize / 2**30:,.1f} "
                         f"GiB), more than this machine's {memory / 2**30:,.1f} GiB of memory; expected "
                         f"a smaller network")
    return out


def check_class_labels(y, source, n_classes=None):
    """The number of classes K that int64 labels ``y`` (already >= 0) imply: max + 1, or
    ``n_classes`` when the data set says. Raises DataError naming the label when one stray label
    would decide the network's size: K above MAX_CLASSES, or a largest label more than twice the
    next one plus 16 (as in labels 0, 1, 2 and one 1000000)."""
    from .errors import DataError
    y = np.asarray(y)
    if y.size == 0:
        return n_classes or 0
    top = int(y.max())
    K = top + 1
    if n_classes is not None and K <= n_classes:
        return n_classes
    row = int(np.argmax(y == top))
    values = np.unique(y)
    second = int(values[-2]) if values.size > 1 else 0
    if K > MAX_CLASSES or top > 2 * second + 16:
        raise DataError(f"label {top} of {source} (sample {row}) would make a {K:,}-class output layer "
                        f"while the other labels go up to {second}; expected class indices 0..K-1 "
                        f"(at most {MAX_CLASSES:,} classes): fix or remap that label")
    return K


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


def _all_finite(a):
    # A sum is finite only if every term is (a NaN or an infinity makes it NaN or infinite), and it
    # needs no temporary array as large as `a` (np.isfinite(a) allocates one, slow to first touch);
    # a sum that overflows although every value is finite falls back to the exact test.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.sum(a, dtype=np.float64)):
            return True
    return bool(np.isfinite(a).all())


def check_finite(name, a, dtype=None):
    """Every value of ``a`` finite, also after a cast to ``dtype`` (float64 1e40 is inf in float32)."""
    narrowing = (dtype is not None and a.size and a.dtype.kind == "f" and np.dtype(dtype).kind == "f"
                 and a.dtype.itemsize > np.dtype(dtype).itemsize)
    if narrowing:
        # the range needs the maximum and the minimum, and they tell finiteness too (a NaN makes
        # both NaN, an infinity is one of them): two passes over a large X instead of three
        high, low = a.max(), a.min()
        finite = bool(np.isfinite(high) and np.isfinite(low))
    else:
        finite = a.dtype.kind != "f" or _all_finite(a)
    if not finite:
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s); expected finite numbers")
    if narrowing:
        limit = np.finfo(dtype).max
        if high > limit or low < -limit:
            big = np.abs(a) > limit
            first = a.flat[int(np.argmax(big.ravel()))]
            raise ValueError(f"{name}: contains {int(big.sum())} value(s) too large for {np.dtype(dtype).name} "
                             f"(e.g. {float(first):g}, above {limit:.4g}), which would become infinite; expected "
                             f"values within the network's dtype (scale the data)")


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
    check_finite(name, arr, dtype)
    return np.ascontiguousarray(arr, dtype=dtype)


def same_dtype(**arrays):
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        got = ", ".join(f"{k} {v}" for k, v in dtypes.items())
        raise ValueError(f"dtypes differ: {got}; expected all float32 or all float64")


def check_input(name, X, width, dtype=None):
    """X (n, width) or (width,) of numbers, finite; returns (array, was_1d), array kept in its dtype
    when uint8/float32/float64 (uint8 means pixel values, scaled by 1/255 later). ``dtype``: the
    network's, which the values must fit (the kernels cast to it)."""
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
    check_finite(name, arr, dtype)
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
    check_finite(name, arr, dtype)
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
