"""The one reader of .npy and .npz files: never unpickles, never returns anything but arrays, and
reads no more than a file's own bytes can hold.

``numpy.load`` returns the raw ``bytes`` of an .npz member that is not a valid .npy, calls a text
file "pickled data", reads a truncated .npy into a wrongly shaped array and allocates whatever a
header announces. Here every problem is one line of the caller's error class (``DataError`` for
data, ``CheckpointError`` for models) naming the file and what was expected:

* the file must be a zip archive (.npz) or start with the .npy magic (.npy), and is told by its
  bytes, not its name;
* members must be .npy arrays (version 1 or 2 headers) of a dtype without Python objects;
* an array's announced size must fit in the bytes its member holds, and a member may announce no
  more bytes than deflate can produce from its compressed size (1032:1), so memory stays bounded by
  a small multiple of the file's size whatever its headers claim;
* only the stored and deflate methods of numpy.savez / savez_compressed are read.
"""
import io
import os
import zipfile

import numpy as np

from .errors import DataError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: Deflate cannot expand data by more than about 1032:1.
MAX_DEFLATE_RATIO = 1032
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_CHUNK = 1 << 20
#: numpy's own limit on the length of a .npy header.
MAX_HEADER = 10000


def _one_line(e):
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _describe_start(head):
    """What a file that is neither .npz nor .npy starts with, for messages."""
    if not head:
        return "is empty"
    if head[:2] == b"\x1f\x8b":
        return "is gzip data"
    if head[:1] == b"\x80":
        return "looks like a Python pickle"
    try:
        text = head.decode("utf-8")
        if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
            return f"is text (starts with {text[:16]!r})"
    except UnicodeDecodeError:
        pass
    return f"starts with the bytes {head[:8]!r}"


def _open(path, error):
    name = os.fspath(path)
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise error(f"missing file: {name} does not exist; check the path") from None
    except IsADirectoryError:
        raise error(f"cannot read {name}: it is a directory, expected a file") from None
    except OSError as e:
        raise error(f"cannot read {name}: {e.strerror or e}; check the file's permissions") from None


def _read_array(f, size, label, error):
    """The .npy array in the stream ``f`` holding ``size`` bytes; ``label`` names it in messages."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError:
        raise error(f"{label} is not a NumPy array (no .npy header); expected arrays written by "
                    f"numpy.save or numpy.savez") from None
    if version not in ((1, 0), (2, 0)):
        raise error(f"{label} has .npy format version {version[0]}.{version[1]}, expected 1.0 or "
                    f"2.0 (numpy.save of a plain numeric array)")
    # The header's length first: numpy would read (and allocate) whatever it says before its own
    # size check.
    width = 2 if version == (1, 0) else 4
    length_bytes = f.read(width)
    length = int.from_bytes(length_bytes, "little") if len(length_bytes) == width else -1
    if not 0 <= length <= MAX_HEADER:
        raise error(f"{label} has a damaged .npy header (length {length}, expected 0 to "
                    f"{MAX_HEADER} bytes); write the file again")
    header = f.read(length)
    try:
        header_stream = io.BytesIO(length_bytes + header)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(header_stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(header_stream)
    except Exception as e:  # a damaged header: ValueError, SyntaxError, UnicodeDecodeError...
        raise error(f"{label} has a damaged .npy header ({_one_line(e)}); write the file again") from None
    if dtype.hasobject:
        raise error(f"{label} is an object array; fastmlp never loads object arrays "
                    f"(allow_pickle=False: that would unpickle); expected a plain numeric array")
    if dtype.itemsize == 0 or any(d < 0 for d in shape):
        raise error(f"{label} announces shape {shape} of dtype {dtype}, expected a non-empty dtype "
                    f"and non-negative dimensions")
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    available = size - f.tell()
    if nbytes > available:
        raise error(f"truncated array: {label} announces shape {shape} of {dtype} ({nbytes} bytes) "
                    f"but holds {max(available, 0)} bytes; write the file again")
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        n = f.readinto(view[got:got + _CHUNK])
        if not n:
            raise error(f"truncated array: {label} ends after {got} of its {nbytes} bytes; write "
                        f"the file again")
        got += n
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npy(path, error=DataError):
    """The array of the .npy file at ``path`` (writable). Raises ``error`` with one line."""
    name = os.fspath(path)
    with _open(path, error) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            f.seek(0)
        except OSError as e:
            raise error(f"cannot read {name}: {e.strerror or e}") from None
        if not head.startswith(NPY_MAGIC):
            what = "is a .npz archive" if head[:4] in ZIP_MAGICS else _describe_start(head)
            raise error(f"cannot read {name} as .npy: it {what}, expected an array written by numpy.save")
        try:
            return _read_array(f, size, f"{name}", error)
        except error:
            raise
        except (OSError, ValueError, EOFError) as e:
            raise error(f"cannot read {name}: {_one_line(e)}; write the file again") from None


def read_npz(path, keys=None, error=DataError, expected="a .npz file written by numpy.savez"):
    """``(names, arrays)``: the member names of the .npz at ``path`` (``.npy`` stripped, as
    ``numpy.load`` names them) and ``{name: array}`` of those in ``keys`` (all when None) that it
    holds. ``expected`` ends the message when the file is not a .npz. Raises ``error`` (one line)."""
    name = os.fspath(path)
    with _open(path, error) as f:
        try:
            head = f.read(8)
            f.seek(0)
        except OSError as e:
            raise error(f"cannot read {name}: {e.strerror or e}") from None
        if head[:4] not in ZIP_MAGICS:
            what = ("holds a single array (a .npy file)" if head.startswith(NPY_MAGIC)
                    else _describe_start(head))
            raise error(f"cannot read {name} as .npz: it {what}, expected {expected}")
        try:
            with zipfile.ZipFile(f) as zf:
                members = {}
                for info in zf.infolist():
                    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    members.setdefault(key, info)
                names = list(members)
                arrays = {}
                for key in (names if keys is None else [k for k in keys if k in members]):
                    arrays[key] = _read_member(zf, members[key], name, key, error)
                return names, arrays
        except error:
            raise
        except Exception as e:  # BadZipFile, zlib.error, EOFError, OSError, NotImplementedError...
            raise error(f"cannot read {name} as .npz: damaged archive ({_one_line(e)}); expected "
                        f"{expected}") from None


def _read_member(zf, info, name, key, error):
    label = f"array {key!r} in {name}"
    if not info.filename.endswith(".npy"):
        raise error(f"{label} is not a NumPy array (member {info.filename!r} is not a .npy); "
                    f"expected arrays written by numpy.savez")
    if info.compress_type not in _METHODS:
        raise error(f"{label} uses zip compression method {info.compress_type}, expected stored or "
                    f"deflate (numpy.savez or numpy.savez_compressed)")
    if info.flag_bits & 0x1:
        raise error(f"{label} is encrypted; expected a plain archive written by numpy.savez")
    limit = info.compress_size * (MAX_DEFLATE_RATIO if info.compress_type == zipfile.ZIP_DEFLATED else 1)
    if info.file_size > limit + 64:
        raise error(f"damaged .npz file {name}: {label} claims {info.file_size} bytes from "
                    f"{info.compress_size} stored bytes, more than its compression can produce; "
                    f"write it again")
    with zf.open(info) as member:
        return _read_array(member, info.file_size, label, error)
