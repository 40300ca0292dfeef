"""Hostile input through the Python API (issue 10): each class of problem has one mechanism in the
library, tested here; tests/test_fuzz.py fuzzes the readers and tests/test_cli_hostile.py drives the
command line in subprocesses against real devices, FIFOs, links, signals and file systems."""
import gzip
import io
import json
import os
import pickle
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from data_helpers import isolate
from fastmlp import _checks, _files, _idx, datasets
from fastmlp.errors import CheckpointError, DataError, DownloadError, OutputError, PathClashError
from fastmlp.model import MLP
from fastmlp.training import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# -- output targets: what is at the path ---------------------------------------------------------

def _special_files(tmp_path):
    """(label, path) of non-regular files any user can make: a FIFO, a directory, a socket, and a
    character device (mknod, root only)."""
    out = []
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out.append(("a FIFO (named pipe)", fifo))
    d = tmp_path / "dir"
    d.mkdir()
    out.append(("a directory", d))
    sock_path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    out.append(("a socket", sock_path))
    dev = tmp_path / "dev"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        out.append(("a character device", dev))
    except (PermissionError, OSError):
        pass
    return out, s


def test_non_regular_targets_are_refused_and_left_alone(tmp_path):
    specials, sock = _special_files(tmp_path)
    net = MLP([2, 3, 2], seed=0)
    try:
        for kind, path in specials:
            before = os.lstat(path)
            with pytest.raises(OutputError) as e:
                net.save(path)
            assert f"it is {kind}" in one_line(e) and "expected a regular file" in str(e.value)
            after = os.lstat(path)
            assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino,
                                                                   before.st_rdev)
            # The same through a symbolic link: the link is followed, its target judged.
            link = tmp_path / f"link-to-{path.name}"
            link.symlink_to(path)
            with pytest.raises(OutputError, match=re.escape(f"it is {kind} (the target of the link")):
                _files.check_output(link, "--save")
            assert os.path.islink(link)
    finally:
        sock.close()
    assert not list(tmp_path.glob(".*.part"))


def test_a_symlink_is_followed_and_its_target_replaced(tmp_path):
    real = tmp_path / "models" / "real.npz"
    real.parent.mkdir()
    MLP([2, 3, 2], seed=0).save(real)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    MLP([2, 5, 2], seed=1).save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert MLP.load(real).sizes == [2, 5, 2]
    # A dangling link: its target is created.
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "models" / "new.npz")
    MLP([2, 4, 2], seed=0).save(dangling)
    assert dangling.is_symlink() and MLP.load(tmp_path / "models" / "new.npz").sizes == [2, 4, 2]
    assert not list((tmp_path / "models").glob(".*.part")) and not list(tmp_path.glob(".*.part"))


def test_a_file_without_write_permission_is_refused_even_as_root(tmp_path):
    f = tmp_path / "keep.npz"
    MLP([2, 3, 2], seed=0).save(f)
    before = f.read_bytes()
    f.chmod(0o444)
    with pytest.raises(OutputError, match=r"read-only \(mode 0444\)"):
        MLP([2, 3, 2], seed=1).save(f)
    assert f.read_bytes() == before and stat.S_IMODE(f.stat().st_mode) == 0o444


def test_a_replaced_file_keeps_its_mode(tmp_path):
    f = tmp_path / "model.npz"
    f.write_bytes(b"old")
    f.chmod(0o640)
    MLP([2, 3, 2], seed=0).save(f)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640 and MLP.load(f).sizes == [2, 3, 2]
    new = tmp_path / "new.npz"
    old_umask = os.umask(0o027)
    try:
        MLP([2, 3, 2], seed=0).save(new)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # a new file: 0666 minus the umask


def test_missing_directory_and_file_as_directory_are_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        _files.check_output(tmp_path / "file" / "m.npz", "--save")
    with pytest.raises(OutputError, match="does not exist"):
        _files.check_output(tmp_path / "nowhere" / "m.npz", "--save")


# -- outputs naming inputs -----------------------------------------------------------------------

def test_outputs_are_compared_with_inputs_and_each_other_by_the_file_they_resolve_to(tmp_path):
    data = tmp_path / "victim.npz"
    np.savez(data, X=np.zeros((2, 2)), y=np.zeros(2))
    link = tmp_path / "link.npz"
    link.symlink_to(data)
    hard = tmp_path / "hard.npz"
    os.link(data, hard)
    spelled = tmp_path / "sub" / ".." / "victim.npz"
    (tmp_path / "sub").mkdir()
    for out in (data, link, hard, spelled):
        with pytest.raises(PathClashError, match=r"--save .* would replace the input --data .*the same file"):
            _files.check_distinct([("--save", out)], [("--data", data)])
    # Two outputs that are one file, one of them not created yet, through a dangling link.
    future = tmp_path / "future.jsonl"
    alias = tmp_path / "alias.jsonl"
    alias.symlink_to(future)
    with pytest.raises(PathClashError, match="are the same file"):
        _files.check_distinct([("--save", future), ("--metrics", alias)])
    # Allowed pairs (resume from and save to one checkpoint), distinct files, and None.
    _files.check_distinct([("--save", data)], [("--resume", link)], allowed={("--save", "--resume")})
    _files.check_distinct([("--save", tmp_path / "a"), ("--metrics", None)], [("--data", data)])
    assert data.read_bytes()[:2] == b"PK"


# -- killed writes leave no temporary file forever ------------------------------------------------

def test_stale_part_files_of_killed_writers_are_removed(tmp_path):
    dest = tmp_path / "model.npz"
    # A writer killed while it wrote: its .part file stays (SIGKILL runs no cleanup)...
    code = ("import sys, time; from fastmlp import _files\n"
            "def write(tmp):\n"
            "    open(tmp, 'wb').write(b'x' * 100000); print('writing', flush=True); time.sleep(60)\n"
            f"_files.atomic_write({str(dest)!r}, write)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "writing"
    # ...while it lives, its locked temporary is not touched, however old:
    parts = list(tmp_path.glob(".model.npz.*.part"))
    assert len(parts) == 1
    os.utime(parts[0], (0, 0))
    MLP([2, 3, 2], seed=0).save(dest)
    assert parts[0].exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    # Dead and recent: kept for a while (a writer takes its lock just after creating the file).
    os.utime(parts[0])
    MLP([2, 3, 2], seed=0).save(dest)
    assert parts[0].exists()
    # Dead and old: removed by the next write of the same file; other files are not touched.
    os.utime(parts[0], (time.time() - 3600,) * 2)
    other = tmp_path / ".other.npz.abc.part"
    other.write_bytes(b"x")
    os.utime(other, (0, 0))
    MLP([2, 3, 2], seed=0).save(dest)
    assert not parts[0].exists() and other.exists()
    assert MLP.load(dest).sizes == [2, 3, 2]


def test_a_write_fault_names_the_path_and_leaves_the_old_file(tmp_path):
    # A real file-size limit (RLIMIT_FSIZE) in a child process: the write fails with EFBIG.
    dest = tmp_path / "model.npz"
    MLP([2, 3, 2], seed=0).save(dest)
    before = dest.read_bytes()
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "from fastmlp.model import MLP\n"
            "from fastmlp.errors import OutputError\n"
            "try:\n"
            f"    MLP([100, 100, 10], seed=0).save({str(dest)!r})\n"
            "except OutputError as e:\n"
            "    print(e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 3, out.stderr
    assert out.stdout.count("\n") == 1
    assert f"cannot write {dest}: File too large; nothing was written" in out.stdout
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_full_disk_names_the_path(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with pytest.raises(OutputError, match=rf"cannot write {mnt}/m.npz: No space left on device"):
            MLP([300, 100, 10], seed=0).save(mnt / "m.npz")
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# -- .npz members that are not arrays; misleading messages of the readers ----------------------------

def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize("payload", [b"raw bytes, no header", pickle.dumps({"a": 1}), b""])
def test_npz_members_that_are_not_arrays(tmp_path, payload):
    f = tmp_path / "bad.npz"
    _zip(f, {"X.npy": payload, "y.npy": _npy_bytes(np.zeros(2))})
    with pytest.raises(DataError, match=r"array 'X' in .*bad.npz is not a NumPy array") as e:
        datasets.load(f)
    one_line(e)
    m = tmp_path / "model.npz"
    MLP([2, 3, 2], seed=0).save(m)
    with np.load(m) as z:
        meta = z["meta"]
    _zip(m, {"params.npy": payload, "meta.npy": _npy_bytes(meta)})
    for load in (MLP.load, Trainer.from_checkpoint):
        with pytest.raises(CheckpointError, match=r"array 'params' in .*model.npz is not a NumPy array"):
            load(m)


def test_npz_array_larger_than_its_bytes_is_refused_before_allocating(tmp_path):
    # A version 1.0 header announcing 80 TB of float64, followed by 64 bytes.
    big = np.lib.format.magic(1, 0) + struct.pack("<H", 118) + \
        b"{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000,), }".ljust(117) + b"\n"
    f = tmp_path / "big.npz"
    _zip(f, {"X.npy": big + b"\0" * 64, "y.npy": _npy_bytes(np.zeros(2))})
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"truncated array: array 'X' .* announces shape "
                                            r"\(10000000000000,\) of float64"):
            datasets.load(f)
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()


def test_misleading_reader_messages_are_fixed(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("just some text\n")
    with pytest.raises(DataError, match=r"cannot read .*notes.npz as .npz: it is text"):
        datasets.load(text)
    with pytest.raises(CheckpointError, match=r"cannot read .*notes.npz as .npz: it is text"):
        MLP.load(text)
    npy = tmp_path / "model.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(CheckpointError, match=r"model.npy as .npz: it holds a single array \(a .npy "
                                              r"file\), expected a model"):
        MLP.load(npy)
    for delim, name in ((";", "semicolons"), ("\t", "tabs")):
        f = tmp_path / "d.csv"
        f.write_text(f"label{delim}a{delim}b\n0{delim}1{delim}2\n")
        with pytest.raises(DataError, match=f"separates its fields with {name}: expected commas"):
            datasets.load(f)
    empty = tmp_path / "train-images-idx3-ubyte"
    empty.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">III", 0, 28, 28))
    with pytest.raises(DataError, match=r"no images in .*: it holds 0 images of 28x28 pixels"):
        _idx.read_images(empty)


# -- gzip bombs --------------------------------------------------------------------------------------

def _bomb(tmp_path, announced, megabytes):
    co = gzip.zlib.compressobj(9, gzip.zlib.DEFLATED, 31)
    parts = [co.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", announced))]
    zeros = bytes(1 << 20)
    parts += [co.compress(zeros) for _ in range(megabytes)]
    parts.append(co.flush())
    f = tmp_path / "train-labels-idx1-ubyte.gz"
    f.write_bytes(b"".join(parts))
    return f


def test_a_gzip_bomb_stops_at_the_announced_size(tmp_path):
    f = _bomb(tmp_path, 1000, 64)  # 64 MiB of zeros in a 65 KB file, the header announces 1000
    assert f.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"trailing bytes in IDX file .*: more than \d+ bytes, "
                                            r"expected 1008 .*\(more than 1048576 too many\)"):
            _idx.read_idx(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # the announced 1 KB plus the decompressor's buffers, not 64 MiB
    # A header announcing more than deflate can produce from the file: refused without decompressing.
    g = _bomb(tmp_path, 2**32 - 1, 0)
    with pytest.raises(DataError, match=r"announces a 4294967295 array of uint8 .*more than its \d+ "
                                        r"compressed bytes can hold"):
        _idx.read_idx(g)


# -- values that overflow the network's dtype ------------------------------------------------------

def test_values_beyond_float32_are_refused_for_a_float32_network():
    X = np.array([[1e40, 0.0], [0.0, 1.0]])
    y = np.array([0, 1])
    net = MLP([2, 3, 2], dtype="float32", seed=0)
    with pytest.raises(ValueError, match=r"X: contains 1 value\(s\) too large for float32 \(e.g. 1e\+40"):
        Trainer(net, threads=1).fit(X, y, 1, verbose=False)
    with pytest.raises(ValueError, match="too large for float32"):
        net.predict(X)
    with pytest.raises(ValueError, match="too large for float32"):
        net.evaluate(X, y, loss="mse")
    targets = np.array([[1e39, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match=r"y: contains 1 value\(s\) too large"):
        net.loss(np.zeros((2, 2)), targets, loss="mse")
    with pytest.raises(ValueError, match="too large for float32"):
        MLP.from_weights([np.full((2, 2), 1e300)], [np.zeros(2)], dtype="float32")
    # float64 networks take them (and float32 data near its own maximum stays allowed).
    assert MLP([2, 3, 2], dtype="float64", seed=0).predict(X).shape == (2,)
    assert net.predict(np.array([[3e38, 0]], dtype=np.float32)).shape == (1,)


# -- absurd integers, stray labels, NaN options ------------------------------------------------------

@pytest.mark.parametrize("sizes", [[2, 10**30, 2], [2, -1, 2], [2, 2**31, 2], [2, 2.0, 2]])
def test_absurd_layer_sizes_are_one_line_errors(sizes):
    with pytest.raises(ValueError, match=r"sizes: got .*expected positive integers up to 2,147,483,647") as e:
        MLP(sizes)
    one_line(e)


def test_a_network_larger_than_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"sizes: .* need [\d,]+ parameters .* GiB\), more than this "
                                         r"machine's"):
        MLP([1000, 2**31 - 1, 10])


@pytest.mark.parametrize("text", ["\u00b2", "1000000000000000000000000000000", "3,\u0663", "-5", "1e3",
                                  "2147483648", " , "])
def test_hidden_sizes_text_is_ascii_digits_with_a_bound(text):
    with pytest.raises(ValueError, match="expected positive integers separated by commas.*each at most"):
        _checks.parse_hidden(text)


def test_hidden_sizes_text_good_values():
    assert _checks.parse_hidden("256, 128") == [256, 128]
    assert _checks.parse_hidden("none") == [] and _checks.parse_hidden("0") == []


def test_a_stray_label_does_not_decide_the_network_size():
    y = np.array([0, 1, 2, 1, 1000000, 0])
    with pytest.raises(DataError, match=r"label 1000000 of data.csv \(sample 4\) would make a "
                                        r"1,000,001-class output layer while the other labels go up to 2"):
        _checks.check_class_labels(y, "data.csv")
    assert _checks.check_class_labels(np.array([0, 1, 9]), "d") == 10  # a few empty classes are fine
    assert _checks.check_class_labels(np.array([0, 1, 2]), "mnist", n_classes=10) == 10
    with pytest.raises(DataError, match="at most 100,000 classes"):
        _checks.check_class_labels(np.arange(0, 300000, 2), "d")


def test_huge_csv_labels_are_named(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("0,1\n1e30,2\n")
    with pytest.raises(DataError, match=r"label 1e\+30 \(sample 1\) is too large to be a class index"):
        datasets.load(f)
    f.write_text("0,1\n5e18,2\n")
    with pytest.raises(DataError, match=r"label 5e\+18 \(sample 1\) is too large to be a class index"):
        datasets.load(f)
    g = tmp_path / "d.npz"  # an exact int64 label loads, and the class count names it
    np.savez(g, X=np.zeros((2, 1)), y=np.array([0, 5 * 10**18]))
    _, y = datasets.load(g)
    with pytest.raises(DataError, match=r"label 5000000000000000000 of d.npz"):
        _checks.check_class_labels(y, "d.npz")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_fail_option_checks(value):
    net = MLP([2, 3, 2], seed=0)
    for name in ("lr", "momentum", "weight_decay", "beta1", "eps"):
        with pytest.raises(ValueError, match=f"{name}: got .*expected a finite number"):
            Trainer(net, **{name: value})
    from fastmlp import bench
    from fastmlp.errors import FastMLPError
    with pytest.raises(FastMLPError, match="warmup_seconds"):
        bench.run(warmup_seconds=value, isolated=False, matmul=False)


def test_batch_size_above_the_sample_count_is_capped(rng):
    X = rng.normal(size=(10, 3)).astype(np.float32)
    y = rng.integers(0, 2, 10)
    results = []
    for batch in (10, 10**12):
        t = Trainer(MLP([3, 4, 2], seed=0), batch_size=batch, threads=1)
        t.fit(X, y, 2, verbose=False)
        results.append(t.net.params.copy())
    np.testing.assert_array_equal(results[0], results[1])


# -- checkpoint metadata ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    t = Trainer(MLP([3, 4, 2], seed=0), batch_size=8, threads=1)
    t.fit(X, y, 1, verbose=False)
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    t.save_checkpoint(path, extra_meta={"run": {"dataset": "blobs", "epochs": 3, "val_split": 0.0}})
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return X, y, arrays


def _edit(meta, dotted, value):
    *parents, last = dotted.split(".")
    d = meta
    for p in parents:
        d = d[p]
    if value is KeyError:
        del d[last]
    else:
        d[last] = value


@pytest.mark.parametrize("field, value, fragment", [
    ("format", "other", "format holds 'other', expected 'fastmlp'"),
    ("format_version", "1", "format_version holds '1', expected an integer"),
    ("format_version", 0, "format_version holds 0"),
    ("sizes", [3, 1e30, 2], "sizes holds"),
    ("sizes", [3, 10**30, 2], "sizes holds"),
    ("activation", None, "activation holds None"),
    ("dtype", "float16", "dtype holds 'float16'"),
    ("training.epoch", -1, "training.epoch holds -1, expected an integer >= 0"),
    (("training.position", "training.epoch_rng_state"), (8, None),
     "epoch_rng_state holds None, expected the state of numpy's PCG64"),
    ("training.lr", "0.1", "training.lr holds '0.1', expected a finite number > 0.0"),
    ("training.lr", float("nan"), "training.lr holds nan"),
    ("training.batch_size", 1.5, "training.batch_size holds 1.5"),
    ("training.steps", True, "training.steps holds True"),
    ("training.optimizer", "rmsprop", "training.optimizer holds 'rmsprop'"),
    ("training.rng_state", {"bit_generator": "MT19937"}, "training.rng_state holds"),
    ("training.rng_state", KeyError, "training.rng_state is missing"),
    ("training.partial.correct", 5, "training.partial.correct holds 5, expected an integer >= 0 and <= 0"),
    ("training.history.loss", [], "training.history.loss holds [], expected a list of 1 values"),
    ("training.history.loss", ["x"], "expected finite numbers"),
    ("training", [], "training holds [], expected a JSON object"),
    ("run.val_split", 2.0, "run.val_split holds 2.0"),
    ("run.epochs", 0, "run.epochs holds 0"),
    ("run.threads", "2", "run.threads holds '2'"),
    ("run.input_dtype", "int8", "run.input_dtype holds 'int8'"),
])
def test_every_checkpoint_field_is_validated(good_checkpoint, tmp_path, field, value, fragment):
    _, _, arrays = good_checkpoint
    meta = json.loads(str(arrays["meta"]))
    if isinstance(field, tuple):
        for f, v in zip(field, value):
            _edit(meta, f, v)
    else:
        _edit(meta, field, value)
    path = tmp_path / "edited.npz"
    np.savez(path, **dict(arrays, meta=np.array(json.dumps(meta))))
    with pytest.raises(CheckpointError) as e:
        Trainer.from_checkpoint(path)
    assert fragment in one_line(e)
    if not str(field).startswith(("training", "run", "(")):
        with pytest.raises(CheckpointError):
            MLP.load(path)


def test_a_checkpoint_position_past_the_end_of_the_data_is_refused(good_checkpoint, tmp_path):
    X, y, arrays = good_checkpoint
    meta = json.loads(str(arrays["meta"]))
    meta["training"]["position"] = 1000
    meta["training"]["epoch_rng_state"] = meta["training"]["rng_state"]
    path = tmp_path / "past.npz"
    np.savez(path, **dict(arrays, meta=np.array(json.dumps(meta))))
    trainer, _ = Trainer.from_checkpoint(path, threads=1)
    with pytest.raises(CheckpointError, match=r"position in its epoch, 1000 samples, is past the end of "
                                              r"the 40 training samples"):
        trainer.fit(X, y, 3, verbose=False)


# -- downloads and caches ----------------------------------------------------------------------------

def test_download_synthetic_digits_into_an_unwritable_cache_fails(tmp_path, monkeypatch):
    isolate(tmp_path, monkeypatch)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DownloadError, match=r"cannot cache synthetic-digits in .*file/sub"):
        datasets.download("synthetic-digits", data_dir=tmp_path / "file" / "sub")


# -- divergence advice, kernels ---------------------------------------------------------------------

def test_divergence_advice_names_the_cause(rng):
    from fastmlp.errors import DivergenceError
    X = rng.normal(size=(32, 3))
    y = rng.integers(0, 2, 32)
    net = MLP([3, 4, 2], dtype="float64", seed=0)
    with pytest.raises(DivergenceError, match=r"the inputs reach [\d.]+e\+200: scale them"):
        Trainer(net, threads=1).fit(X * 1e200, y, 3, verbose=False)
    net = MLP([3, 4, 2], dtype="float32", seed=0)
    with pytest.raises(DivergenceError, match=r"lr \* weight decay is 5 .*use a weight decay below 10"):
        Trainer(net, lr=0.1, weight_decay=50.0, batch_size=1, threads=1).fit(X, y, 5, verbose=False)


def test_kernels_refuse_width_zero_and_too_many_threads():
    from fastmlp import kernels
    with pytest.raises(ValueError, match=r"z: got shape \(2, 0\), expected at least one value"):
        kernels.activation_forward(np.zeros((2, 0)), "softmax")
    with pytest.raises(ValueError, match=r"threads: got 1000, expected an integer from 1 to"):
        kernels.dense_forward(np.zeros((2, 2)), np.zeros(2), np.zeros(2), threads=1000)
