"""Distributed training with a real MPI: `mpiexec -n 2` in subprocesses, each rank on 1 thread.

Skipped when mpi4py or mpiexec is missing (CI installs both: `pip install -e '.[test,mpi]'`)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

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
print(json.dumps({"rank": rank, "params": net.params.tolist(), "hash": tr._dist.parameter_hash(tr)
                  if comm is not None else None, "loss": tr.history["loss"][-1]}))
"""


def test_python_api_on_two_ranks_equals_one_process(tmp_path):
    # batch 3 of the 4 xor samples: slices of 2 and 1, then 1 and 0 (an empty slice every epoch)
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    one = subprocess.run([sys.executable, str(script), "single"], capture_output=True, text=True, env=_env(),
                         timeout=300)
    assert one.returncode == 0, one.stderr
    ref = json.loads(one.stdout.strip().splitlines()[-1])
    two = mpirun(2, [str(script), "mpi"], tmp_path)
    assert two.returncode == 0, two.stderr
    rows = sorted((json.loads(line) for line in two.stdout.splitlines() if line.startswith("{")),
                  key=lambda r: r["rank"])
    assert [r["rank"] for r in rows] == [0, 1]
    assert rows[0]["params"] == rows[1]["params"] and rows[0]["hash"] == rows[1]["hash"]
    np.testing.assert_allclose(rows[0]["params"], ref["params"], rtol=0, atol=1e-12)
    assert abs(rows[0]["loss"] - ref["loss"]) < 1e-12
