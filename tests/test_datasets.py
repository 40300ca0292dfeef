"""Tests of fastmlp.datasets: the IDX reader, the built-in sets, lookup order, .npz/.csv files.

Nothing here touches the network: every test runs with $FASTMLP_MIRROR and the mirror table pointing
at a closed port on 127.0.0.1, and with $XDG_CACHE_HOME and $HOME in a temporary directory.
Download tests are in test_download.py.
"""

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_helpers import isolate
from fastmlp import _idx, _synthetic, datasets
from fastmlp.errors import ChecksumError, DataError

REPO = Path(__file__).resolve().parents[1]
IMAGES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
LABELS = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, home or network: everything under tmp_path, mirrors on a closed local port."""
    isolate(tmp_path, monkeypatch)
    return tmp_path


# --------------------------------------------------------------------------- IDX helpers

def idx_bytes(arr, code=0x08):
    """IDX encoding of ``arr`` written independently of the reader: magic, big-endian dims, data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + np.ascontiguousarray(arr, dtype=dtype).tobytes()


def write_idx(path, arr, gz=True, code=0x08):
    data = idx_bytes(arr, code)
    Path(path).write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return Path(path)


def small_set(n, seed=0, label_offset=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = ((np.arange(n) + label_offset) % 10).astype(np.uint8)
    return images, labels


def write_set(d, n_train=20, n_test=10, seed=0, label_offset=0, gz=True, splits=("train", "test")):
    """Write small IDX files of both splits into ``d``; return {split: (images, labels)}."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 1)):
        if split not in splits:
            continue
        images, labels = small_set(n, s, label_offset)
        stem_i, stem_l = datasets.SPLIT_FILES[split]
        suffix = ".gz" if gz else ""
        write_idx(d / (stem_i + suffix), images, gz)
        write_idx(d / (stem_l + suffix), labels, gz)
        out[split] = (images, labels)
    return out


# --------------------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_images_and_labels(tmp_path, gz):
    images, labels = small_set(7)
    fi = write_idx(tmp_path / "img", images, gz)
    fl = write_idx(tmp_path / "lab", labels, gz)
    got = datasets.read_idx(fi)
    assert got.dtype == np.uint8 and got.shape == (7, 28, 28)
    np.testing.assert_array_equal(got, images)
    got[0, 0, 0] = 1  # writable
    np.testing.assert_array_equal(datasets.read_idx(fl), labels)
    X, y = _idx.read_pair(fi, fl, side=28, n_classes=10)
    assert X.shape == (7, 784) and X.dtype == np.uint8 and X.flags.c_contiguous
    assert y.dtype == np.int64
    np.testing.assert_array_equal(X, images.reshape(7, -1))
    np.testing.assert_array_equal(y, labels)


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path):
    images, _ = small_set(3)
    raw_named_gz = tmp_path / "raw.gz"
    raw_named_gz.write_bytes(idx_bytes(images))
    gz_named_raw = tmp_path / "compressed-ubyte"
    gz_named_raw.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(datasets.read_idx(raw_named_gz), images)
    np.testing.assert_array_equal(datasets.read_idx(gz_named_raw), images)


@pytest.mark.parametrize("code,dtype", [(0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
                                        (0x0D, np.float32), (0x0E, np.float64)])
def test_read_idx_other_types_big_endian(tmp_path, code, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    got = datasets.read_idx(write_idx(tmp_path / "a", arr, gz=False, code=code))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_wrong_magic(tmp_path):
    f = tmp_path / "bad"
    f.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(DataError, match=r"not an IDX file: .*bad starts with magic number 305419896 "
                                        r"\(0x12345678\), expected 2049 for labels or 2051"):
        datasets.read_idx(f)
    f.write_bytes(b"\x00\x00\x08\x00")  # zero dimensions
    with pytest.raises(DataError, match="magic number 2048"):
        datasets.read_idx(f)
    f.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="has 2 bytes, expected at least a 4-byte header"):
        datasets.read_idx(f)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file(tmp_path, gz):
    images, _ = small_set(5)
    data = idx_bytes(images)
    assert len(data) == 16 + 5 * 784
    f = tmp_path / "t10k-images-idx3-ubyte"
    cut = data[:-10]
    f.write_bytes(gzip.compress(cut) if gz else cut)
    with pytest.raises(DataError, match=r"truncated IDX file .*t10k-images-idx3-ubyte: 3926 bytes, "
                                        r"expected 3936 for a 5x28x28 array of uint8"):
        datasets.read_idx(f)
    f.write_bytes(data[:10])  # cut inside the header
    with pytest.raises(DataError, match=r"truncated IDX file .*: 10 bytes, expected at least 16"):
        datasets.read_idx(f)


def test_trailing_bytes(tmp_path):
    _, labels = small_set(12)
    f = tmp_path / "train-labels-idx1-ubyte.gz"
    f.write_bytes(gzip.compress(idx_bytes(labels) + b"xyz"))
    with pytest.raises(DataError, match=r"trailing bytes in IDX file .*train-labels-idx1-ubyte.gz: "
                                        r"23 bytes, expected 20 .*\(3 too many\)"):
        datasets.read_idx(f)


def test_corrupt_gzip(tmp_path):
    images, _ = small_set(20)
    gz = bytearray(gzip.compress(idx_bytes(images)))
    f = tmp_path / "x.gz"
    f.write_bytes(bytes(gz[: len(gz) // 2]))
    with pytest.raises(DataError, match=r"corrupt gzip data in .*x.gz: .*truncated file"):
        datasets.read_idx(f)
    for i in range(20, 60):
        gz[i] ^= 0xFF
    f.write_bytes(bytes(gz))
    with pytest.raises(DataError, match=r"corrupt gzip data in .*x.gz: "):
        datasets.read_idx(f)


def test_count_mismatch_and_swapped_files(tmp_path):
    d = tmp_path / "d"
    write_set(d)
    _, labels = small_set(21)
    write_idx(d / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"count mismatch: .*train-images-idx3-ubyte.gz has 20 images "
                                        r"but .*train-labels-idx1-ubyte.gz has 21 labels"):
        datasets.load(d)
    images, labels = small_set(10)
    write_idx(d / "t10k-images-idx3-ubyte.gz", labels)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", images)
    with pytest.raises(DataError, match=r"not an IDX image file: .* 1-dimensional array of uint8, "
                                        r"expected 3 dimensions"):
        datasets.load(d, split="test")


def test_label_out_of_range_for_known_sets(tmp_path):
    d = tmp_path / "mnist"
    write_set(d)
    labels = np.array([3] * 19 + [10], dtype=np.uint8)
    write_idx(d / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"label out of range in .*train-labels-idx1-ubyte.gz: "
                                        r"label 10 at index 19, expected 0..9"):
        datasets.load("mnist", data_dir=d, download=False)
    # A plain directory of IDX files is not held to ten classes.
    X, y = datasets.load(d)
    assert y[-1] == 10


def test_wrong_image_size_for_known_sets(tmp_path):
    d = tmp_path / "mnist"
    write_set(d)
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((20, 14, 14), np.uint8))
    with pytest.raises(DataError, match=r"wrong image size in .*: 14x14, expected 28x28"):
        datasets.load("mnist", data_dir=d, download=False)
    X, _ = datasets.load(d)
    assert X.shape == (20, 196)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DataError, match=r"missing file .*nope: no such file"):
        datasets.read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match=r"it is a directory"):
        datasets.read_idx(tmp_path)


# --------------------------------------------------------------------------- real MNIST files

def _mnist_partial():
    here = Path(__file__).resolve()
    for base in (here.parents[2] / "shared", here.parents[1].parent / "shared"):
        d = base / "datasets" / "mnist-partial"
        if (d / "t10k-images-idx3-ubyte.gz").is_file():
            return d
    return None


MNIST_PARTIAL = _mnist_partial()
needs_mnist = pytest.mark.skipif(MNIST_PARTIAL is None, reason="shared/datasets/mnist-partial absent")


@needs_mnist
def test_real_mnist_files_parse_and_match_checksums():
    d = MNIST_PARTIAL
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "train-labels-idx1-ubyte.gz"):
        size, md5 = datasets.CHECKSUMS["mnist"][name]
        data = (d / name).read_bytes()
        assert len(data) == size
        assert hashlib.md5(data).hexdigest() == md5
    images = datasets.read_idx(d / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    labels = datasets.read_idx(d / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,)
    assert list(labels[:5]) == [7, 2, 1, 0, 4]
    train_labels = datasets.read_idx(d / "train-labels-idx1-ubyte.gz")
    assert train_labels.shape == (60000,)
    assert list(train_labels[:5]) == [5, 0, 4, 1, 9]
    # The well-known class counts of MNIST's training labels.
    assert list(np.bincount(train_labels)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851,
                                               5949]


@needs_mnist
def test_real_mnist_test_split_loads_without_train_images():
    X, y = datasets.load("mnist", split="test", data_dir=MNIST_PARTIAL, download=False)
    assert X.shape == (10000, 784) and X.dtype == np.uint8 and X.flags.c_contiguous
    assert y.dtype == np.int64 and list(y[:5]) == [7, 2, 1, 0, 4]
    assert X.max() == 255 and 30 < X.mean() < 40
    with pytest.raises(DataError, match=r"missing file train-images-idx3-ubyte.gz for mnist in "
                                        r".*mnist-partial: put the four IDX files there, or run "
                                        r"`fastmlp datasets download mnist`"):
        datasets.load("mnist", split="train", data_dir=MNIST_PARTIAL, download=False)


@needs_mnist
def test_verify_real_mnist_partial_names_the_missing_file():
    with pytest.raises(DataError, match=r"missing file train-images-idx3-ubyte.gz for mnist .*1 of 4"):
        datasets.verify("mnist", data_dir=MNIST_PARTIAL)


@needs_mnist
def test_verify_catches_a_recompressed_copy(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "train-labels-idx1-ubyte.gz"):
        (d / name).write_bytes((MNIST_PARTIAL / name).read_bytes())
    raw = gzip.decompress((MNIST_PARTIAL / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw, compresslevel=1))
    with pytest.raises(ChecksumError, match=r"checksum mismatch for .*t10k-labels-idx1-ubyte.gz "
                                            r"\(mnist\): .*expected 4542 bytes with md5 "
                                            r"ec29112dd5afa0611ce80d1b7f02629c; delete it"):
        datasets.verify("mnist", data_dir=d)
    # Uncompressed copies are checked by structure.
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    (d / "t10k-labels-idx1-ubyte").write_bytes(raw)
    write_idx(d / "train-images-idx3-ubyte", np.zeros((60000, 28, 28), np.uint8), gz=False)
    status = dict(datasets.verify("mnist", data_dir=d))
    assert status["t10k-labels-idx1-ubyte"].startswith("ok: structure checked (uncompressed")
    assert status["t10k-images-idx3-ubyte.gz"].startswith("ok: 1648877 bytes, md5 9fb629c4")
    assert len(status) == 4


# --------------------------------------------------------------------------- Fashion-MNIST (Debian)

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not (FASHION / "t10k-labels-idx1-ubyte.gz").is_file(),
                                   reason="Debian package dataset-fashion-mnist not installed")


@needs_fashion
def test_fashion_mnist_from_debian():
    assert datasets.path("fashion-mnist") == FASHION
    X, y = datasets.load("fashion-mnist", download=False)
    assert X.shape == (60000, 784) and X.dtype == np.uint8 and X.flags.c_contiguous
    assert y.dtype == np.int64 and y.min() == 0 and y.max() == 9
    assert list(np.bincount(y)) == [6000] * 10
    Xt, yt = datasets.load("fashion-mnist", split="test", download=False)
    assert Xt.shape == (10000, 784) and list(np.bincount(yt)) == [1000] * 10
    assert not np.array_equal(X[:100], Xt[:100])
    status = datasets.verify("fashion-mnist")
    assert [s for _, s in status if not s.startswith("ok: structure checked (system copy")] == []
    assert len(status) == 4


# --------------------------------------------------------------------------- built-in sets

def test_xor():
    for split in ("train", "test"):
        X, y = datasets.load("xor", split=split)
        assert X.dtype == np.float32 and X.shape == (4, 2)
        assert y.dtype == np.int64
        assert X.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
        assert y.tolist() == [0, 1, 1, 0]
    assert datasets.path("xor") is None and datasets.download("xor") is None


def test_list_and_info():
    assert datasets.KNOWN == ("xor", "synthetic-digits", "mnist", "fashion-mnist")
    assert datasets.DEFAULT == "synthetic-digits"
    rows = datasets.list_datasets()
    assert [r["name"] for r in rows] == list(datasets.KNOWN)
    keys = {"name", "description", "n_features", "n_classes", "n_train", "n_test", "source"}
    assert all(set(r) == keys for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["mnist"]["n_train"] == 60000 and by_name["mnist"]["n_test"] == 10000
    assert by_name["xor"]["n_features"] == 2 and datasets.n_classes("xor") == 2
    assert datasets.n_features("fashion-mnist") == 784 and datasets.n_classes("Fashion_MNIST") == 10
    assert datasets.class_names("fashion-mnist")[9] == "Ankle boot"


def test_unknown_name_and_split():
    with pytest.raises(DataError, match=r"unknown dataset 'cifar': expected one of xor, "
                                        r"synthetic-digits, mnist, fashion-mnist"):
        datasets.load("cifar")
    with pytest.raises(DataError, match=r"unknown dataset 'cifar'.*xor, synthetic-digits"):
        datasets.download("cifar")
    with pytest.raises(DataError, match=r"unknown split 'valid': expected 'train' or 'test'"):
        datasets.load("xor", split="valid")
    with pytest.raises(DataError, match="expected a dataset name or a path"):
        datasets.load(42)


@pytest.fixture(scope="module")
def synthetic_test_split():
    return _synthetic.generate("test")


def test_synthetic_shape_dtype_balance_and_pinned_hash(synthetic_test_split):
    X, y = synthetic_test_split
    assert X.shape == (10000, 784) and X.dtype == np.uint8 and X.flags.c_contiguous
    assert y.shape == (10000,) and y.dtype == np.int64
    assert list(np.bincount(y, minlength=10)) == [1000] * 10
    # Every block of ten is a permutation of the digits, and the order is not trivial.
    assert all(sorted(y[i:i + 10]) == list(range(10)) for i in range(0, 10000, 10))
    assert not np.array_equal(y[:10], np.arange(10))
    # Images look like ink on a dark background: mostly dark, some bright pixels in every image.
    assert (X.max(axis=1) > 128).all()
    assert 0.6 < (X < 20).mean() < 0.9
    # The same bytes as on the machine that pinned the hash (and as every earlier run).
    assert datasets._synthetic_sha256(X, y) == datasets.SYNTHETIC_SHA256["test"]


def test_synthetic_is_deterministic_and_prefix_stable(synthetic_test_split):
    X, y = synthetic_test_split
    X2, y2 = _synthetic.generate("test")
    assert hashlib.sha256(X2.tobytes()).digest() == hashlib.sha256(X.tobytes()).digest()
    np.testing.assert_array_equal(y2, y)
    X3, y3 = _synthetic.generate("test", n=123)
    np.testing.assert_array_equal(X3, X[:123])
    np.testing.assert_array_equal(y3, y[:123])
    Xtr, _ = _synthetic.generate("train", n=1000)
    assert not set(map(bytes, Xtr)) & set(map(bytes, X[:1000])), "train and test share samples"


def test_synthetic_is_not_trivially_separable(synthetic_test_split):
    X, y = synthetic_test_split
    Xf = X.astype(np.float32) / 255
    train, test = slice(0, 8000), slice(8000, 10000)
    means = np.stack([Xf[train][y[train] == c].mean(axis=0) for c in range(10)])
    d2 = ((Xf[test, None, :] - means[None]) ** 2).sum(axis=2)
    acc = (d2.argmin(axis=1) == y[test]).mean()
    # Far above chance (the classes are real), far below 99% (a template match is not enough).
    assert 0.4 < acc < 0.9, acc


def test_synthetic_matches_pure_python_reference():
    """The compiled kernel and the same code run by the Python interpreter give the same bytes."""
    code = ("from fastmlp import _synthetic, datasets\n"
            "X, y = _synthetic.generate('train', 30)\n"
            "print(datasets._synthetic_sha256(X, y))\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    X, y = _synthetic.generate("train", 30)
    assert out.stdout.strip() == datasets._synthetic_sha256(X, y)


def test_synthetic_load_caches_and_reuses(isolated, monkeypatch):
    cache = isolated / "xdg" / "fastmlp" / "synthetic-digits"
    fname = f"synthetic-digits-v{_synthetic.VERSION}-test.npz"
    X, y = datasets.load("synthetic-digits", split="test")
    assert (cache / fname).is_file()
    assert [p.name for p in cache.iterdir()] == [fname]  # no temporary file left
    assert oct((cache / fname).stat().st_mode & 0o777) == "0o644"

    def boom(*args, **kwargs):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(_synthetic, "generate", boom)
    X2, y2 = datasets.load("synthetic-digits", split="test")
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert X2.flags.c_contiguous and X2.dtype == np.uint8 and y2.dtype == np.int64
    status = dict(datasets.verify("synthetic-digits"))
    assert status[fname] == "ok: sha256 " + datasets.SYNTHETIC_SHA256["test"]
    assert "not generated yet" in status[f"synthetic-digits-v{_synthetic.VERSION}-train.npz"]


def test_synthetic_bad_cache_is_regenerated(isolated, monkeypatch):
    small = _synthetic.generate("test", 50)
    monkeypatch.setitem(_synthetic.SIZES, "test", 50)
    real_generate = _synthetic.generate
    calls = []
    monkeypatch.setattr(_synthetic, "generate",
                        lambda split: calls.append(split) or real_generate(split, 50))
    cache = isolated / "xdg" / "fastmlp" / "synthetic-digits"
    cache.mkdir(parents=True)
    f = cache / f"synthetic-digits-v{_synthetic.VERSION}-test.npz"
    f.write_bytes(b"not a zip file")
    with pytest.warns(RuntimeWarning, match="ignoring unreadable or wrong cache file"):
        X, y = datasets.load("synthetic-digits", split="test")
    assert calls == ["test"]
    np.testing.assert_array_equal(X, small[0])
    with np.load(f) as z:  # replaced by a good one
        np.testing.assert_array_equal(z["X"], small[0])
    # verify() rejects a cache whose bytes differ.
    monkeypatch.setitem(datasets.SYNTHETIC_SHA256, "test", "0" * 64)
    with pytest.raises(ChecksumError, match=r"checksum mismatch for .*-test.npz: sha256 .*expected "
                                            r"0000.*delete it"):
        datasets.verify("synthetic-digits")


def test_synthetic_cache_follows_fastmlp_data_and_data_dir(isolated, monkeypatch):
    monkeypatch.setitem(_synthetic.SIZES, "test", 20)
    real_generate = _synthetic.generate
    monkeypatch.setattr(_synthetic, "generate", lambda split: real_generate(split, 20))
    root = isolated / "data"
    monkeypatch.setenv("FASTMLP_DATA", str(root))
    datasets.load("synthetic-digits", split="test")
    fname = f"synthetic-digits-v{_synthetic.VERSION}-test.npz"
    assert (root / "synthetic-digits" / fname).is_file()
    mine = isolated / "mine"
    datasets.load("synthetic-digits", split="test", data_dir=mine)
    assert not (mine / fname).exists()  # found in $FASTMLP_DATA: not generated again
    monkeypatch.delenv("FASTMLP_DATA")
    datasets.load("synthetic-digits", split="test", data_dir=mine)
    assert (mine / fname).is_file()


def test_import_is_light():
    code = ("import sys, fastmlp\n"
            "before = 'numba' in sys.modules\n"
            "import fastmlp.datasets, fastmlp._synthetic, fastmlp._idx\n"
            "print(before, 'numba' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert out.returncode == 0, out.stderr
    before, after = out.stdout.split()
    if before == "True":
        pytest.skip("the fastmlp package itself imports numba")
    assert after == "False"


# --------------------------------------------------------------------------- lookup order

def _first_label(X_y):
    return int(X_y[1][0])


def test_lookup_order_data_dir_then_env_then_cache(isolated, monkeypatch):
    explicit = isolated / "explicit"
    env_root = isolated / "envroot"
    cache = isolated / "xdg" / "fastmlp" / "mnist"
    write_set(explicit, label_offset=1)
    write_set(env_root / "mnist", label_offset=2)
    write_set(cache, label_offset=3)
    monkeypatch.setenv("FASTMLP_DATA", str(env_root))

    assert _first_label(datasets.load("mnist", data_dir=explicit, download=False)) == 1
    assert datasets.path("mnist", data_dir=explicit) == explicit
    assert _first_label(datasets.load("mnist", download=False)) == 2
    assert datasets.path("mnist") == env_root / "mnist"
    monkeypatch.delenv("FASTMLP_DATA")
    assert _first_label(datasets.load("mnist", download=False)) == 3
    assert datasets.path("mnist") == cache
    # data_dir without the files falls through to the next places.
    empty = isolated / "empty"
    empty.mkdir()
    assert _first_label(datasets.load("mnist", data_dir=empty, download=False)) == 3


def test_lookup_accepts_both_layouts(isolated, monkeypatch):
    # data_dir/<name>/ as well as data_dir itself
    root = isolated / "root"
    write_set(root / "mnist", label_offset=4)
    assert _first_label(datasets.load("mnist", data_dir=root, download=False)) == 4
    assert datasets.path("mnist", data_dir=root) == root / "mnist"
    # files directly in $FASTMLP_DATA as well as in $FASTMLP_DATA/<name>/
    flat = isolated / "flat"
    write_set(flat, label_offset=5, gz=False)
    monkeypatch.setenv("FASTMLP_DATA", str(flat))
    assert _first_label(datasets.load("mnist", download=False)) == 5
    assert datasets.path("mnist") == flat


def test_xdg_cache_home_respected_and_relative_ignored(isolated, monkeypatch):
    assert datasets.cache_dir() == isolated / "xdg" / "fastmlp"
    assert datasets.path("mnist") == isolated / "xdg" / "fastmlp" / "mnist"  # download target
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")
    assert datasets.cache_dir() == isolated / "home" / ".cache" / "fastmlp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert datasets.cache_dir() == isolated / "home" / ".cache" / "fastmlp"
    monkeypatch.setenv("FASTMLP_DATA", str(isolated / "d"))
    assert datasets.path("mnist") == isolated / "d" / "mnist"
    assert datasets.path("mnist", data_dir=isolated / "e") == isolated / "e"


def test_test_split_needs_only_t10k_files(isolated):
    d = isolated / "only-test"
    sets = write_set(d, splits=("test",))
    X, y = datasets.load("mnist", split="test", data_dir=d, download=False)
    np.testing.assert_array_equal(X, sets["test"][0].reshape(10, -1))
    with pytest.raises(DataError, match=r"missing file train-images-idx3-ubyte.gz for mnist in "
                                        r".*only-test: put the four IDX files there"):
        datasets.load("mnist", split="train", data_dir=d, download=False)


def test_missing_known_set_without_download(isolated, monkeypatch):
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", {})
    with pytest.raises(DataError, match=r"missing file t10k-images-idx3-ubyte.gz for fashion-mnist "
                                        r"in .*xdg/fastmlp/fashion-mnist: put the two t10k IDX files "
                                        r"\(or all four\) there, or run `fastmlp datasets download "
                                        r"fashion-mnist`"):
        datasets.load("fashion-mnist", split="test", download=False)


# --------------------------------------------------------------------------- directories, .npz, .csv

def test_directory_of_idx_files(isolated):
    d = isolated / "idx"
    sets = write_set(d, gz=False)
    X, y = datasets.load(d)
    np.testing.assert_array_equal(X, sets["train"][0].reshape(20, -1))
    np.testing.assert_array_equal(y, sets["train"][1])
    X, y = datasets.load(str(d), split="test")
    assert X.shape == (10, 784)
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"missing file t10k-images-idx3-ubyte.gz \(or "
                                        r"t10k-images-idx3-ubyte\) in .*empty"):
        datasets.load(empty, split="test")


def test_missing_and_unsupported_paths(isolated):
    with pytest.raises(DataError, match=r"missing file .*nothing.npz: no such file or directory"):
        datasets.load(str(isolated / "nothing.npz"))
    with pytest.raises(DataError, match=r"missing file .*sub/x: no such file"):
        datasets.load(str(isolated / "sub" / "x"))
    f = isolated / "data.txt"
    f.write_text("1,2\n")
    with pytest.raises(DataError, match=r"unsupported file type '.txt' for .*data.txt: expected a "
                                        r".npz or .csv file"):
        datasets.load(f)


@pytest.mark.parametrize("dtype,expected", [(np.uint8, np.uint8), (np.float32, np.float32),
                                            (np.float64, np.float64), (np.int16, np.float32),
                                            (np.int64, np.float32), (np.bool_, np.float32)])
def test_npz_dtypes(isolated, dtype, expected):
    f = isolated / "d.npz"
    X = np.asfortranarray(np.arange(12).reshape(4, 3) % 2).astype(dtype)
    np.savez(f, X=X, y=np.array([0, 1, 1, 0], dtype=np.int32))
    X2, y2 = datasets.load(f)
    assert X2.dtype == expected and X2.flags.c_contiguous
    np.testing.assert_array_equal(X2, X.astype(expected))
    assert y2.dtype == np.int64 and y2.tolist() == [0, 1, 1, 0]


def test_npz_labels_and_shapes(isolated):
    f = isolated / "d.npz"
    np.savez(f, X=np.zeros((3, 2, 2), np.uint8), y=np.array([[0.0], [2.0], [1.0]]))
    X, y = datasets.load(f)
    assert X.shape == (3, 4) and y.dtype == np.int64 and y.tolist() == [0, 2, 1]
    np.savez(f, X=np.zeros((3, 2), np.float32), y=np.array([0.5, 1.0, 2.0]))
    _, y = datasets.load(f)
    assert y.dtype == np.float64  # not integral: kept as stored


def test_npz_test_split(isolated):
    f = isolated / "d.npz"
    np.savez(f, X=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64),
             X_test=np.ones((2, 2), np.float32), y_test=np.ones(2, np.int64))
    assert datasets.load(f)[0].shape == (4, 2)
    X, y = datasets.load(f, split="test")
    assert X.shape == (2, 2) and X.min() == 1 and y.tolist() == [1, 1]
    np.savez(f, X=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64))
    assert datasets.load(f, split="test")[0].shape == (4, 2)  # no X_test: the split is ignored


def test_bad_npz(isolated):
    f = isolated / "bad.npz"
    np.savez(f, X=np.zeros((4, 2)), labels=np.zeros(4))
    with pytest.raises(DataError, match=r"missing array 'y' in .*bad.npz: found arrays X, labels; "
                                        r"expected X and y"):
        datasets.load(f)
    np.savez(f, y=np.zeros(4))
    with pytest.raises(DataError, match=r"missing array 'X' in .*bad.npz: found arrays y"):
        datasets.load(f)
    np.savez(f, X=np.array([[1, "a"], [2, None]], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match=r"array 'X' in .*bad.npz is an object array.*never loads .*"
                                        r"expected a plain numeric array"):
        datasets.load(f)
    np.savez(f, X=np.array([["a", "b"]]), y=np.zeros(1))
    with pytest.raises(DataError, match=r"array X in .*bad.npz has dtype <U1, expected numbers"):
        datasets.load(f)
    np.savez(f, X=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match=r"length mismatch in .*bad.npz: X has 4 rows but y has 3"):
        datasets.load(f)
    np.savez(f, X=np.zeros(4), y=np.zeros(4))
    with pytest.raises(DataError, match=r"array X in .*bad.npz has shape \(4,\), expected 2 dim"):
        datasets.load(f)
    np.savez(f, X=np.array([[0.0, np.nan]]), y=np.zeros(1))
    with pytest.raises(DataError, match=r"array X in .*bad.npz has 1 NaN or infinite values"):
        datasets.load(f)
    np.savez(f, X=np.zeros((2, 2)), y=np.eye(2))
    with pytest.raises(DataError, match=r"array y .* has shape \(2, 2\), expected one class index "
                                        r"per sample, shape \(2,\) \(not one-hot\)"):
        datasets.load(f)
    f.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(DataError, match=r"cannot read .*bad.npz as .npz: "):
        datasets.load(f)
    np.save(isolated / "single.npy", np.zeros(3))
    os.replace(isolated / "single.npy", f)
    with pytest.raises(DataError, match=r"it holds a single array \(a .npy file\), expected arrays X and y"):
        datasets.load(f)


def test_csv_without_header(isolated):
    f = isolated / "d.csv"
    f.write_text("1,0.5,2\n0,1.5,3\n\n2,0,0\n")
    X, y = datasets.load(f)
    assert X.dtype == np.float32 and X.flags.c_contiguous
    assert X.tolist() == [[0.5, 2], [1.5, 3], [0, 0]]
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 2]
    assert datasets.load(f, split="test")[1].tolist() == [1, 0, 2]  # the split is ignored


def test_csv_with_header_and_label_column(isolated):
    f = isolated / "d.csv"
    f.write_text('"x1", "Label" ,x2\n0.5,1,2\n1.5,0,3\n')
    X, y = datasets.load(f)
    assert X.tolist() == [[0.5, 2], [1.5, 3]] and y.tolist() == [1, 0]
    f.write_text("\ufeffclass,a,b\n3,1,2\n4,5,6\n")  # BOM, no 'label' column: the first is the label
    X, y = datasets.load(f)
    assert X.tolist() == [[1, 2], [5, 6]] and y.tolist() == [3, 4]


def test_bad_csv(isolated):
    f = isolated / "bad.csv"
    f.write_text("label,a,b\n1,2,3\n0,abc,3\n")
    with pytest.raises(DataError, match=r"non-numeric value 'abc' in CSV file .*bad.csv at line 3, "
                                        r"column 2: expected numbers only"):
        datasets.load(f)
    f.write_text("1,2,3\n0,1,2\n4,5\n")
    with pytest.raises(DataError, match=r"ragged CSV file .*bad.csv: line 3 has 2 fields, "
                                        r"expected 3"):
        datasets.load(f)
    f.write_text("a,b\n1,2,3\n")
    with pytest.raises(DataError, match=r"CSV header of .*bad.csv has 2 columns but the rows have "
                                        r"3, expected the same number"):
        datasets.load(f)
    f.write_text("1,,3\n")
    with pytest.raises(DataError, match=r"non-numeric value '' .* line 1, column 2"):
        datasets.load(f)
    f.write_text("")
    with pytest.raises(DataError, match=r"empty CSV file .*bad.csv"):
        datasets.load(f)
    f.write_text("label,a\n")
    with pytest.raises(DataError, match=r"no data rows in CSV file .*bad.csv: only a header"):
        datasets.load(f)
    f.write_text("1\n2\n")
    with pytest.raises(DataError, match=r"CSV file .*bad.csv has 1 column, expected a label column"):
        datasets.load(f)
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match=r"cannot read .*bad.csv as CSV text"):
        datasets.load(f)


def test_error_messages_are_one_line(isolated):
    f = isolated / "bad.csv"
    f.write_text("1,2,3\n4,5\n")
    with pytest.raises(DataError) as e:
        datasets.load(f)
    assert "\n" not in str(e.value)
    f = isolated / "x.gz"
    f.write_bytes(gzip.compress(bytes(100))[:30])
    with pytest.raises(DataError) as e:
        datasets.read_idx(f)
    assert "\n" not in str(e.value)
