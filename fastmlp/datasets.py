"""Data sets: the built-in ones, MNIST and Fashion-MNIST (found locally or downloaded), and files.

Known names (:data:`KNOWN`):

``xor``
    The four points (0,0)->0, (0,1)->1, (1,0)->1, (1,1)->0; X float32 (4, 2). Both splits are the same.
``synthetic-digits`` (the default, :data:`DEFAULT`)
    An offline MNIST-shaped set that fastmlp generates itself (see :mod:`fastmlp._synthetic`):
    28x28 uint8 digits flattened to 784, 10 classes, 60,000 train and 10,000 test samples, the same
    bytes on every machine. Generated on first use (a few seconds) and cached as ``.npz``.
``mnist``, ``fashion-mnist``
    The four IDX files of each (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``; the names without ``.gz`` for
    uncompressed files are accepted too). ``split="test"`` needs only the two ``t10k`` files.

Where the IDX files (and the synthetic-digits cache) are looked for, in this order; the first
directory holding every file that is needed wins:

1. ``data_dir`` (the argument): the files directly in it -- or in a subfolder named after the data
   set, ``data_dir/mnist/``;
2. ``$FASTMLP_DATA``: a root with one subfolder per data set, ``$FASTMLP_DATA/mnist/`` -- or the
   files directly in it;
3. the user cache, ``$XDG_CACHE_HOME/fastmlp/<name>/`` (``~/.cache/fastmlp/<name>/`` when
   ``XDG_CACHE_HOME`` is unset, empty or not absolute);
4. for ``fashion-mnist`` also Debian's ``/usr/share/datasets/fashion-mnist/``
   (``apt-get install dataset-fashion-mnist``).

Files not found anywhere are downloaded (``load(..., download=True)``, the default, or
:func:`download`) into the first of: ``data_dir``, ``$FASTMLP_DATA/<name>/``, the user cache.
Mirrors are tried in order; ``$FASTMLP_MIRROR`` replaces them with one base URL (``{name}`` in it is
replaced by the data set's name, e.g. ``http://host/data/{name}/``). Each file goes into a temporary
file in the destination directory and is renamed into place only after its size and md5 match
:data:`CHECKSUMS`; a bad download is deleted.

A path instead of a name: a ``.npz`` file with arrays ``X`` and ``y`` (and, used for
``split="test"`` when present, ``X_test`` and ``y_test``; otherwise the split is ignored), a ``.csv``
file (the label in the first column, or in the column whose header is ``label``; the header line is
optional; the split is ignored), or a directory holding IDX files (``train-*`` for the train split,
``t10k-*`` for the test split).

All errors are :class:`fastmlp.errors.DataError` (or its subclasses :class:`DownloadError` and
:class:`ChecksumError`) with a one-line message saying what is wrong and what to do.
"""

import hashlib
import http.client
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import _idx, _npz
from ._files import atomic_savez, atomic_write
from .errors import ChecksumError, DataError, DownloadError, one_line

__all__ = [
    "KNOWN", "DEFAULT", "SPLITS", "CHECKSUMS", "MIRRORS", "load", "list_datasets", "download",
    "verify", "path", "read_idx", "cache_dir", "n_classes", "n_features", "info", "class_names",
]

KNOWN = ("xor", "synthetic-digits", "mnist", "fashion-mnist")
DEFAULT = "synthetic-digits"
SPLITS = ("train", "test")

#: Environment variables.
ENV_DATA = "FASTMLP_DATA"
ENV_MIRROR = "FASTMLP_MIRROR"

#: Seconds before a download gives up waiting for the server (connect or read).
TIMEOUT = 30.0
#: A download slower than this on average (bytes per second, after TIMEOUT seconds of grace) is
#: abandoned: a server that trickles a byte every few seconds never hits the per-read TIMEOUT.
MIN_RATE = 16 * 1024

#: Canonical size in bytes and md5 of each downloadable file, per data set. Downloads must match;
#: :func:`verify` checks local ``.gz`` files against it. Tests may replace entries.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train-labels-idx1-ubyte.gz": (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
        "t10k-images-idx3-ubyte.gz": (1648877, "9fb629c4189551a2d022fa330f9573f3"),
        "t10k-labels-idx1-ubyte.gz": (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte.gz": (29515, "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte.gz": (4422102, "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte.gz": (5148, "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}

#: Base URLs tried in order (``$FASTMLP_MIRROR`` replaces them).
MIRRORS = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

#: Read-only system directories searched last (their files are checked by structure, not by md5,
#: because e.g. Debian's package re-compressed the upstream files).
SYSTEM_DIRS = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}

#: File stems (without ``.gz``) of each split: (images, labels).
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: sha256 of the generated synthetic-digits splits (X bytes then y as little-endian int64), for
#: :func:`verify`. Changes only with ``fastmlp._synthetic.VERSION``.
SYNTHETIC_SHA256 = {
    "train": "d6598d8e04ee9e08652211a21f153074ef41defc86a2194d9b034e20c629303b",
    "test": "7613fcf20924c7f265f20c9e4fddc3b62f072caf8f4a2e57cb4bcfe58920ab43",
}

_INFO = {
    "xor": dict(description="the XOR truth table: 4 points in 2-D, 2 classes (train = test)",
                n_features=2, n_classes=2, n_train=4, n_test=4, source="built in"),
    "synthetic-digits": dict(
        description="MNIST-shaped synthetic hand-drawn digits, 28x28 grayscale, generated offline",
        n_features=784, n_classes=10, n_train=60000, n_test=10000,
        source="generated by fastmlp (deterministic), cached in the user cache directory"),
    "mnist": dict(description="MNIST handwritten digits, 28x28 grayscale",
                  n_features=784, n_classes=10, n_train=60000, n_test=10000,
                  source="download: " + MIRRORS["mnist"][0]),
    "fashion-mnist": dict(
        description="Fashion-MNIST clothing images (Zalando), 28x28 grayscale",
        n_features=784, n_classes=10, n_train=60000, n_test=10000,
        source="Debian package dataset-fashion-mnist, or download: " + MIRRORS["fashion-mnist"][0]),
}

_CLASS_NAMES = {
    "xor": ("0", "1"),
    "synthetic-digits": tuple(str(i) for i in range(10)),
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}

_IDX_SETS = ("mnist", "fashion-mnist")


# --------------------------------------------------------------------------- names and places

def canonical_name(name):
    """The known name meant by ``name`` (case and ``_``/``-`` do not matter), or None."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower().replace("_", "-")
    return key if key in KNOWN else None


def _known_list():
    return ", ".join(KNOWN)


def _require_known(name):
    canonical = canonical_name(name)
    if canonical is None:
        raise DataError(f"unknown dataset {name!r}: expected one of {_known_list()}; "
                        f"see `fastmlp datasets list`")
    return canonical


def _check_split(split):
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: expected 'train' or 'test'")
    return split


def cache_dir():
    """fastmlp's user cache directory: ``$XDG_CACHE_HOME/fastmlp`` or ``~/.cache/fastmlp``.

    ``XDG_CACHE_HOME`` is ignored when it is empty or not an absolute path (as the XDG spec says).
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "fastmlp"
    return Path.home() / ".cache" / "fastmlp"


def _search_dirs(name, data_dir=None):
    """Directories searched for the files of ``name``, in order (see the module docstring)."""
    dirs = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        dirs += [base, base / name]
    env = os.environ.get(ENV_DATA)
    if env:
        base = Path(env).expanduser()
        dirs += [base / name, base]
    dirs.append(cache_dir() / name)
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _target_dir(name, data_dir=None):
    """Where files of ``name`` are downloaded (or generated) to when they are found nowhere."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser() / name
    return cache_dir() / name


def _is_system_dir(name, d):
    return any(Path(d) == Path(s) for s in SYSTEM_DIRS.get(name, ()))


def _find_file(d, stem):
    """``d/stem.gz`` or ``d/stem`` (the compressed one first), or None."""
    for candidate in (Path(d) / (stem + ".gz"), Path(d) / stem):
        if candidate.is_file():
            return candidate
    return None


def _stems(splits):
    return [stem for split in splits for stem in SPLIT_FILES[split]]


def _locate(name, splits, data_dir=None):
    """The first searched directory holding every file of ``splits``, or None."""
    for d in _search_dirs(name, data_dir):
        if all(_find_file(d, stem) is not None for stem in _stems(splits)):
            return d
    return None


def _synthetic_file(split):
    from . import _synthetic

    return f"synthetic-digits-v{_synthetic.VERSION}-{split}.npz"


def path(name, data_dir=None):
    """The directory where the files of data set ``name`` are found, or would be downloaded to.

    For ``mnist``/``fashion-mnist``: the first searched directory holding all four IDX files, else
    the download target. For ``synthetic-digits``: the directory of the cached train split, else
    where it would be cached. For ``xor`` (built in, no files): None.
    """
    name = _require_known(name)
    if name == "xor":
        return None
    if name == "synthetic-digits":
        for d in _search_dirs(name, data_dir):
            if (d / _synthetic_file("train")).is_file():
                return d
        return _target_dir(name, data_dir)
    found = _locate(name, SPLITS, data_dir)
    return found if found is not None else _target_dir(name, data_dir)


# --------------------------------------------------------------------------- information

def info(name):
    """A dict describing a known data set (the keys of :func:`list_datasets`' entries)."""
    name = _require_known(name)
    return dict(name=name, **_INFO[name])


def list_datasets():
    """The known data sets: a list of dicts with keys ``name``, ``description``, ``n_features``,
    ``n_classes``, ``n_train``, ``n_test`` and ``source``."""
    return [info(name) for name in KNOWN]


def n_classes(name):
    """Number of classes of a known data set."""
    return info(name)["n_classes"]


def n_features(name):
    """Number of input features of a known data set."""
    return info(name)["n_features"]


def class_names(name):
    """Names of the classes of a known data set, indexed by label."""
    return list(_CLASS_NAMES[_require_known(name)])


# --------------------------------------------------------------------------- loading

def read_idx(path):
    """Read an IDX file (gzip or raw, told by its magic bytes) into a NumPy array.

    Checks the magic number (2049 labels, 2051 images; any IDX type is read), the dimensions and the
    exact size; raises :class:`DataError` naming the file otherwise. See :mod:`fastmlp._idx`.
    """
    return _idx.read_idx(path)


def load(name_or_path, split="train", data_dir=None, *, download=True, progress=True):
    """Load a data set by name or from a file or directory. Returns ``(X, y)``.

    ``X``: uint8 ``(n, 784)`` C-contiguous for the image sets; ``y``: int64 class indices ``(n,)``.
    For ``.npz``/``.csv`` files X keeps its type (uint8, float32, float64; other integer types and
    bool become float32; CSV is read as float32) and y becomes int64 when all its values are integers.

    ``split``: ``"train"`` or ``"test"`` (ignored for ``xor`` and for ``.csv``/``.npz`` files, except
    that an ``.npz`` holding ``X_test`` and ``y_test`` gives those for ``"test"``).
    ``data_dir``: a directory searched first and, if the files are nowhere, downloaded into.
    ``download``: if False, missing MNIST/Fashion-MNIST files raise :class:`DataError` instead of
    being downloaded. ``progress``: show a download progress bar on stderr when it is a terminal.

    A string that is a known name (case-insensitive) is the data set, even if a file of that name
    exists; pass a ``pathlib.Path`` or ``./name`` for the file.
    """
    _check_split(split)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DataError(f"expected a dataset name or a path, got {type(name_or_path).__name__}; "
                        f"use one of {_known_list()} or a .npz/.csv file or directory")
    name = canonical_name(name_or_path) if isinstance(name_or_path, str) else None
    if name is None:
        p = os.fspath(name_or_path)
        looks_like_path = (not isinstance(name_or_path, str) or os.path.exists(p)
                           or os.sep in p or (os.altsep and os.altsep in p)
                           or p.lower().endswith((".npz", ".csv")))
        if not looks_like_path:
            raise DataError(f"unknown dataset {p!r}: expected one of {_known_list()}, or the path "
                            f"of a .npz or .csv file or of a directory of IDX files")
        return _load_path(Path(p).expanduser(), split)
    if name == "xor":
        return (np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32),
                np.array([0, 1, 1, 0], dtype=np.int64))
    if name == "synthetic-digits":
        return _load_synthetic(split, data_dir, progress=progress)
    return _load_idx_set(name, split, data_dir, download, progress)


def _load_idx_set(name, split, data_dir, download_missing, progress):
    d = _locate(name, (split,), data_dir)
    if d is None:
        if not download_missing:
            target = _target_dir(name, data_dir)
            missing = next(s for s in SPLIT_FILES[split] if _find_file(target, s) is None)
            what = "four IDX files" if split == "train" else "two t10k IDX files (or all four)"
            raise DataError(f"missing file {missing}.gz for {name} in {target}: put the {what} "
                            f"there, or run `fastmlp datasets download {name}`")
        d = _download(name, (split,), data_dir, progress)
    images, labels = (_find_file(d, stem) for stem in SPLIT_FILES[split])
    return _idx.read_pair(images, labels, side=28, n_classes=_INFO[name]["n_classes"])


def _load_synthetic(split, data_dir=None, must_cache=False, progress=False):
    from . import _synthetic

    fname = _synthetic_file(split)
    n = _synthetic.SIZES[split]
    for d in _search_dirs("synthetic-digits", data_dir):
        f = d / fname
        if f.is_file():
            try:
                _, arrays = _npz.read_npz(f, ("X", "y"))
                X, y = arrays["X"], arrays["y"]
                if (X.shape == (n, 784) and X.dtype == np.uint8 and y.shape == (n,)
                        and y.dtype == np.int64 and y.min() >= 0 and y.max() <= 9):
                    return np.ascontiguousarray(X), y
            except (DataError, KeyError):  # unreadable cache: regenerate below
                pass
            warnings.warn(f"ignoring unreadable or wrong cache file {f}; generating "
                          f"synthetic-digits again", RuntimeWarning, stacklevel=3)
    target = _target_dir("synthetic-digits", data_dir)
    if progress:
        print(f"fastmlp: generating synthetic-digits ({split} split, {n:,} samples; once, cached in "
              f"{target}) ...", file=sys.stderr, flush=True)
    X, y = _synthetic.generate(split)
    try:
        atomic_savez(target / fname, X=X, y=y)
    except OSError as e:
        if must_cache:
            raise DownloadError(f"cannot cache synthetic-digits in {target}: {e.strerror or e}; pass "
                                f"another data_dir or set {ENV_DATA} to a writable directory") from None
        warnings.warn(f"could not cache synthetic-digits in {target}: {e.strerror or e}; it will "
                      f"be generated again next time (set {ENV_DATA} or XDG_CACHE_HOME to a "
                      f"writable directory)", RuntimeWarning, stacklevel=3)
    return X, y


def _load_path(p, split):
    if p.is_dir():
        stems = SPLIT_FILES[split]
        found = [_find_file(p, stem) for stem in stems]
        for stem, f in zip(stems, found):
            if f is None:
                raise DataError(f"missing file {stem}.gz (or {stem}) in {p}: put the IDX files of "
                                f"the {split} split there ({stems[0]}.gz and {stems[1]}.gz)")
        return _idx.read_pair(*found)
    if not p.exists():
        raise DataError(f"missing file {p}: no such file or directory; give a .npz or .csv file, "
                        f"a directory of IDX files, or one of {_known_list()}")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _load_npz(p, split)
    if suffix == ".csv":
        return _load_csv(p)
    raise DataError(f"unsupported file type {p.suffix or '(none)'!r} for {p}: expected a .npz or "
                    f".csv file or a directory of IDX files")


def _load_npz(p, split):
    names, _ = _npz.read_npz(p, (), expected="arrays X and y (numpy.savez(path, X=X, y=y))")
    keys = ("X", "y")
    if split == "test" and "X_test" in names and "y_test" in names:
        keys = ("X_test", "y_test")
    for k in keys:
        if k not in names:
            found = ", ".join(names) if names else "none"
            raise DataError(f"missing array {k!r} in {p}: found arrays {found}; expected X and "
                            f"y (and optionally X_test and y_test): numpy.savez(path, X=X, y=y)")
    _, arrays = _npz.read_npz(p, keys)
    return _check_xy(arrays[keys[0]], arrays[keys[1]], p, keys)


def has_test_split(p):
    """Whether the .npz file ``p`` holds arrays X_test and y_test (False if it cannot be read)."""
    try:
        names, _ = _npz.read_npz(p, ())
    except DataError:
        return False
    return "X_test" in names and "y_test" in names


def _check_xy(X, y, src, keys=("X", "y")):
    """Check and convert loaded arrays: X 2-D numeric (C-contiguous), y 1-D, same length."""
    kx, ky = keys
    if X.dtype.kind not in "biuf":
        raise DataError(f"array {kx} in {src} has dtype {X.dtype}, expected numbers (uint8, "
                        f"float32 or float64)")
    if X.ndim < 2:
        raise DataError(f"array {kx} in {src} has shape {X.shape}, expected 2 dimensions "
                        f"(samples, features)")
    if X.ndim > 2:
        X = X.reshape(X.shape[0], -1)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"array {kx} in {src} has shape {X.shape}, expected at least one sample "
                        f"and one feature")
    if X.dtype == np.uint8 or X.dtype in (np.float32, np.float64):
        pass
    else:
        X = X.astype(np.float32)
    if X.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(X)))
        if bad:
            raise DataError(f"array {kx} in {src} has {bad} NaN or infinite values, expected finite "
                            f"numbers; clean the data first")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"array {ky} in {src} has shape {y.shape}, expected one class index per "
                        f"sample, shape ({X.shape[0]},) (not one-hot)")
    if y.shape[0] != X.shape[0]:
        raise DataError(f"length mismatch in {src}: {kx} has {X.shape[0]} rows but {ky} has "
                        f"{y.shape[0]} values, expected the same number")
    if y.dtype.kind in "biu":
        if y.dtype == np.uint64 and y.size and int(y.max()) > np.iinfo(np.int64).max:
            raise DataError(f"array {ky} in {src} holds the label {int(y.max())}, beyond int64; "
                            f"expected class indices 0..K-1")
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            raise DataError(f"array {ky} in {src} has NaN or infinite values, expected class indices")
        if np.all(y == np.round(y)):
            # Beyond 2**53 a float is no exact integer, and beyond int64 the cast is undefined.
            if y.size and np.abs(y).max() > 2.0 ** 53:
                bad = int(np.argmax(np.abs(y) > 2.0 ** 53))
                raise DataError(f"{ky} in {src}: label {y[bad]:g} (sample {bad}) is too large to be a "
                                f"class index; expected class indices 0..K-1")
            y = y.astype(np.int64)
    else:
        raise DataError(f"array {ky} in {src} has dtype {y.dtype}, expected integer class indices")
    return np.ascontiguousarray(X), np.ascontiguousarray(y)


def _load_csv(p):
    try:
        header, data = _read_csv_table(p, "a label and features per row")
    except DataError:
        # labels that are text (e.g. species names): numbers everywhere but in the label column
        text = _read_csv_text_labels(p)
        if text is None:
            raise
        X, y = text
        X, _ = _check_xy(X, np.zeros(X.shape[0], dtype=np.int64), p, keys=("features", "labels"))
        return X, y
    ncol = data.shape[1]
    if header is not None and len(header) != ncol:
        raise DataError(f"CSV header of {p} has {len(header)} columns but the rows have {ncol}, "
                        f"expected the same number")
    if ncol < 2:
        raise DataError(f"CSV file {p} has {ncol} column, expected a label column and at least one "
                        f"feature column")
    label_col = 0
    if header is not None:
        lowered = [h.lower() for h in header]
        if "label" in lowered:
            label_col = lowered.index("label")
    y = data[:, label_col]
    X = np.delete(data, label_col, axis=1).astype(np.float32)
    return _check_xy(X, y, p, keys=("features", "labels"))


def _read_csv_text_labels(p):
    """(X float32, y str array) of a CSV file whose label column (the first, or the one headed
    `label`) holds text and every other field a number; None if the file is not like that."""
    import csv
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    lines = [n for n, _ in rows]
    rows = [row for _, row in rows]
    if not rows or len(rows[0]) < 2:
        return None
    first = [cell.strip() for cell in rows[0]]
    lowered = [cell.lower() for cell in first]
    label_col = lowered.index("label") if "label" in lowered else 0

    def numbers(row):
        try:
            return [float(cell) for i, cell in enumerate(row) if i != label_col]
        except ValueError:
            return None

    if "label" in lowered or numbers(first) is None:
        rows, lines = rows[1:], lines[1:]  # a header line
    width = len(first)
    X, y = [], []
    for lineno, row in zip(lines, rows):
        values = numbers(row) if len(row) == width else None
        if values is None:
            if not X or len(row) != width:
                return None
            col, cell = next((i, c) for i, c in enumerate(row) if i != label_col and not _is_number(c))
            raise DataError(f"non-numeric value {cell.strip()!r} in CSV file {p} at line {lineno}, column "
                            f"{col + 1}: expected numbers only (text is allowed in the label column)")
        X.append(values)
        y.append(row[label_col].strip())
    if not X:
        return None
    return np.array(X, dtype=np.float32), np.array(y)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv_table(p, expected):
    """(header fields or None, float64 rows) of a CSV file: numbers separated by commas, one row per
    line, an optional header line (a line with a non-numeric field). `expected` says what a row
    should hold, for the error messages."""
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {p} as CSV text: {one_line(e)}; expected UTF-8 text with "
                        f"numbers separated by commas") from None
    # The first non-blank line is a header when one of its (non-empty) fields is not a number.
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise DataError(f"empty CSV file {p}: no rows, expected {expected}")
    if "," not in lines[first]:
        for delim, label in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
            if delim in lines[first]:
                raise DataError(f"CSV file {p} separates its fields with {label}: expected commas "
                                f"({expected}, separated by ',')")
    fields = [s.strip().strip('"').strip("'").strip() for s in lines[first].split(",")]
    header = None
    for s in fields:
        try:
            float(s)
        except ValueError:
            if s:
                header = fields
                break
    body = lines[first + 1:] if header is not None else lines[first:]
    rows = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if header is not None:
        rows = rows[1:]
    if not rows:
        raise DataError(f"no data rows in CSV file {p}: only a header, expected {expected}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = np.loadtxt(body, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        raise DataError(_csv_problem(p, rows, header, expected)) from None
    return header, data


def _csv_problem(p, rows, header, expected):
    """A one-line description of the first bad row of a CSV file (line numbers from 1)."""
    width = len(header) if header is not None else None
    for lineno, line in rows:
        cells = line.split(",")
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            return (f"ragged CSV file {p}: line {lineno} has {len(cells)} fields, expected {width} "
                    f"like the first row; expected {expected}, the same number in every row")
        for col, cell in enumerate(cells, start=1):
            try:
                float(cell)
            except ValueError:
                return (f"non-numeric value {cell.strip()!r} in CSV file {p} at line {lineno}, "
                        f"column {col}: expected numbers only (a header is allowed on the first "
                        f"line only)")
    return f"cannot parse CSV file {p}: expected numbers separated by commas"


def read_features(path):
    """The rows of an .npy, .npz (X, or its only array) or .csv (header optional) file, as an array."""
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if not os.path.isfile(p):
        raise DataError(f"missing input file {p}: no such file; give an .npy, .npz or .csv file")
    if ext == ".npy":
        arr = _npz.read_npy(p)
    elif ext == ".npz":
        names, _ = _npz.read_npz(p, (), expected="an array X, or a single array (numpy.savez)")
        if "X" in names:
            key = "X"
        elif len(names) == 1:
            key = names[0]
        else:
            raise DataError(f"{p} holds arrays {', '.join(names) or '(none)'}: expected an array "
                            f"named X, or a single array")
        arr = _npz.read_npz(p, (key,))[1][key]
    elif ext == ".csv":
        arr = _read_csv_table(p, "one sample per row")[1].astype(np.float32)
    else:
        raise DataError(f"unsupported input file type {ext or '(none)'!r} for {p}: expected .npy, .npz "
                        f"or .csv")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{p} holds an array of dtype {arr.dtype}, expected numbers")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float32)
    if arr.ndim == 0:
        raise DataError(f"{p} holds a single number, expected rows of features")
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.size == 0:
        raise DataError(f"{p} holds no samples (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise DataError(f"{p} holds NaN or infinite values, expected finite numbers")
    return arr


# --------------------------------------------------------------------------- downloading

class _FetchFailure(Exception):
    def __init__(self, url, reason, checksum=False, write=False):
        super().__init__(reason)
        self.url, self.reason, self.checksum, self.write = url, reason, checksum, write


def _mirrors(name):
    env = os.environ.get(ENV_MIRROR)
    bases = [env.replace("{name}", name)] if env else list(MIRRORS[name])
    return [b if b.endswith("/") else b + "/" for b in bases]


def _fetch(url, dest, size, md5, progress):
    """Download ``url`` into ``dest`` via a temporary file in its directory; check size and md5."""
    import urllib.error
    import urllib.request

    def write(tmp):
        got = 0
        digest = hashlib.md5()
        with open(tmp, "wb") as out:
            try:
                resp = urllib.request.urlopen(url, timeout=TIMEOUT)
            except urllib.error.HTTPError as e:
                raise _FetchFailure(url, f"HTTP error {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                reason = e.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    reason = f"timed out after {TIMEOUT:g} s"
                raise _FetchFailure(url, one_line(reason)) from None
            except TimeoutError:
                raise _FetchFailure(url, f"timed out after {TIMEOUT:g} s") from None
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise _FetchFailure(url, one_line(e) or type(e).__name__) from None
            started = time.monotonic()
            deadline = TIMEOUT + size / MIN_RATE
            with resp, _progress_bar(progress, size, dest.name) as bar:
                while True:
                    if time.monotonic() - started > deadline:
                        raise _FetchFailure(url, f"too slow: {got} of {size} bytes in "
                                                 f"{time.monotonic() - started:.0f} s, expected at least "
                                                 f"{MIN_RATE // 1024} KiB/s; the partial file was deleted")
                    try:
                        # read1: what has arrived (read(n) would wait for all n bytes of a trickle)
                        chunk = resp.read1(1 << 16)
                    except TimeoutError:
                        raise _FetchFailure(url, f"timed out after {TIMEOUT:g} s") from None
                    except (OSError, http.client.HTTPException) as e:
                        raise _FetchFailure(url, f"connection broken after {got} bytes: "
                                                 f"{one_line(e) or type(e).__name__}") from None
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > size:
                        raise _FetchFailure(url, f"size mismatch: more than the expected {size} "
                                                 f"bytes; the partial file was deleted",
                                            checksum=True)
                    digest.update(chunk)
                    try:
                        out.write(chunk)
                    except OSError as e:
                        raise _FetchFailure(url, f"cannot write to {dest.parent}: "
                                                 f"{e.strerror or e}", write=True) from None
                    bar.update(len(chunk))
        if got != size:
            raise _FetchFailure(url, f"size mismatch: got {got} bytes, expected {size}; the "
                                     f"partial file was deleted", checksum=True)
        if digest.hexdigest() != md5:
            raise _FetchFailure(url, f"md5 mismatch: got {digest.hexdigest()}, expected {md5}; "
                                     f"the file was deleted", checksum=True)

    try:
        atomic_write(dest, write)
    except OSError as e:  # fastmlp.errors.OutputError (the target or its directory), or the disk
        raise _FetchFailure(url, e.strerror or one_line(e), write=True) from None
    return dest


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def _progress_bar(progress, size, label):
    if progress and sys.stderr is not None and sys.stderr.isatty():
        import click

        return click.progressbar(length=size, label=label, file=sys.stderr)
    return _NoBar()


def _download_file(name, filename, dest_dir, progress):
    """Fetch one file of ``name`` into ``dest_dir`` from the first mirror that gives a good copy."""
    size, md5 = CHECKSUMS[name][filename]
    dest = dest_dir / filename
    failures = []
    for base in _mirrors(name):
        url = base + filename
        if progress:
            print(f"fastmlp: downloading {url} to {dest_dir}", file=sys.stderr)
        try:
            return _fetch(url, dest, size, md5, progress)
        except _FetchFailure as f:
            failures.append(f)
            if f.write:
                break
    where = "; ".join(f"{f.url}: {f.reason}" for f in failures)
    if failures[-1].write:
        raise DownloadError(f"could not download {filename} for {name}: {where}; pass another "
                            f"data_dir or set ${ENV_DATA} to a writable directory")
    if all(f.checksum for f in failures):
        raise ChecksumError(f"bad download of {filename} for {name} from {where}; try again later, "
                            f"or set ${ENV_MIRROR} to another mirror, or put the files in {dest_dir}")
    raise DownloadError(f"could not download {filename} for {name} from {where}; check the network "
                        f"(or ${ENV_MIRROR}), or put the files in {dest_dir}")


def _download(name, splits, data_dir, progress):
    """Make the files of ``splits`` of an IDX set present in the target directory; return it."""
    target = _target_dir(name, data_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create directory {target} for {name}: {e.strerror or e}; pass "
                            f"another data_dir or set ${ENV_DATA} to a writable directory") from None
    for stem in _stems(splits):
        if _find_file(target, stem) is None:
            _download_file(name, stem + ".gz", target, progress)
    return target


def download(name, data_dir=None, progress=True):
    """Make a known data set available locally; return the directory holding its files.

    ``mnist``/``fashion-mnist``: if all four IDX files are already in a searched directory (see the
    module docstring), nothing is fetched and that directory is returned. Otherwise the missing
    files are downloaded into ``data_dir``, else ``$FASTMLP_DATA/<name>/``, else the user cache,
    each checked against :data:`CHECKSUMS` before it is renamed into place.
    ``synthetic-digits``: generated and cached (both splits). ``xor``: built in; returns None.
    Raises :class:`DownloadError` (no network, HTTP error, unwritable directory) or
    :class:`ChecksumError` (a download of the wrong size or md5, which is deleted).
    """
    name = _require_known(name)
    if name == "xor":
        return None
    if name == "synthetic-digits":
        for split in SPLITS:
            _load_synthetic(split, data_dir, must_cache=True, progress=progress)
        return path(name, data_dir)
    found = _locate(name, SPLITS, data_dir)
    if found is not None:
        return found
    return _download(name, SPLITS, data_dir, progress)


# --------------------------------------------------------------------------- verifying

def _md5_file(p):
    h = hashlib.md5()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(name, data_dir=None):
    """Check the local files of a known data set; return ``[(filename, status), ...]``.

    ``mnist``/``fashion-mnist``: in the directory :func:`path` names, a ``.gz`` file must have the
    canonical size and md5 (:class:`ChecksumError` otherwise); uncompressed files, and files in a
    system directory such as Debian's (re-compressed upstream files), are parsed and checked by
    structure (magic, 28x28, labels 0..9, counts of images and labels equal; :class:`DataError`).
    Missing files raise :class:`DataError` after the present ones were checked.
    ``synthetic-digits``: the cached splits must have the expected sha256 (a status says when a split
    is not generated yet). ``xor``: built in.
    """
    name = _require_known(name)
    if name == "xor":
        return [("xor", "built in: nothing to verify")]
    if name == "synthetic-digits":
        return _verify_synthetic(data_dir)
    d = path(name, data_dir)
    results, missing = [], []
    system = _is_system_dir(name, d)
    classes = _INFO[name]["n_classes"]
    for split in SPLITS:
        counts = []
        for stem in SPLIT_FILES[split]:
            f = _find_file(d, stem)
            if f is None:
                missing.append(stem + ".gz")
                continue
            if f.suffix == ".gz" and not system:
                size, md5 = CHECKSUMS[name][f.name]
                actual_size = f.stat().st_size
                actual_md5 = _md5_file(f)
                if (actual_size, actual_md5) != (size, md5):
                    raise ChecksumError(
                        f"checksum mismatch for {f} ({name}): {actual_size} bytes with md5 "
                        f"{actual_md5}, expected {size} bytes with md5 {md5}; delete it and run "
                        f"`fastmlp datasets download {name}` (uncompressed files are checked by "
                        f"structure instead)")
                status = f"ok: {size} bytes, md5 {md5}"
            else:
                why = "system copy" if system else "uncompressed"
                status = f"ok: structure checked ({why}; md5 not compared)"
            if "images" in stem:
                arr = _idx.read_images(f, side=28)
            else:
                arr = _idx.read_labels(f, n_classes=classes)
            counts.append((f, arr.shape[0]))
            results.append((f.name, f"{status}; {arr.shape[0]} {stem.split('-')[1]}"))
        if len(counts) == 2 and counts[0][1] != counts[1][1]:
            (fi, ni), (fl, nl) = counts
            raise DataError(f"count mismatch: {fi} has {ni} images but {fl} has {nl} labels, "
                            f"expected the same number; delete the wrong one and run "
                            f"`fastmlp datasets download {name}`")
    if missing:
        raise DataError(f"missing file {missing[0]} for {name} in {d} "
                        f"({len(missing)} of 4 missing: {', '.join(missing)}): put the four IDX "
                        f"files there, or run `fastmlp datasets download {name}`")
    return results


def _synthetic_sha256(X, y):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return h.hexdigest()


def _verify_synthetic(data_dir=None):
    results = []
    for split in SPLITS:
        fname = _synthetic_file(split)
        f = next((d / fname for d in _search_dirs("synthetic-digits", data_dir)
                  if (d / fname).is_file()), None)
        if f is None:
            results.append((fname, "not generated yet: generated and cached on first use"))
            continue
        try:
            _, arrays = _npz.read_npz(f, ("X", "y"))
            digest = _synthetic_sha256(arrays["X"], arrays["y"])
        except (DataError, KeyError, ValueError) as e:
            raise DataError(f"cannot read cache file {f}: {one_line(e)}; delete it (it is "
                            f"generated again on next use)") from None
        expected = SYNTHETIC_SHA256[split]
        if expected is not None and digest != expected:
            raise ChecksumError(f"checksum mismatch for {f}: sha256 {digest}, expected {expected}; "
                                f"delete it (it is generated again on next use)")
        results.append((fname, f"ok: sha256 {digest}"))
    return results
