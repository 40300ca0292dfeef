"""The run policy: what `fastmlp train`, `evaluate` and `predict` decide about data and models,
as library functions that Python code can call too.

    from fastmlp import run
    X, y = run.load_labelled("points.npz")              # features and int64 class labels
    run.check_fits(net, X, y, "points.npz", "the network")
"""
import os

import numpy as np

from . import datasets
from .errors import DataError


def arch(sizes):
    return "-".join(map(str, sizes))


def dataset_label(data):
    """A known name in its canonical spelling, or the absolute path of a file or directory."""
    name = datasets.canonical_name(data)
    return name if name else os.path.abspath(os.path.expanduser(data))


def has_test_split(data):
    """Whether `data` (a known name or a path) has a test split of its own."""
    if datasets.canonical_name(data):
        return True
    p = os.path.expanduser(data)
    if os.path.isdir(p):
        names = os.listdir(p)
        return (any(n.startswith("t10k-images") for n in names)
                and any(n.startswith("t10k-labels") for n in names))
    if p.lower().endswith(".npz") and os.path.isfile(p):
        try:
            with np.load(p, allow_pickle=False) as z:
                files = getattr(z, "files", [])
                return "X_test" in files and "y_test" in files
        except Exception:
            return False
    return False


def class_labels(y, source):
    """y as int64 class indices >= 0, or DataError."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.array_equal(y, np.round(y)):
            raise DataError(f"labels of {source} are not integers: expected class indices 0, 1, 2...")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise DataError(f"labels of {source} have dtype {y.dtype}, expected integer class indices")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise DataError(f"labels of {source} include {int(y.min())}: expected class indices >= 0")
    return y


def check_fits(net, X, y, source, model_name):
    """The data's width and labels must fit the network (one-line DataError otherwise)."""
    if X.ndim != 2 or X.shape[1] != net.sizes[0]:
        width = X.shape[1] if X.ndim == 2 else X.shape
        raise DataError(f"{source} has {width} features per sample but {model_name} takes "
                        f"{net.sizes[0]} inputs (layers {arch(net.sizes)}); use data of the same "
                        f"shape as the training data")
    if y is not None and y.size:
        top = int(y.max())
        K = net.sizes[-1]
        if top >= K:
            raise DataError(f"labels of {source} go up to {top} but {model_name} has {K} outputs "
                            f"(classes 0-{K - 1}); use a data set with at most {K} classes, or train "
                            f"a new network on it (without --resume)")


def match_input(X, trained_dtype):
    """Give X the representation the network was trained on: uint8 pixels are scaled by 1/255 in the
    kernels, floats are used as they are. An integer array of pixel values for a network trained on
    uint8 becomes uint8; uint8 data for a network trained on floats becomes float32 (unscaled)."""
    if trained_dtype == "uint8" and X.dtype != np.uint8:
        if X.dtype.kind in "iub" or (X.dtype.kind == "f" and np.array_equal(X, np.round(X))):
            if X.size == 0 or (X.min() >= 0 and X.max() <= 255):
                return X.astype(np.uint8)
    elif trained_dtype in ("float32", "float64") and X.dtype == np.uint8:
        return X.astype(np.float32)
    return X


def meta_section(meta, key):
    """meta[key] if it is a dict (a checkpoint's "run" or "training" record), else {}."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def class_names(dataset):
    """The class names of a known data set, when they say more than the class index; else None."""
    name = datasets.canonical_name(dataset) if dataset else None
    if name:
        names = datasets.class_names(name)
        if any(n != str(i) for i, n in enumerate(names)):
            return names
    return None
