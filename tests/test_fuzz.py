"""Property-based fuzzing (hypothesis) of every reader of untrusted files: IDX (raw and gzip), .npz
and .npy, CSV, and checkpoints (their JSON metadata). Whatever the bytes, a reader returns arrays or
raises the project's own one-line error (DataError, CheckpointError), never anything else, and its
memory stays bounded (tracemalloc sees NumPy's allocations too) whatever sizes the headers announce."""
import gzip
import io
import json
import math
import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastmlp import _idx, _npz, datasets
from fastmlp.errors import CheckpointError, DataError, FastMLPError
from fastmlp.model import MLP
from fastmlp.training import Trainer

# FASTMLP_FUZZ_EXAMPLES=2000 for a deeper run than CI's.
FUZZ = settings(max_examples=int(os.environ.get("FASTMLP_FUZZ_EXAMPLES", "120")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
#: Every file here is under 64 KB: a reader may hold what the file announces within that (for
#: gzip at most 1032 times it), never what a header claims beyond it.
MEMORY_LIMIT = 80 * 2**20


def bounded(call, errors):
    """Run call(); it returns, or raises one of ``errors`` with a one-line message; peak traced
    memory stays under MEMORY_LIMIT. Returns the result or None."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except errors as e:
            message = str(e)
            assert message and "\n" not in message, repr(message)
            result = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"peak {peak} bytes"
    return result


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def mutate(data, flips, cut):
    """``data`` with bytes XORed at (relative position, mask) pairs and cut to a fraction."""
    b = bytearray(data)
    for pos, mask in flips:
        if b:
            b[int(pos * (len(b) - 1))] ^= mask
    if cut is not None:
        b = b[:int(cut * len(b))]
    return bytes(b)


flips = st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=4)
cuts = st.one_of(st.none(), st.floats(0, 1))


# -- IDX ---------------------------------------------------------------------------------------------

@st.composite
def idx_files(draw):
    code = draw(st.one_of(st.sampled_from(sorted(_idx.IDX_TYPES)), st.integers(0, 255)))
    ndim = draw(st.integers(0, 4))
    dims = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)),
                         min_size=ndim, max_size=ndim))
    magic = draw(st.one_of(st.just(b"\0\0"), st.binary(min_size=2, max_size=2)))
    header = magic + bytes([code, ndim]) + b"".join(struct.pack(">I", d) for d in dims)
    count = math.prod(dims) if dims else 0
    itemsize = _idx.IDX_TYPES[code].itemsize if code in _idx.IDX_TYPES else 1
    exact = count * itemsize if count * itemsize <= 4096 else 0
    body_len = draw(st.one_of(st.just(exact), st.integers(0, 600)))
    body = draw(st.binary(min_size=min(body_len, 600), max_size=min(body_len, 600)))
    if body_len > 600:
        body = body + bytes(body_len - 600)
    data = header + body
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
    return mutate(data, draw(flips), draw(cuts))


@FUZZ
@given(data=st.one_of(idx_files(), st.binary(max_size=300)))
def test_idx_reader(scratch, data):
    f = scratch / "fuzz-idx3-ubyte"
    f.write_bytes(data)
    arr = bounded(lambda: _idx.read_idx(f), DataError)
    if arr is not None:
        assert isinstance(arr, np.ndarray) and arr.flags.writeable
    for read in (lambda: _idx.read_images(f), lambda: _idx.read_labels(f, n_classes=10)):
        out = bounded(read, DataError)
        assert out is None or (isinstance(out, np.ndarray) and out.size > 0 or out.ndim == 1)


# -- .npz and .npy -----------------------------------------------------------------------------------

arrays = st.one_of(
    st.builds(lambda n, d: np.arange(n * d, dtype=np.float32).reshape(n, d), st.integers(0, 4), st.integers(0, 4)),
    st.builds(lambda n: np.arange(n) % 3, st.integers(0, 5)),
    st.builds(lambda n: np.full(n, 1e300), st.integers(0, 3)),
    st.just(np.array("text")),
    st.just(np.zeros((2, 2), dtype=np.uint8)),
)


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@st.composite
def npy_headers(draw):
    """A .npy header with arbitrary (often absurd) shape and dtype, then a few bytes."""
    shape = tuple(draw(st.lists(st.one_of(st.integers(0, 4), st.integers(-2, 10**15)), max_size=3)))
    descr = draw(st.sampled_from(["<f8", "<f4", "|u1", "<i8", "|O", "<U3", "|V0", "|S0", "<c16", "x"]))
    order = draw(st.sampled_from(["False", "True", "1", "'x'"]))
    text = f"{{'descr': {descr!r}, 'fortran_order': {order}, 'shape': {shape!r}, }}"
    header = text.encode().ljust(117) + b"\n"
    return (np.lib.format.magic(draw(st.sampled_from([1, 2, 3, 9])), 0)
            + struct.pack("<H", len(header)) + header + draw(st.binary(max_size=64)))


@st.composite
def npz_files(draw):
    kind = draw(st.sampled_from(["savez", "compressed", "members"]))
    buf = io.BytesIO()
    if kind == "members":
        with zipfile.ZipFile(buf, "w", compression=draw(st.sampled_from([zipfile.ZIP_STORED,
                                                                         zipfile.ZIP_DEFLATED]))) as z:
            for name in draw(st.lists(st.sampled_from(["X.npy", "y.npy", "params.npy", "meta.npy", "junk"]),
                                      max_size=4, unique=True)):
                payload = draw(st.one_of(npy_headers(), st.binary(max_size=64),
                                         st.builds(npy_bytes, arrays)))
                z.writestr(name, payload)
    else:
        members = draw(st.dictionaries(st.sampled_from(["X", "y", "X_test", "y_test", "params"]), arrays,
                                       max_size=4))
        (np.savez_compressed if kind == "compressed" else np.savez)(buf, **members)
    return mutate(buf.getvalue(), draw(flips), draw(cuts))


@FUZZ
@given(data=st.one_of(npz_files(), st.binary(max_size=200), npy_headers()))
def test_npz_and_npy_readers(scratch, data):
    f = scratch / "fuzz.npz"
    f.write_bytes(data)
    for split in ("train", "test"):
        out = bounded(lambda split=split: datasets.load(f, split=split), DataError)
        if out is not None:
            X, y = out
            assert X.ndim == 2 and X.shape[0] == y.shape[0] and X.size
            assert X.dtype in (np.uint8, np.float32, np.float64)
    bounded(lambda: MLP.load(f), CheckpointError)
    bounded(lambda: _npz.read_npz(f), DataError)
    g = scratch / "fuzz.npy"
    g.write_bytes(data)
    arr = bounded(lambda: _npz.read_npy(g), DataError)
    assert arr is None or (isinstance(arr, np.ndarray) and not arr.dtype.hasobject)


# -- CSV ---------------------------------------------------------------------------------------------

csv_text = st.text(alphabet="0123456789.,-+eE;\t \n\r\"'labelnifx", max_size=200)


@st.composite
def csv_tables(draw):
    """Mostly well-formed tables with hostile cells (huge, NaN, negative, fractional labels)."""
    cols = draw(st.integers(1, 4))
    cell = st.one_of(st.integers(-3, 12).map(str), st.sampled_from(["1e30", "5e18", "nan", "inf", "-0", "1.5",
                                                                    "", "x", "1000000", "1e400"]))
    rows = draw(st.lists(st.lists(cell, min_size=cols, max_size=cols), min_size=0, max_size=6))
    head = draw(st.sampled_from(["", "label,a,b,c\n", "a,b\n"]))
    return head + "\n".join(",".join(r) for r in rows)


@FUZZ
@given(text=st.one_of(csv_text, csv_tables()), raw=st.one_of(st.none(), st.binary(max_size=60)))
def test_csv_reader(scratch, text, raw):
    f = scratch / "fuzz.csv"
    if raw is None:
        f.write_text(text, encoding="utf-8")
    else:
        f.write_bytes(raw)
    out = bounded(lambda: datasets.load(f), DataError)
    if out is not None:
        X, y = out
        assert X.dtype == np.float32 and np.isfinite(X).all() and X.shape[0] == y.shape[0]
        if y.dtype == np.int64 and y.size and y.min() >= 0:
            from fastmlp import _checks
            K = bounded(lambda: _checks.check_class_labels(y, "f"), DataError)
            assert K is None or K <= _checks.MAX_CLASSES


# -- checkpoints -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    t = Trainer(MLP([3, 4, 2], seed=0), optimizer="momentum", batch_size=8, threads=1)
    t.fit(X, y, 1, verbose=False)
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    t.save_checkpoint(path, extra_meta={"run": {"dataset": "blobs", "epochs": 3, "val_split": 0.0,
                                                "threads": 1, "input_dtype": "float32"}})
    with np.load(path) as z:
        return X, y, {k: z[k] for k in z.files}


def _leaves(d, prefix=()):
    for key, value in d.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _leaves(value, prefix + (key,))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


@FUZZ
@given(data=st.data())
def test_checkpoint_metadata(scratch, checkpoint, data):
    X, y, arrays = checkpoint
    meta = json.loads(str(arrays["meta"]))
    paths = sorted(_leaves(meta))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = meta
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if data.draw(st.booleans()) and path[-1] in parent:
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values)
    f = scratch / "fuzz-ckpt.npz"
    np.savez(f, **dict(arrays, meta=np.array(json.dumps(meta))))
    bounded(lambda: MLP.load(f), CheckpointError)
    trainer = bounded(lambda: Trainer.from_checkpoint(f, threads=1)[0], CheckpointError)
    if trainer is not None:
        # What validation let through trains, or fails with the project's own one-line error.
        bounded(lambda: trainer.fit(X, y, trainer.epoch + 1, verbose=False), FastMLPError)
