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


#: Deflate cannot expand data by more than about 1032:1: a header announcing more than that many
#: times the compressed file's size is a truncated (or hostile) file, reported without decompressing.
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20
#: After the announced data, at most this many trailing bytes are counted for the message.
_TRAILING_COUNT_LIMIT = 1 << 20


def _open(name):
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise DataError(f"missing file {name}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"cannot read {name}: it is a directory, expected an IDX file") from None
    except OSError as e:
        raise DataError(f"cannot read {name}: {e.strerror or e}; check the file's permissions") from None


def _gzip_errors(name):
    """A context turning gzip/zlib failures in the block into one-line DataErrors."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except EOFError:
            raise DataError(f"corrupt gzip data in {name}: the compressed stream ends early "
                            f"(truncated file); {_ADVICE}") from None
        except (OSError, zlib.error) as e:
            raise DataError(f"corrupt gzip data in {name}: {' '.join(str(e).split())}; {_ADVICE}") from None

    return guard()


def _read_upto(stream, n):
    """Up to n bytes from stream (fewer only at its end)."""
    parts, got = [], 0
    while got < n:
        chunk = stream.read(min(n - got, _CHUNK))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _parse_stream(stream, name, limit, compressed):
    """Read an IDX array from ``stream`` (decompressed bytes). ``limit``: the most bytes the stream
    can hold (the file's size, or MAX_DEFLATE_RATIO times it for gzip); nothing beyond the header's
    announced size is ever held in memory."""
    head = _read_upto(stream, 4)
    if len(head) < 4:
        raise DataError(f"not an IDX file: {name} has {len(head)} bytes, expected at least a "
                        f"4-byte header; {_ADVICE}")
    b0, b1, code, ndim = head[0], head[1], head[2], head[3]
    magic = int.from_bytes(head, "big")
    if b0 != 0 or b1 != 0 or code not in IDX_TYPES or ndim == 0:
        raise DataError(f"not an IDX file: {name} starts with magic number {magic} (0x{magic:08x}), "
                        f"expected 2049 for labels or 2051 for images (0x0000 then a type code such "
                        f"as 0x08 and the number of dimensions); {_ADVICE}")
    header = 4 + 4 * ndim
    rest = _read_upto(stream, header - 4)
    if len(rest) < header - 4:
        raise DataError(f"truncated IDX file {name}: {4 + len(rest)} bytes, expected at least {header} "
                        f"for the header of {ndim} dimensions; {_ADVICE}")
    dims = tuple(int.from_bytes(rest[4 * i: 4 * i + 4], "big") for i in range(ndim))
    dtype = IDX_TYPES[code]
    count = 1
    for d in dims:
        count *= d
    expected = header + count * dtype.itemsize
    shape = "x".join(str(d) for d in dims)
    if expected > limit:
        if compressed:
            raise DataError(f"corrupt gzip data in {name}: its IDX header announces a {shape} array "
                            f"of {dtype.name} ({expected} bytes), more than its "
                            f"{limit // MAX_DEFLATE_RATIO} compressed bytes can hold (a truncated or "
                            f"damaged file); {_ADVICE}")
        raise DataError(f"truncated IDX file {name}: {limit} bytes, expected {expected} "
                        f"for a {shape} array of {dtype.name}; {_ADVICE}")
    buf = bytearray(expected - header)
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = stream.readinto(view[got:got + _CHUNK])
        if not n:
            raise DataError(f"truncated IDX file {name}: {header + got} bytes, expected {expected} "
                            f"for a {shape} array of {dtype.name}; {_ADVICE}")
        got += n
    extra = 0
    while extra <= _TRAILING_COUNT_LIMIT:
        chunk = stream.read(_CHUNK)
        if not chunk:
            break
        extra += len(chunk)
    if extra:
        many = f"{extra}" if extra <= _TRAILING_COUNT_LIMIT else f"more than {_TRAILING_COUNT_LIMIT}"
        total = (f"{expected + extra}" if extra <= _TRAILING_COUNT_LIMIT
                 else f"more than {expected + _TRAILING_COUNT_LIMIT}")
        raise DataError(f"trailing bytes in IDX file {name}: {total} bytes, expected {expected} "
                        f"for a {shape} array of {dtype.name} ({many} too many); {_ADVICE}")
    try:
        arr = np.frombuffer(buf, dtype=dtype, count=count).reshape(dims)
    except ValueError:  # no element, but dimensions whose product NumPy cannot index
        raise DataError(f"impossible IDX dimensions in {name}: {shape}, expected an array NumPy can "
                        f"hold; {_ADVICE}") from None
    # Native-endian (a no-op view for single bytes; the buffer is writable).
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_bytes(path):
    """The content of ``path``, decompressed if it is gzip data (told by its magic bytes, not its name)."""
    name = _name(path)
    with _open(name) as f:
        data = f.read()
    if data[:2] == GZIP_MAGIC:
        with _gzip_errors(name):
            data = gzip.decompress(data)
    return data


def parse_idx(data, name="<bytes>"):
    """Parse IDX bytes (already decompressed) into a native-endian array; ``name`` is for messages."""
    import io
    return _parse_stream(io.BytesIO(data), name, len(data), compressed=False)


def read_idx(path):
    """Read an IDX file (gzip or raw, told by its magic bytes) into a NumPy array.

    Checks the magic number, the dimensions and the exact size (a truncated file, or one with
    trailing bytes, raises :class:`DataError` with the expected and actual byte counts). Returns a
    writable native-endian array of the stored shape, e.g. ``(10000, 28, 28)`` uint8 for images.
    Gzip data is decompressed as a stream and reading stops at the size the header announces, so
    memory is bounded by that size (itself at most 1032 times the compressed file): a gzip bomb
    costs no more than a genuine file of its announced shape.
    """
    name = _name(path)
    with _open(name) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            magic = f.read(2)
            f.seek(0)
        except OSError as e:
            raise DataError(f"cannot read {name}: {e.strerror or e}; {_ADVICE}") from None
        if magic != GZIP_MAGIC:
            try:
                return _parse_stream(f, name, size, compressed=False)
            except OSError as e:
                raise DataError(f"cannot read {name}: {e.strerror or e}; {_ADVICE}") from None
        with _gzip_errors(name), gzip.GzipFile(fileobj=f, mode="rb") as stream:
            return _parse_stream(stream, name, size * MAX_DEFLATE_RATIO, compressed=True)


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
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"no images in {name}: it holds {arr.shape[0]} images of {arr.shape[1]}x"
                        f"{arr.shape[2]} pixels, expected at least one image of at least one pixel; "
                        f"{_ADVICE}")
    return np.ascontiguousarray(arr.reshape(arr.shape[0], arr.shape[1] * arr.shape[2]))


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
