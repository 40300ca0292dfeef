"""Hostile input through the command line (issue 10), in subprocesses where a real device, FIFO,
symbolic link, file-size limit or signal is involved: every problem is one `Error:` line on stderr
(exit 2 for usage errors, 1 for the rest), found before any training, and nothing is lost."""
import json
import os
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fastmlp import cli, training
from fastmlp.model import MLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XOR = ("train", "--data", "xor", "--hidden", "4", "--epochs", "1", "--threads", "1", "--quiet")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("FASTMLP_MIRROR", raising=False)
    monkeypatch.delenv("FASTMLP_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)


def run(*args, code, timeout=300, preexec=None):
    """`python -m fastmlp.cli ARGS` in a subprocess; checks the exit code and that stderr ends with
    exactly one `Error:` line (when code != 0). Returns (stdout, the error line or None)."""
    proc = subprocess.run([sys.executable, "-m", "fastmlp.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=os.getcwd(), timeout=timeout, preexec_fn=preexec,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    if code == 0:
        return proc.stdout, None
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    return proc.stdout, errors[0]


def blobs_npz(path, n=40, d=3, test_width=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, 2, n)
    extra = {}
    if test_width is not None:
        extra = dict(X_test=rng.normal(size=(5, test_width)).astype(np.float32), y_test=np.zeros(5, int))
    np.savez(path, X=X, y=y, **extra)
    return path


# -- output targets ----------------------------------------------------------------------------------

def test_save_to_a_character_device_is_refused_before_training(tmp_path):
    dev = tmp_path / "dev"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:
        pytest.skip("mknod needs root")
    out, error = run(*XOR, "--save", dev, code=1)
    assert "cannot write --save" in error and "it is a character device, expected a regular file" in error
    assert "epoch" not in out
    assert stat.S_ISCHR(os.lstat(dev).st_mode) and os.lstat(dev).st_rdev == os.makedev(1, 3)


def test_a_fifo_as_metrics_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _, error = run(*XOR, "--metrics", fifo, code=1, timeout=120)
    assert "cannot write --metrics" in error and "it is a FIFO (named pipe)" in error
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_save_through_a_symlink_replaces_its_target_and_keeps_its_mode(tmp_path):
    target = tmp_path / "models" / "m.npz"
    target.parent.mkdir()
    target.write_bytes(b"old")
    target.chmod(0o600)
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    run(*XOR, "--save", link, code=0)
    assert link.is_symlink() and MLP.load(target).sizes == [2, 4, 2]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_read_only_checkpoint_is_refused_even_as_root(tmp_path):
    f = tmp_path / "keep.npz"
    f.write_bytes(b"precious")
    f.chmod(0o444)
    _, error = run(*XOR, "--save", f, code=1)
    assert "read-only (mode 0444)" in error
    assert f.read_bytes() == b"precious" and stat.S_IMODE(f.stat().st_mode) == 0o444


def test_a_write_fault_names_the_path_and_keeps_the_last_checkpoint(tmp_path):
    ckpt = tmp_path / "ck.npz"
    run(*XOR, "--save", ckpt, code=0)
    before = ckpt.read_bytes()

    def limit():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    _, error = run("train", "--data", "xor", "--hidden", "200", "--epochs", "1", "--threads", "1", "--quiet",
                   "--save", ckpt, code=1, preexec=limit)
    assert f"cannot write {ckpt}: File too large" in error
    assert ckpt.read_bytes() == before and not list(tmp_path.glob(".*.part"))


# -- outputs that name inputs --------------------------------------------------------------------------

def test_outputs_that_name_inputs_are_usage_errors(tmp_path):
    victim = blobs_npz(tmp_path / "victim.npz")
    before = victim.read_bytes()
    base = ("train", "--data", victim, "--epochs", "1", "--quiet")
    _, error = run(*base, "--save", victim, code=2)
    assert "--save" in error and "would replace the input --data" in error
    link = tmp_path / "alias.npz"
    link.symlink_to(victim)
    run(*base, "--save", link, code=2)
    csv = tmp_path / "victim.csv"
    csv.write_text("0,1,2\n1,3,4\n0,5,6\n1,7,8\n")
    csv_before = csv.read_text()
    run("train", "--data", csv, "--epochs", "1", "--quiet", "--metrics", csv, code=2)
    # --save and --metrics naming one file through a link
    m = tmp_path / "m.npz"
    mlink = tmp_path / "m.jsonl"
    mlink.symlink_to(m)
    _, error = run(*base, "--save", m, "--metrics", mlink, code=2)
    assert "are the same file" in error
    assert victim.read_bytes() == before and csv.read_text() == csv_before
    assert not m.exists()
    # a file of a directory of IDX files given as --data
    d = tmp_path / "idx"
    d.mkdir()
    images = bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 5, 6])
    labels = bytes([0, 0, 8, 1, 0, 0, 0, 2, 0, 1])
    (d / "train-images-idx3-ubyte").write_bytes(images)
    (d / "train-labels-idx1-ubyte").write_bytes(labels)
    _, error = run("train", "--data", d, "--epochs", "1", "--save", d / "train-labels-idx1-ubyte", code=2)
    assert "would replace the input --data" in error
    assert (d / "train-labels-idx1-ubyte").read_bytes() == labels


def test_resume_from_and_save_to_one_checkpoint_stays_allowed(tmp_path):
    ckpt = tmp_path / "ck.npz"
    run(*XOR, "--save", ckpt, code=0)
    run("train", "--resume", ckpt, "--save", ckpt, "--epochs", "2", "--quiet", code=0)
    assert MLP.load(ckpt).sizes == [2, 4, 2]
    _, error = run("train", "--resume", ckpt, "--metrics", ckpt, "--epochs", "3", "--quiet", code=2)
    assert "--metrics" in error and "--resume" in error


# -- absurd options --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (("--hidden", "\u00b2"), "--hidden"),
    (("--hidden", "1000000000000000000000000000000"), "--hidden"),
    (("--val-split", "nan"), "--val-split"),
    (("--lr", "inf"), "--lr"),
    (("--momentum", "nan"), "--momentum"),
    (("--weight-decay", "nan"), "--weight-decay"),
    (("--batch-size", str(10**30)), "--batch-size"),
    (("--epochs", str(10**30)), "--epochs"),
    (("--seed", str(10**30)), "--seed"),
])
def test_absurd_options_are_usage_errors(args, fragment):
    result = CliRunner().invoke(cli.main, ["train", "--data", "xor", *args])
    assert result.exit_code == 2, result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and fragment in error


def test_bench_warmup_inf_is_a_usage_error():
    result = CliRunner().invoke(cli.main, ["bench", "--warmup", "inf"])
    assert result.exit_code == 2 and "--warmup" in result.stderr


# -- data ---------------------------------------------------------------------------------------------------

def test_a_stray_label_is_a_class_of_its_own(tmp_path):
    f = tmp_path / "d.csv"
    # Labels of the user's own data become classes (the label mapping of issue 13): a stray label is
    # one more class, not a 1,000,001-unit output layer.
    f.write_text("0,1,2\n1,3,4\n2,5,6\n1000000,7,8\n0,1,1\n1,2,2\n2,3,3\n1000000,4,4\n")
    ckpt = tmp_path / "ck.npz"
    run("train", "--data", f, "--epochs", "1", "--quiet", "--save", ckpt, code=0)
    assert MLP.load(ckpt).sizes[-1] == 4


def test_the_test_split_is_checked_before_the_first_epoch(tmp_path):
    f = blobs_npz(tmp_path / "d.npz", test_width=7)
    ckpt = tmp_path / "ck.npz"
    out, error = run("train", "--data", f, "--epochs", "1", "--save", ckpt, code=1)
    assert "test" in error and "7" in error
    assert "epoch 1/1" not in out and not ckpt.exists()


def test_npz_members_that_are_not_arrays_are_one_line_errors(tmp_path):
    import zipfile
    data = tmp_path / "d.npz"
    with zipfile.ZipFile(data, "w") as z:
        z.writestr("X.npy", b"raw bytes")
        z.writestr("y.npy", b"\x80\x04K\x01.")
    _, error = run("train", "--data", data, "--epochs", "1", code=1)
    assert "array 'X' in" in error and "is not a NumPy array" in error
    model = tmp_path / "m.npz"
    run(*XOR, "--save", model, code=0)
    with zipfile.ZipFile(tmp_path / "bad-model.npz", "w") as z:
        z.writestr("params.npy", b"raw")
        z.writestr("meta.npy", b"raw")
    for args in (("evaluate", tmp_path / "bad-model.npz", "--data", "xor"),
                 ("predict", tmp_path / "bad-model.npz", data),
                 ("predict", model, data),
                 ("train", "--resume", tmp_path / "bad-model.npz")):
        _, error = run(*args, code=1)
        assert "is not a NumPy array" in error


def test_evaluate_of_an_npy_file_says_what_it_is(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros(3))
    _, error = run("evaluate", tmp_path / "m.npy", "--data", "xor", code=1)
    assert "holds a single array (a .npy file), expected a model" in error


def test_download_synthetic_digits_into_an_unusable_cache_fails(tmp_path):
    (tmp_path / "file").write_text("x")
    _, error = run("datasets", "download", "synthetic-digits", "--data-dir", tmp_path / "file" / "sub", code=1)
    assert "cannot cache synthetic-digits" in error


# -- Ctrl-C -------------------------------------------------------------------------------------------

def test_ctrl_c_during_the_last_epochs_checkpoint_save_exits_130(tmp_path, monkeypatch):
    # A real SIGINT, sent while the last epoch's checkpoint is being written.
    original = training.Trainer.save_checkpoint
    sent = []

    def save_and_ctrl_c(self, path, extra_meta=None):
        if self.epoch == 2 and not sent:
            sent.append(path)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, path, extra_meta)

    monkeypatch.setattr(training.Trainer, "save_checkpoint", save_and_ctrl_c)
    ckpt = tmp_path / "ck.npz"
    result = CliRunner().invoke(cli.main, ["train", "--data", "xor", "--hidden", "4", "--epochs", "2",
                                           "--threads", "1", "--save", str(ckpt), "--json"])
    assert sent and result.exit_code == 130, result.output
    assert "interrupted at the end of epoch 2/2" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["interrupted"] is True
    assert training.Trainer.from_checkpoint(ckpt)[0].epoch == 2
