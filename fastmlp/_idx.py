"""Reader of the IDX format of MNIST and Fashion-MNIST, gzip-compressed or raw.

The format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number -- two zero bytes, a type code
(0x08 unsigned byte, 0x09 signed byte, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) and the
number of dimensions -- then one big-endian uint32 per dimension, then the data, big-endian, C order.
So labels (one dimension of uint8) have magic 2049 and images (three dimensions) 2051.

Everything that can be wrong with a file is reported as a one-line :class:`fastmlp.errors.DataError`
naming the file, what was found and what was expected.
"""

import gzip
import os
import zlib

import numpy as np

from .errors import DataError

#: IDX type code -> NumPy dtype (big-endian, as stored).
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
_ADVICE = "delete it and download it again, or put a good copy there"


def _name(path):
    return os.fspath(path)


def read_bytes(path):
    """The content of ``path``, decompressed if it is gzip data (told by its magic bytes, not its name)."""
    name = _name(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"missing file {name}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"cannot read {name}: it is a directory, expected an IDX file") from None
    except OSError as e:
        raise DataError(f"cannot read {name}: {e.strerror or e}; check the file's permissions") from None
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except EOFError:
            raise DataError(f"corrupt gzip data in {name}: the compressed stream ends early "
                            f"(truncated file); {_ADVICE}") from None
        except (OSError, zlib.error) as e:
            raise DataError(f"corrupt gzip data in {name}: {e}; {_ADVICE}") from None
    return data


def parse_idx(data, name="<bytes>"):
    """Parse IDX bytes (already decompressed) into a native-endian array; ``name`` is for messages."""
    if len(data) < 4:
        raise DataError(f"not an IDX file: {name} has {len(data)} bytes, expected at least a "
                        f"4-byte header; {_ADVICE}")
    b0, b1, code, ndim = data[0], data[1], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if b0 != 0 or b1 != 0 or code not in IDX_TYPES or ndim == 0:
        raise DataError(f"not an IDX file: {name} starts with magic number {magic} (0x{magic:08x}), "
                        f"expected 2049 for labels or 2051 for images (0x0000 then a type code such "
                        f"as 0x08 and the number of dimensions); {_ADVICE}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"truncated IDX file {name}: {len(data)} bytes, expected at least {header} "
                        f"for the header of {ndim} dimensions; {_ADVICE}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_TYPES[code]
    count = 1
    for d in dims:
        count *= d
    expected = header + count * dtype.itemsize
    shape = "x".join(str(d) for d in dims)
    if len(data) < expected:
        raise DataError(f"truncated IDX file {name}: {len(data)} bytes, expected {expected} "
                        f"for a {shape} array of {dtype.name}; {_ADVICE}")
    if len(data) > expected:
        raise DataError(f"trailing bytes in IDX file {name}: {len(data)} bytes, expected {expected} "
                        f"for a {shape} array of {dtype.name} ({len(data) - expected} too many); "
                        f"{_ADVICE}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    # A writable, native-endian, C-contiguous copy (frombuffer on bytes is read-only).
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path):
    """Read an IDX file (gzip or raw, told by its magic bytes) into a NumPy array.

    Checks the magic number, the dimensions and the exact size (a truncated file, or one with
    trailing bytes, raises :class:`DataError` with the expected and actual byte counts). Returns a
    writable native-endian array of the stored shape, e.g. ``(10000, 28, 28)`` uint8 for images.
    """
    return parse_idx(read_bytes(path), _name(path))


def read_images(path, side=None):
    """Read an IDX image file: 3 dimensions of uint8 (magic 2051). Returns ``(n, rows * cols)`` uint8.

    ``side``: if given, rows and cols must both equal it (28 for MNIST).
    """
    name = _name(path)
    arr = read_idx(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise DataError(f"not an IDX image file: {name} holds a {arr.ndim}-dimensional array of "
                        f"{arr.dtype.name}, expected 3 dimensions of uint8 (magic 2051); check that "
                        f"the images and labels files are not swapped")
    if side is not None and arr.shape[1:] != (side, side):
        raise DataError(f"wrong image size in {name}: {arr.shape[1]}x{arr.shape[2]}, expected "
                        f"{side}x{side}; {_ADVICE}")
    return np.ascontiguousarray(arr.reshape(arr.shape[0], -1))


def read_labels(path, n_classes=None):
    """Read an IDX label file: 1 dimension of uint8 (magic 2049). Returns int64 ``(n,)``.

    ``n_classes``: if given, every label must be in ``0 .. n_classes - 1``.
    """
    name = _name(path)
    arr = read_idx(path)
    if arr.ndim != 1 or arr.dtype != np.uint8:
        raise DataError(f"not an IDX label file: {name} holds a {arr.ndim}-dimensional array of "
                        f"{arr.dtype.name}, expected 1 dimension of uint8 (magic 2049); check that "
                        f"the images and labels files are not swapped")
    if n_classes is not None and arr.size and int(arr.max()) >= n_classes:
        bad = int(np.argmax(arr >= n_classes))
        raise DataError(f"label out of range in {name}: label {int(arr[bad])} at index {bad}, "
                        f"expected 0..{n_classes - 1}; {_ADVICE}")
    return arr.astype(np.int64)


def read_pair(images_path, labels_path, side=None, n_classes=None):
    """Read an images file and its labels file; check that their counts match. Returns ``(X, y)``."""
    X = read_images(images_path, side=side)
    y = read_labels(labels_path, n_classes=n_classes)
    if X.shape[0] != y.shape[0]:
        raise DataError(f"count mismatch: {_name(images_path)} has {X.shape[0]} images but "
                        f"{_name(labels_path)} has {y.shape[0]} labels, expected the same number; "
                        f"check that both files belong to the same split and data set")
    return X, y
