"""Distributed training with a real MPI: `mpiexec -n 2` in subprocesses, each rank on 1 thread.

Skipped when mpi4py or mpiexec is missing (CI installs both: `pip install -e '.[test,mpi]'`)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.access(here, os.X_OK) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False

pytestmark = pytest.mark.skipif(not (HAVE_MPI4PY and MPIEXEC), reason="needs mpi4py and mpiexec (the mpi extra)")


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FASTMLP_TEST_FAIL_RANK", None)
    env.update(extra)
    return env


def mpirun(n, argv, cwd, timeout=300, **env):
    """`mpiexec -n n python argv...` -> CompletedProcess (text)."""
    cmd = [MPIEXEC, "-n", str(n), sys.executable, *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(**env), cwd=cwd)


API_SCRIPT = """
import sys, json
import numpy as np
import fastmlp
from fastmlp import datasets
comm = None
if sys.argv[1] == "mpi":
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
X, y = datasets.load("xor")
net = fastmlp.MLP([2, 8, 2], activation="tanh", dtype="float64", seed=1)
tr = fastmlp.Trainer(net, optimizer="momentum", lr=0.3, batch_size=3, threads=1, comm=comm)
tr.fit(X, y, 40, verbose=False)
rank = 0 if comm is None else comm.Get_rank()
with open(f"{sys.argv[1]}-{rank}.json", "w") as f:
    json.dump({"rank": rank, "params": net.params.tolist(), "hash": tr._dist.parameter_hash(tr)
               if comm is not None else None, "loss": tr.history["loss"][-1]}, f)
"""


def test_python_api_on_two_ranks_equals_one_process(tmp_path):
    # batch 3 of the 4 xor samples: slices of 2 and 1, then 1 and 0 (an empty slice every epoch)
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    one = subprocess.run([sys.executable, str(script), "single"], capture_output=True, text=True, env=_env(),
                         timeout=300, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    ref = json.loads((tmp_path / "single-0.json").read_text())
    two = mpirun(2, [str(script), "mpi"], tmp_path)
    assert two.returncode == 0, two.stderr
    rows = [json.loads((tmp_path / f"mpi-{r}.json").read_text()) for r in (0, 1)]
    assert rows[0]["params"] == rows[1]["params"] and rows[0]["hash"] == rows[1]["hash"]
    np.testing.assert_allclose(rows[0]["params"], ref["params"], rtol=0, atol=1e-12)
    assert abs(rows[0]["loss"] - ref["loss"]) < 1e-12


def cli(n, args, cwd, timeout=300, **env):
    """`fastmlp ARGS` on n MPI ranks (n = 0: one process without mpiexec)."""
    argv = ["-m", "fastmlp.cli", *args]
    if n == 0:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout,
                              env=_env(**env), cwd=cwd)
    return mpirun(n, argv, cwd, timeout=timeout, **env)


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


XOR = ["train", "--data", "xor", "--hidden", "8", "--activation", "tanh", "--epochs", "60", "--lr", "0.5",
       "--batch-size", "3", "--dtype", "float64", "--threads", "1", "--json", "--quiet"]


def test_cli_xor_on_two_ranks_equals_one_process(tmp_path):
    one = _json(cli(0, [*XOR, "--save", "one.npz"], tmp_path))
    two = _json(cli(2, [*XOR, "--save", "two.npz"], tmp_path))
    assert two["ranks"] == 2 and "ranks" not in one
    assert abs(two["train_loss"] - one["train_loss"]) < 1e-12
    a, b = (np.load(tmp_path / f)["params"] for f in ("one.npz", "two.npz"))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)


def test_cli_digits_on_two_ranks_equals_one_process(tmp_path):
    # synthetic digits, one epoch of 600 steps in float32: within float rounding of one process
    args = ["train", "--hidden", "32", "--epochs", "1", "--batch-size", "100", "--threads", "1", "--json",
            "--quiet"]
    one = _json(cli(0, [*args, "--save", "one.npz"], tmp_path))
    two = _json(cli(2, [*args, "--save", "two.npz"], tmp_path))
    assert two["ranks"] == 2
    assert abs(two["train_loss"] - one["train_loss"]) < 1e-5
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 2e-4  # at most 2 of 10,000 predictions
    a, b = (np.load(tmp_path / f)["params"] for f in ("one.npz", "two.npz"))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)


def test_cli_info_under_mpi(tmp_path):
    proc = cli(2, ["info", "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 1  # rank 0 alone
    assert rows[0]["mpi_world_size"] == 2 and "mpi4py" in rows[0]["mpi"]


def test_cli_usage_error_on_one_rank_stops_every_rank(tmp_path):
    # MPMD: rank 1 alone gets a bad option (a usage error); both ranks exit 2, one message
    good = [sys.executable, "-m", "fastmlp.cli", *XOR]
    bad = [sys.executable, "-m", "fastmlp.cli", *XOR, "--loss", "ce", "--output", "sigmoid"]
    proc = subprocess.run([MPIEXEC, "-n", "1", *good, ":", "-n", "1", *bad], capture_output=True, text=True,
                          timeout=120, env=_env(), cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0].startswith("Error: rank 1/2: ") and "--output" in errors[0]


def test_cli_exception_on_rank_one_ends_the_job(tmp_path):
    # a fault on one rank during training: without MPI_Abort rank 0 would wait in the Allreduce for
    # ever (the timeout fails the test); `rank 1/2:` names the rank
    proc = cli(2, ["train", "--hidden", "32", "--epochs", "3", "--threads", "1", "--quiet"], tmp_path, timeout=60,
               FASTMLP_TEST_FAIL_RANK="1")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "rank 1/2: RuntimeError: failure injected by FASTMLP_TEST_FAIL_RANK=1" in proc.stderr


def test_cli_sigint_saves_rank_zeros_checkpoint_and_one_process_resumes_it(tmp_path):
    args = ["train", "--hidden", "32", "--batch-size", "50", "--dtype", "float64", "--threads", "1"]
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "fastmlp.cli", *args, "--epochs", "50", "--save", "ck.npz"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=tmp_path)
    try:
        first = proc.stdout.readline()   # the announcement: the ranks are about to train
        assert "2 MPI ranks x 1 thread" in first, first
        proc.stdout.readline()           # the first epoch is done: Ctrl-C (mpiexec forwards it)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "checkpoint saved to ck.npz" in err and "resume with: fastmlp train --resume ck.npz" in err
    from fastmlp.model import load_npz
    _, meta, _ = load_npz(str(tmp_path / "ck.npz"))
    done = meta["training"]["epoch"]
    assert meta["training"]["world_size"] == 2 and 1 <= done < 50
    # one process finishes epoch done + 1, and equals one process that ran alone from the start
    target = str(done + 1)
    resumed = _json(cli(0, ["train", "--resume", "ck.npz", "--save", "ck.npz", "--epochs", target, "--json",
                            "--quiet"], tmp_path))
    alone = _json(cli(0, [*args, "--epochs", target, "--save", "alone.npz", "--json", "--quiet"], tmp_path))
    assert resumed["epochs"] == alone["epochs"] == done + 1
    a, b = (np.load(tmp_path / f)["params"] for f in ("alone.npz", "ck.npz"))
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    assert abs(resumed["train_loss"] - alone["train_loss"]) < 1e-12


def test_cli_sigusr1_stops_every_rank_with_a_checkpoint(tmp_path):
    # what `scancel --signal=USR1` and Open MPI deliver; MPICH's mpiexec forwards it to the ranks
    # no --threads: each rank takes its share of the CPUs it may run on
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "fastmlp.cli", "train", "--hidden", "32", "--epochs", "50",
           "--save", "ck.npz"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=tmp_path)
    import numba
    share = max(1, min(len(os.sched_getaffinity(0)) // 2, numba.config.NUMBA_NUM_THREADS))
    try:
        first = proc.stdout.readline()
        assert f"2 MPI ranks x {share} thread" in first, first
        proc.stdout.readline()
        proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.count("checkpoint saved to ck.npz") == 1
    assert (tmp_path / "ck.npz").exists()


def test_cli_distributed_off_trains_in_every_process_alone(tmp_path):
    proc = cli(2, [*XOR, "--distributed", "off"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('"train_loss"') == 2 and '"ranks"' not in proc.stdout
