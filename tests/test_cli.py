"""The `fastmlp` command line: every command, every documented error (one line, exit 2 for usage
errors, 1 for the rest, no traceback), Ctrl-C with checkpoint and bit-identical resume.

Most tests run in process with click's CliRunner on tiny data in tmp_path (one Numba thread); a few
run `python -m fastmlp.cli` in a subprocess (the fast --help, Ctrl-C by SIGINT)."""
import gzip
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from fastmlp import cli, training
from fastmlp.commands import common as cli_common, info as cli_info
from fastmlp.model import MLP
from fastmlp.training import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE = ("--threads", "1")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Nothing is read from or written to the real home; relative paths land in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("FASTMLP_MIRROR", raising=False)
    monkeypatch.delenv("FASTMLP_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)


def invoke(*args, code=0):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exit_code != code:
        raise AssertionError(f"fastmlp {' '.join(map(str, args))}: exit {result.exit_code}, expected {code}\n"
                             f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}")
    if code == 0:
        assert result.exception is None
    return result


def fails(args, code, *fragments):
    """The command exits with `code` and ends stderr with one `Error: ...` line holding `fragments`."""
    result = invoke(*args, code=code)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # no unexpected exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return result


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def blobs(n, k=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small data files and a model trained on them by the CLI (3 classes, 8 features)."""
    d = tmp_path_factory.mktemp("cli-data")
    X, y = blobs(240)
    Xt, yt = blobs(60, seed=1)
    np.savez(d / "blobs.npz", X=X, y=y, X_test=Xt, y_test=yt)
    np.savez(d / "train-only.npz", X=X, y=y)
    np.savetxt(d / "blobs.csv", np.column_stack([y, X]), delimiter=",", fmt="%.6g",
               header="label," + ",".join(f"f{i}" for i in range(8)), comments="")
    X4, y4 = blobs(80, k=4, seed=2)
    np.savez(d / "four-classes.npz", X=X4, y=y4)
    np.savez(d / "wide.npz", X=np.zeros((10, 5), np.float32), y=np.zeros(10, np.int64))
    model = d / "model.npz"
    invoke("train", "--data", d / "blobs.npz", "--hidden", "16", "--epochs", "5", "--lr", "0.05",
           "--save", model, "--quiet", *ONE)
    return {"dir": d, "blobs": d / "blobs.npz", "train_only": d / "train-only.npz", "csv": d / "blobs.csv",
            "four": d / "four-classes.npz", "wide": d / "wide.npz", "model": model, "X_test": Xt, "y_test": yt}


# -- entry point, help, version -------------------------------------------------------------------

def test_version():
    assert invoke("--version").stdout.strip() == "fastmlp 0.1.0"


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["datasets"],
                                     ["datasets", "list"], ["datasets", "download"], ["datasets", "verify"],
                                     ["datasets", "path"], ["plot"], ["info"], ["bench"]])
def test_every_command_has_help_with_an_example(command):
    out = invoke(*command, "--help").stdout
    assert "Usage: fastmlp" in out
    assert "Example" in out
    assert "fastmlp " + " ".join(command) in out


def test_a_group_without_a_command_shows_its_help():
    for group in ([], ["datasets"]):
        result = invoke(*group, code=2)
        assert result.stderr.startswith(f"Usage: {' '.join(['fastmlp'] + group)} [OPTIONS] COMMAND")
        assert "Commands:" in result.stderr and "Error" not in result.stderr


def test_help_is_instant_and_imports_neither_numpy_nor_numba():
    code = (
        "import json, sys, time\n"
        "t = time.perf_counter()\n"
        "import fastmlp.cli as c\n"
        "for args in (['--help'], ['train', '--help'], ['datasets', 'list', '--help']):\n"
        "    try:\n"
        "        c.main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'modules': [m for m in sys.modules\n"
        "    if m.split('.')[0] in ('numpy', 'numba', 'llvmlite') or m in ('fastmlp.model', 'fastmlp.bench')]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["modules"] == []
    assert report["seconds"] < 2.0  # about 0.1 s; generous for a loaded machine
    assert "bench" in out.stdout  # listed, without importing fastmlp.bench


def test_installed_script_and_python_m(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "fastmlp")
    if os.path.exists(script):
        out = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "fastmlp 0.1.0"
    out = subprocess.run([sys.executable, "-m", "fastmlp.cli", "train", "--epochs", "0"], capture_output=True,
                         text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "Error: Invalid value for '--epochs': 0 is not in the range x>=1. (see 'fastmlp train --help')"]


# -- train ----------------------------------------------------------------------------------------

def test_train_xor_readme_example():
    result = invoke("train", "--data", "xor", "--epochs", "200", "--lr", "0.5", "--hidden", "8",
                    "--activation", "tanh", "--batch-size", "4", *ONE)
    out = result.stdout
    assert out.startswith("training 2-8-2 (tanh, softmax output, ce loss, sgd lr 0.5, batch 4) on xor")
    assert "epoch 200/200" in out
    assert "test accuracy 100.00%  (loss" in out


def test_train_json_output(files):
    result = invoke("train", "--data", files["blobs"], "--hidden", "16,8", "--epochs", "3", "--optimizer",
                    "adam", "--lr", "0.01", "--json", *ONE)
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("epoch ")] == [
        "1/3", "2/3", "3/3"]
    r = last_json(result)
    for key in ("dataset", "epochs", "train_loss", "train_accuracy", "test_accuracy", "seconds",
                "samples_per_second", "val_loss", "val_accuracy", "sizes", "threads"):
        assert key in r
    assert r["dataset"] == str(files["blobs"])
    assert r["epochs"] == 3 and r["sizes"] == [8, 16, 8, 3] and r["threads"] == 1
    assert r["optimizer"] == "adam" and r["n_train"] == 240 and r["n_test"] == 60
    assert r["test_accuracy"] > 0.9 and r["val_accuracy"] is None
    assert r["seconds"] > 0 and r["samples_per_second"] > 0


def test_train_quiet_prints_no_progress(files):
    result = invoke("train", "--data", files["blobs"], "--epochs", "2", "--quiet", *ONE)
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith(("epoch ", "training "))] and result.stderr == ""
    assert lines[-1].startswith("test accuracy")  # the results, without the progress
    result = invoke("train", "--data", files["blobs"], "--epochs", "2", "--quiet", "--json", *ONE)
    assert len(result.stdout.strip().splitlines()) == 1
    assert last_json(result)["epochs"] == 2


def test_train_csv_has_no_test_split(files):
    result = invoke("train", "--data", files["csv"], "--epochs", "2", "--json", *ONE)
    r = last_json(result)
    assert r["test_accuracy"] is None and r["n_train"] == 240
    assert "no test split" in result.stderr
    assert r["notes"] and "no test split" in r["notes"][0]


def test_val_split_and_metrics_file(files, tmp_path):
    metrics = tmp_path / "run.jsonl"
    args = ("train", "--data", files["blobs"], "--epochs", "4", "--val-split", "0.25", "--metrics", metrics,
            "--json", *ONE)
    r = last_json(invoke(*args))
    assert (r["n_train"], r["n_val"]) == (180, 60)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert all(row["val_accuracy"] is not None and row["epochs"] == 4 for row in rows)
    assert rows[-1]["val_accuracy"] == r["val_accuracy"]
    # the split and training are deterministic; --metrics appends
    assert last_json(invoke(*args))["val_loss"] == r["val_loss"]
    assert len(metrics.read_text().splitlines()) == 8


def test_progress_bar_on_a_terminal(files, monkeypatch):
    monkeypatch.setattr(cli_common, "_isatty", lambda stream: True)
    monkeypatch.setattr(training, "MAX_CHUNK_SAMPLES", 64)
    result = invoke("train", "--data", files["blobs"], "--epochs", "2", *ONE)
    assert "\r" in result.stderr and "epoch 1/2 [" in result.stderr and "samples/s" in result.stderr
    assert "epoch 2/2  loss" in result.stdout  # the lines per epoch stay on stdout


def test_save_writes_a_checkpoint_with_the_run(files, tmp_path):
    ckpt = tmp_path / "ck.npz"
    invoke("train", "--data", files["blobs"], "--epochs", "2", "--val-split", "0.1", "--save", ckpt, *ONE)
    trainer, meta = Trainer.from_checkpoint(ckpt)
    assert trainer.epoch == 2 and trainer.position == 0
    run = meta["run"]
    assert run["dataset"] == str(files["blobs"]) and run["epochs"] == 2 and run["threads"] == 1
    assert run["val_split"] == 0.1 and run["input_dtype"] == "float32"
    assert not list(tmp_path.glob(".fastmlp-*"))


def test_resume_ends_bit_identical_to_an_uninterrupted_run(files, tmp_path):
    common = ("--data", files["blobs"], "--hidden", "12", "--optimizer", "momentum", "--lr", "0.02",
              "--val-split", "0.2", "--seed", "3", *ONE)
    invoke("train", *common, "--epochs", "4", "--save", tmp_path / "ref.npz", "--quiet")
    invoke("train", *common, "--epochs", "2", "--save", tmp_path / "part.npz", "--quiet")
    result = invoke("train", "--resume", tmp_path / "part.npz", "--epochs", "4", "--save", tmp_path / "end.npz")
    assert result.stdout.startswith("resuming")
    assert "epoch 3/4" in result.stdout and "epoch 1/4" not in result.stdout
    end, ref = MLP.load(tmp_path / "end.npz"), MLP.load(tmp_path / "ref.npz")
    assert np.array_equal(end.params, ref.params)
    trainer, _ = Trainer.from_checkpoint(tmp_path / "end.npz")
    assert trainer.history["epoch"] == [1, 2, 3, 4]
    # agreeing explicit options are fine; a finished run has nothing to train
    result = invoke("train", "--resume", tmp_path / "end.npz", "--hidden", "12", "--seed", "3", "--lr", "0.02")
    assert "nothing to train" in result.stdout and "test accuracy" in result.stdout


def test_ctrl_c_in_process_saves_a_checkpoint_and_exits_130(files, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "MAX_CHUNK_SAMPLES", 64)  # 4 chunks per epoch of 240 samples
    common = ("--data", files["blobs"], "--epochs", "3", *ONE)
    invoke("train", *common, "--save", tmp_path / "ref.npz", "--quiet")
    original = cli_common.Progress.update
    sent = []

    def ctrl_c(self, info):  # as if the user pressed Ctrl-C during the first chunk
        if not sent:
            sent.append(info)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, info)

    monkeypatch.setattr(cli_common.Progress, "update", ctrl_c)
    ckpt = tmp_path / "ck.npz"
    result = invoke("train", *common, "--save", ckpt, "--metrics", tmp_path / "m.jsonl", "--json", code=130)
    assert sent
    message = result.stderr.strip().splitlines()[-1]
    assert message == (f"interrupted at epoch 1, 64/240 samples; checkpoint saved to {ckpt}; resume with: "
                       f"fastmlp train --resume {ckpt} --save {ckpt} --metrics {tmp_path / 'm.jsonl'}")
    r = last_json(result)
    assert r["interrupted"] is True and r["position"] == 64 and r["checkpoint"] == str(ckpt)
    assert not (tmp_path / "m.jsonl").exists()  # no epoch finished
    monkeypatch.setattr(cli_common.Progress, "update", original)
    invoke("train", "--resume", ckpt, "--save", ckpt, "--metrics", tmp_path / "m.jsonl", "--quiet")
    assert np.array_equal(MLP.load(ckpt).params, MLP.load(tmp_path / "ref.npz").params)
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 3

    # without --save: nothing to resume from, and it says so
    sent.clear()
    monkeypatch.setattr(cli_common.Progress, "update", ctrl_c)
    result = invoke("train", *common, code=130)
    assert "no checkpoint was saved (give --save PATH" in result.stderr


def test_ctrl_c_in_a_subprocess_then_resume_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (20000, 784), dtype=np.uint8)
    y = (X[:, :16].sum(axis=1) // 200 % 10).astype(np.int64)
    np.savez(tmp_path / "big.npz", X=X, y=y)
    args = ["train", "--data", str(tmp_path / "big.npz"), "--hidden", "32", "--epochs", "15", *ONE]
    ckpt = tmp_path / "ck.npz"
    proc = subprocess.Popen([sys.executable, "-m", "fastmlp.cli", *args, "--save", str(ckpt)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/15"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted at " in err and f"checkpoint saved to {ckpt}" in err
    assert f"resume with: fastmlp train --resume {ckpt} --save {ckpt}" in err
    stopped, _ = Trainer.from_checkpoint(ckpt)
    assert 1 <= stopped.epoch < 15

    invoke("train", "--resume", ckpt, "--save", ckpt, "--quiet")
    invoke(*args, "--save", tmp_path / "ref.npz", "--quiet")
    assert np.array_equal(MLP.load(ckpt).params, MLP.load(tmp_path / "ref.npz").params)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic-digits")


def test_default_data_set_train_and_evaluate(synthetic_dir, monkeypatch):
    monkeypatch.setenv("FASTMLP_DATA", str(synthetic_dir))  # generated once per session
    r = last_json(invoke("train", "--epochs", "1", "--hidden", "32", "--json", "--save", "digits.npz", *ONE))
    assert r["dataset"] == "synthetic-digits" and r["sizes"] == [784, 32, 10]
    assert r["n_train"] == 60000 and r["n_test"] == 10000 and r["test_accuracy"] > 0.85
    e = last_json(invoke("evaluate", "digits.npz", "--json", *ONE))
    assert e["dataset"] == "synthetic-digits" and e["split"] == "test" and e["n"] == 10000
    assert e["accuracy"] == r["test_accuracy"]


# -- train errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--hidden", "10,,5"], "'--hidden'"),
    (["--hidden", "abc"], "'--hidden'"),
    (["--hidden", "-3"], "'--hidden'"),
    (["--val-split", "1"], "'--val-split'"),
    (["--val-split", "-0.1"], "'--val-split'"),
    (["--epochs", "0"], "'--epochs'"),
    (["--batch-size", "0"], "'--batch-size'"),
    (["--lr", "0"], "'--lr'"),
    (["--lr", "nan"], "'--lr'"),
    (["--threads", "0"], "'--threads'"),
    (["--threads", "100000"], "'--threads'"),
    (["--optimizer", "rmsprop"], "'--optimizer'"),
    (["--output", "identity"], "--loss ce needs --output softmax"),
    (["--bogus"], "No such option"),
])
def test_bad_options_are_usage_errors(args, fragment):
    result = fails(["train", "--data", "xor", *args], 2, fragment)
    assert "epoch" not in result.stdout


def test_val_split_leaving_no_sample_is_a_usage_error():
    fails(["train", "--data", "xor", "--val-split", "0.1", *ONE], 2, "--val-split 0.1 holds out 0 of 4")


def test_unknown_data_set_lists_the_known_ones():
    fails(["train", "--data", "mnits"], 2, "unknown dataset 'mnits'", "xor, synthetic-digits, mnist, fashion-mnist")
    fails(["datasets", "download", "cifar"], 2, "unknown dataset 'cifar'", "fashion-mnist")


def test_missing_data_file_is_named(tmp_path):
    fails(["train", "--data", "nowhere/points.npz", *ONE], 1, "missing file", "points.npz")
    fails(["train", "--data", tmp_path, *ONE], 1, "train-images-idx3-ubyte", "put the IDX files")


def test_missing_mnist_without_network(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FASTMLP_MIRROR", f"http://127.0.0.1:{port}/")
    fails(["train", "--data", "mnist", "--quiet", *ONE], 1, "could not download", "check the network",
          "put the files in")
    fails(["datasets", "download", "mnist", "--quiet"], 1, "could not download")


def test_checksum_mismatch_on_download_and_verify(tmp_path, monkeypatch):
    class WrongFiles(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"these are not the bytes you are looking for"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WrongFiles)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("FASTMLP_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
        fails(["datasets", "download", "mnist", "--quiet"], 1, "bad download", "size mismatch")
    finally:
        server.shutdown()
        server.server_close()
    assert not any((tmp_path / "data" / "mnist").iterdir())  # the bad download was deleted

    mnist = tmp_path / "data" / "mnist"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (mnist / name).write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x07"))
    fails(["datasets", "verify", "mnist"], 1, "checksum mismatch", "train-images-idx3-ubyte.gz",
          "fastmlp datasets download mnist")


def _idx_header(code, dims):
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def test_corrupt_truncated_and_non_idx_files(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    labels = _idx_header(0x08, [3]) + bytes([1, 2, 3])
    (idx / "train-labels-idx1-ubyte").write_bytes(labels)
    (idx / "train-images-idx3-ubyte").write_bytes(b"GIF89a not an IDX file at all")
    fails(["train", "--data", idx, *ONE], 1, "not an IDX file", "train-images-idx3-ubyte")
    (idx / "train-images-idx3-ubyte").write_bytes(_idx_header(0x08, [3, 28, 28]) + bytes(100))
    fails(["train", "--data", idx, *ONE], 1, "truncated IDX file", "expected 2368")
    (idx / "train-images-idx3-ubyte").unlink()
    whole = gzip.compress(_idx_header(0x08, [3, 28, 28]) + bytes(3 * 784))
    (idx / "train-images-idx3-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    fails(["train", "--data", idx, *ONE], 1, "corrupt gzip data", "truncated")
    # the same through a known name, from $FASTMLP_DATA/mnist
    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    (mnist / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    (mnist / "train-labels-idx1-ubyte").write_bytes(labels)
    fails(["train", "--data", "mnist", *ONE], 1, "not an IDX file", str(mnist))


def test_non_integer_labels(tmp_path):
    np.savez(tmp_path / "soft.npz", X=np.zeros((4, 2), np.float32), y=np.array([0, 0.5, 1, 1]))
    fails(["train", "--data", tmp_path / "soft.npz", *ONE], 1, "labels of", "not integers")


@pytest.mark.parametrize("where", ["missing-dir/ck.npz", "afile/ck.npz"])
def test_unwritable_save_path_is_refused_before_training(tmp_path, where):
    (tmp_path / "afile").write_text("a file, not a directory")
    result = fails(["train", "--data", "xor", "--save", where, *ONE], 1, "cannot write --save", where)
    assert result.stdout == ""  # nothing trained, nothing loaded
    assert not (tmp_path / "missing-dir").exists() and not list(tmp_path.glob(".fastmlp-*"))
    fails(["train", "--data", "xor", "--metrics", where.replace(".npz", ".jsonl"), *ONE], 1,
          "cannot write --metrics")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        fails(["train", "--data", "xor", "--save", ro / "ck.npz", *ONE], 1, "cannot write --save")
    finally:
        ro.chmod(0o755)


def test_save_path_that_is_a_directory(tmp_path):
    fails(["train", "--data", "xor", "--save", tmp_path, *ONE], 2, "'--save'", "is a directory")


def test_divergence_names_epoch_and_step(tmp_path):
    result = fails(["train", "--data", "xor", "--lr", "1e6", "--loss", "mse", "--output", "identity",
                    "--epochs", "50", "--save", "ck.npz", *ONE], 1,
                   "training diverged", "at epoch", "step", "lower learning rate", "(--lr)")
    trainer, _ = Trainer.from_checkpoint(tmp_path / "ck.npz")  # the last finite epoch is kept
    assert f"ck.npz holds the checkpoint of epoch {trainer.epoch}" in result.stderr
    assert np.isfinite(trainer.net.params).all()


def test_resume_errors(files, tmp_path):
    model = files["model"]
    fails(["train", "--resume", model, "--hidden", "50", "--lr", "0.3"], 2,
          "--hidden 50, --lr 0.3 conflicts with the checkpoint", "(hidden 16, lr 0.05)", "leave these options out")
    fails(["train", "--resume", model, "--activation", "tanh"], 2, "--activation tanh conflicts")
    fails(["train", "--resume", model, "--epochs", "3"], 2, "--epochs 3", "at least 5")
    fails(["train", "--resume", model, "--data", files["four"], *ONE], 1, "labels of", "include 3",
          "not one of the model's 3 classes")
    fails(["train", "--resume", model, "--data", files["wide"], *ONE], 1, "5 features", "takes 8 inputs")
    MLP([8, 3], seed=0).save(tmp_path / "plain.npz")
    fails(["train", "--resume", tmp_path / "plain.npz"], 1, "no training state")
    fails(["train", "--resume", tmp_path / "none.npz"], 1, "none.npz does not exist")


# -- evaluate -------------------------------------------------------------------------------------

def test_evaluate_text_and_json(files):
    out = invoke("evaluate", files["model"], *ONE).stdout
    assert "on " + str(files["blobs"]) + ", test split, 60 samples" in out
    assert "class  samples  accuracy" in out and "confusion matrix (rows: true class" in out
    r = last_json(invoke("evaluate", files["model"], "--json", *ONE))
    net = MLP.load(files["model"])
    loss, accuracy = net.evaluate(files["X_test"], files["y_test"], loss="ce")
    assert r["loss"] == pytest.approx(loss) and r["accuracy"] == accuracy
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 60 and np.trace(cm) == round(accuracy * 60)
    assert r["class_counts"] == np.bincount(files["y_test"], minlength=3).tolist()
    assert len(r["per_class_accuracy"]) == 3
    # another data set and split
    r = last_json(invoke("evaluate", files["model"], "--data", files["csv"], "--split", "train", "--json", *ONE))
    assert r["n"] == 240 and r["split"] == "train"


def test_evaluate_errors(files, tmp_path):
    fails(["evaluate", files["model"], "--data", files["four"], *ONE], 1, "include 3",
          "not one of the model's 3 classes (0, 1, 2)")
    fails(["evaluate", files["model"], "--data", files["wide"], *ONE], 1, "5 features per sample",
          "takes 8 inputs")
    fails(["evaluate", files["model"], "--loss", "ce", "--data", "nope"], 2, "unknown dataset 'nope'")
    MLP([8, 3], seed=0).save(tmp_path / "plain.npz")
    fails(["evaluate", tmp_path / "plain.npz"], 2, "give --data", "does not record the data set")
    fails(["evaluate"], 2, "Missing argument 'MODEL'")


def _rewritten_model(files, tmp_path, name, **changes):
    with np.load(files["model"], allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    meta = json.loads(str(arrays["meta"]))
    meta.update(changes.pop("meta", {}))
    arrays["meta"] = np.array(json.dumps(meta))
    arrays.update(changes)
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_bad_checkpoints_are_one_line_errors(files, tmp_path):
    obj = _rewritten_model(files, tmp_path, "obj.npz", optimizer_m=np.array([object()], dtype=object))
    fails(["evaluate", obj, *ONE], 1, "object arrays", "allow_pickle=False")
    fails(["train", "--resume", obj], 1, "object arrays")
    params = np.load(files["model"])["params"]
    shape = _rewritten_model(files, tmp_path, "shape.npz", params=params[:10])
    fails(["evaluate", shape, *ONE], 1, "parameters have shape (10,)", "[8, 16, 3]")
    newer = _rewritten_model(files, tmp_path, "v99.npz", meta={"format_version": 99})
    fails(["predict", newer, files["csv"]], 1, "format version 99 is newer", "upgrade fastmlp")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 but then nothing")
    fails(["evaluate", tmp_path / "junk.npz"], 1, "junk.npz")


# -- predict --------------------------------------------------------------------------------------

def test_predict_npy_npz_csv(files, tmp_path):
    net = MLP.load(files["model"])
    X = files["X_test"][:7]
    expected = net.predict(X).tolist()
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x.npz", X=X, other=np.arange(3))
    np.savez(tmp_path / "only.npz", rows=X)
    np.savetxt(tmp_path / "header.csv", X, delimiter=",", header=",".join(f"f{i}" for i in range(8)),
               comments="", fmt="%.9g")
    np.savetxt(tmp_path / "plain.csv", X, delimiter=",", fmt="%.9g")
    for name in ("x.npy", "x.npz", "only.npz", "header.csv", "plain.csv"):
        r = last_json(invoke("predict", files["model"], tmp_path / name, "--json", *ONE))
        assert r["labels"] == expected, name
        assert r["n"] == 7
        assert np.allclose(np.sum(r["probabilities"], axis=1), 1.0, atol=1e-4)
    out = invoke("predict", files["model"], tmp_path / "x.npy", *ONE).stdout.splitlines()
    assert out[0].split()[:3] == ["sample", "label", "p(label)"] and len(out) == 8
    assert [int(line.split()[1]) for line in out[1:]] == expected
    np.save(tmp_path / "one.npy", X[0])  # a single sample
    assert last_json(invoke("predict", files["model"], tmp_path / "one.npy", "--json"))["labels"] == expected[:1]


def test_predict_uint8_pixels_given_as_csv(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.integers(0, 256, (60, 6), dtype=np.uint8)
    y = (X[:, 0] > 127).astype(np.int64)
    np.savez(tmp_path / "pixels.npz", X=X, y=y)
    invoke("train", "--data", tmp_path / "pixels.npz", "--epochs", "2", "--save", "px.npz", "--quiet", *ONE)
    np.savetxt(tmp_path / "pixels.csv", X, delimiter=",", fmt="%d")
    from_csv = last_json(invoke("predict", "px.npz", "pixels.csv", "--json", *ONE))
    np.save(tmp_path / "pixels.npy", X)
    from_npy = last_json(invoke("predict", "px.npz", "pixels.npy", "--json", *ONE))
    assert from_csv == dict(from_npy, input="pixels.csv")  # CSV pixel values are read as the uint8 pixels


def test_predict_errors(files, tmp_path):
    model = files["model"]
    np.save(tmp_path / "narrow.npy", np.zeros((3, 5), np.float32))
    fails(["predict", model, tmp_path / "narrow.npy"], 1, "5 features per sample", "takes 8 inputs")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    fails(["predict", model, tmp_path / "obj.npy"], 1, "object array")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 8)), b=np.zeros((2, 8)))
    fails(["predict", model, tmp_path / "two.npz"], 1, "holds arrays a, b", "named X")
    (tmp_path / "ragged.csv").write_text("1,2,3,4,5,6,7,8\n1,2,3\n")
    fails(["predict", model, tmp_path / "ragged.csv"], 1, "ragged CSV", "line 2")
    (tmp_path / "words.csv").write_text("1,2,3,4,5,6,7,8\n1,2,x,4,5,6,7,8\n")
    fails(["predict", model, tmp_path / "words.csv"], 1, "non-numeric value 'x'", "line 2")
    (tmp_path / "rows.txt").write_text("1,2\n")
    fails(["predict", model, tmp_path / "rows.txt"], 1, "unsupported input file type '.txt'")
    fails(["predict", model, tmp_path / "absent.npy"], 1, "missing input file", "absent.npy")
    fails(["predict", model], 2, "Missing argument 'INPUT'")


# -- datasets -------------------------------------------------------------------------------------

def test_datasets_list():
    out = invoke("datasets", "list").stdout
    for name in ("xor", "synthetic-digits", "mnist", "fashion-mnist"):
        assert name in out
    items = last_json(invoke("datasets", "list", "--json"))
    assert [d["name"] for d in items] == ["xor", "synthetic-digits", "mnist", "fashion-mnist"]
    assert items[1]["n_train"] == 60000


def test_datasets_path_verify_download(tmp_path):
    assert invoke("datasets", "path", "mnist").stdout.strip() == str(tmp_path / "data" / "mnist")
    assert invoke("datasets", "path", "MNIST", "--data-dir", "here").stdout.strip() == "here"
    result = invoke("datasets", "path", "xor")
    assert result.stdout == "" and "built in" in result.stderr
    assert "built in" in invoke("datasets", "verify", "xor").stdout
    assert "nothing to download" in invoke("datasets", "download", "xor").stdout
    out = invoke("datasets", "verify", "synthetic-digits").stdout  # not generated: says so, generates nothing
    assert out.count("not generated yet") == 2
    r = last_json(invoke("datasets", "verify", "synthetic-digits", "--json"))
    assert r["dataset"] == "synthetic-digits" and len(r["files"]) == 2
    fails(["datasets", "verify", "mnist"], 1, "missing file", "fastmlp datasets download mnist")
    fails(["datasets", "path", "points.npz"], 2, "unknown dataset")


# -- plot -----------------------------------------------------------------------------------------

def _metrics(tmp_path, files):
    path = tmp_path / "run.jsonl"
    invoke("train", "--data", files["blobs"], "--epochs", "3", "--val-split", "0.2", "--metrics", path,
           "--quiet", *ONE)
    return path


def test_plot_writes_an_image(files, tmp_path):
    pytest.importorskip("matplotlib")
    metrics = _metrics(tmp_path, files)
    out = invoke("plot", metrics, "--out", tmp_path / "curves.png").stdout
    assert out.strip() == f"wrote {tmp_path / 'curves.png'} (3 epochs)"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    invoke("plot", metrics)  # default: next to the metrics file
    assert (tmp_path / "run.png").exists()
    with open(metrics, "a") as f:  # a second run appended to the same file
        f.write(json.dumps({"epoch": 1, "loss": 0.5, "accuracy": 0.8}) + "\n")
    result = invoke("plot", metrics, "--out", tmp_path / "curves.svg")
    assert "holds 2 runs; plotting the last one (1 epochs)" in result.stderr
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")
    fails(["plot", metrics, "--out", tmp_path / "curves.xyz"], 2, "unknown image type 'xyz'")
    assert not list(tmp_path.glob(".fastmlp-*"))


def test_plot_bad_metrics(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "bad.jsonl").write_text('{"epoch": 1, "loss": 0.5}\nnot json\n')
    fails(["plot", tmp_path / "bad.jsonl"], 1, "bad.jsonl line 2 is not JSON")
    (tmp_path / "empty.jsonl").write_text("\n")
    fails(["plot", tmp_path / "empty.jsonl"], 1, "holds no epochs")
    fails(["plot", tmp_path / "none.jsonl"], 1, "missing metrics file")
    assert not (tmp_path / "bad.png").exists()


def test_plot_without_matplotlib(tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` raises ImportError
    (tmp_path / "run.jsonl").write_text('{"epoch": 1, "loss": 0.5, "accuracy": 0.8}\n')
    result = fails(["plot", tmp_path / "run.jsonl"], 1)
    assert result.stderr.strip() == "Error: matplotlib is not installed: pip install 'fastmlp[plot]'"


# -- info and bench -------------------------------------------------------------------------------

def test_info_text_and_json(monkeypatch):
    out = invoke("info").stdout
    for key in ("fastmlp:", "numpy:", "numba:", "llvmlite:", "click:", "python:", "threads:",
                "threading layer:", "cpu:", "numba cache:", "data cache:"):
        assert key in out
    r = last_json(invoke("info", "--json"))
    assert r["fastmlp"] == "0.1.0" and r["threading_layer"] in ("omp", "tbb", "workqueue")
    assert r["threads"] >= 1 and r["numba_num_threads"] >= r["threads"]
    assert isinstance(r["avx2"], bool) and isinstance(r["avx512f"], bool)
    assert r["data_cache_dir"].endswith(os.path.join("cache", "fastmlp"))
    monkeypatch.setattr(cli_info, "_threading_layer", lambda: "workqueue")
    result = invoke("info")
    assert "threading layer: workqueue" in result.stdout
    assert "warning: Numba's threading layer is 'workqueue'" in result.stderr and "45-90 us" in result.stderr


def test_bench_is_a_lazy_command(monkeypatch):
    assert "bench" in invoke("--help").stdout
    assert "Usage: fastmlp bench" in invoke("bench", "--help").stdout
    monkeypatch.setattr(cli.main, "commands", dict(cli.main.commands))
    monkeypatch.setitem(cli.COMMANDS, "broken", ("fastmlp.errors", "A command without register()."))
    monkeypatch.setitem(cli.COMMANDS, "absent", ("fastmlp._no_such_module", "Never listed."))
    out = invoke("--help").stdout
    assert "broken" in out and "absent" not in out
    fails(["broken"], 1, "`fastmlp broken` cannot be loaded", "no register")
    fails(["absent"], 2, "No such command 'absent'")
