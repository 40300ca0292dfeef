"""Data-parallel training (fastmlp.distributed) on simulated ranks: tests/fake_comm.py runs N ranks
as threads of this process, taking turns, with reductions in rank order.

One rank must give today's single-process trainer bit for bit; N ranks must stay within rounding
of it after every step (PyTorch's DDP tests compare the same way, _test_DDP_niter)."""
import os

import numpy as np
import pytest
from fake_comm import run_ranks

pytestmark = pytest.mark.usefixtures("one_numba_thread")

N_SAMPLES = 61   # batches of 10: the last has 1 sample, so with 2+ ranks some slices are empty
SIZES = [5, 8, 6, 3]
LR = {"sgd": 0.1, "momentum": 0.05, "adam": 0.01}
STEP_TOL = {"float32": 1e-6, "float64": 1e-12}


def _data(dtype):
    r = np.random.default_rng(11)
    return r.normal(size=(N_SAMPLES, SIZES[0])).astype(dtype), r.integers(0, SIZES[-1], N_SAMPLES)


def _run(fm, comm, optimizer, dtype, batch_size=10, epochs=2, **kw):
    """(params after every chunk and epoch, history, trainer) of one run."""
    X, y = _data(dtype)
    net = fm.MLP(SIZES, activation="tanh", dtype=dtype, seed=3)
    tr = fm.Trainer(net, optimizer=optimizer, lr=LR[optimizer], weight_decay=0.01, batch_size=batch_size,
                    seed=4, threads=1, comm=comm, **kw)
    snaps = []
    tr.fit(X, y, epochs, verbose=False, callback=lambda info: snaps.append(net.params.copy()))
    return snaps, tr.history, tr


@pytest.fixture
def one_step_chunks(fm, monkeypatch):
    # a chunk of one minibatch, so that the callback sees the parameters after every step
    from fastmlp import training
    monkeypatch.setattr(training, "MAX_CHUNK_SAMPLES", 1)


def test_slices_cover_the_batch_contiguously():
    from fastmlp.distributed import slice_bounds
    for n in (0, 1, 2, 7, 10, 33):
        for size in (1, 2, 3, 7):
            bounds = [slice_bounds(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(bounds[r][1] == bounds[r + 1][0] for r in range(size - 1))
            lengths = [b - a for a, b in bounds]
            assert max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_one_rank_is_bit_identical_to_one_process(fm, one_step_chunks, optimizer, dtype):
    ref, ref_hist, _ = _run(fm, None, optimizer, dtype)
    (snaps, hist, _), = run_ranks(1, lambda comm: _run(fm, comm, optimizer, dtype))
    assert len(snaps) == len(ref) == 16  # 14 steps, 2 ends of epoch
    for a, b in zip(ref, snaps):
        assert np.array_equal(a, b)
    assert hist["loss"] == ref_hist["loss"] and hist["accuracy"] == ref_hist["accuracy"]


@pytest.mark.parametrize("size", [2, 3, 7])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_n_ranks_equal_one_process_after_every_step(fm, one_step_chunks, optimizer, dtype, size):
    ref, ref_hist, _ = _run(fm, None, optimizer, dtype)
    results = run_ranks(size, lambda comm: _run(fm, comm, optimizer, dtype))
    snaps = results[0][0]
    assert len(snaps) == len(ref) == 16  # 14 steps, 2 ends of epoch
    for step, (a, b) in enumerate(zip(ref, snaps)):
        diff = float(np.abs(a.astype(np.float64) - b).max())
        assert diff <= STEP_TOL[dtype], f"step {step + 1}: {diff}"
    for other in results[1:]:  # every rank holds the same parameters, bit for bit
        assert all(np.array_equal(a, b) for a, b in zip(snaps, other[0]))
    np.testing.assert_allclose(results[0][1]["loss"], ref_hist["loss"], rtol=STEP_TOL[dtype])
    assert results[0][1]["accuracy"] == ref_hist["accuracy"]


def test_a_rank_with_an_empty_slice_in_every_step(fm):
    # batch 2 over 3 ranks: rank 2's slice is always empty, and it still takes every step
    ref, _, _ = _run(fm, None, "momentum", "float64", batch_size=2, epochs=1)
    results = run_ranks(3, lambda comm: _run(fm, comm, "momentum", "float64", batch_size=2, epochs=1))
    np.testing.assert_allclose(results[2][0][-1], ref[-1], rtol=0, atol=1e-12)
    assert results[2][2].steps == results[0][2].steps == 31


def test_the_summed_gradient_starts_on_a_cache_line(fm):
    # the optimizer step reads it with 64-byte vector loads (see test_train.py); 30,403 float64
    # parameters (and the flag): large enough for a memory mapping of its own
    from fastmlp._buffers import LINE_BYTES
    X = np.random.default_rng(0).normal(size=(20, 300))

    def body(comm):
        tr = fm.Trainer(fm.MLP([300, 100, 3], dtype="float64"), optimizer="adam", batch_size=10, threads=1, comm=comm)
        tr.fit(X, np.arange(20) % 3, 1, verbose=False)
        return tr._dist._gbuf.ctypes.data % LINE_BYTES, tr._dist._gbuf.size
    assert run_ranks(2, body) == [(0, 30404), (0, 30404)]


def test_rank_zero_broadcasts_its_parameters(fm):
    X, y = _data("float64")

    def body(comm):
        # each rank starts from other weights; rank 0's must win
        net = fm.MLP(SIZES, activation="tanh", dtype="float64", seed=3 + comm.Get_rank())
        tr = fm.Trainer(net, lr=0.1, weight_decay=0.01, batch_size=10, seed=4, threads=1, comm=comm)
        tr.fit(X, y, 1, verbose=False)
        return net.params
    ref, _, _ = _run(fm, None, "sgd", "float64", epochs=1)
    out = run_ranks(2, body)
    np.testing.assert_allclose(out[1], ref[-1], atol=1e-12)
    assert np.array_equal(out[0], out[1])


def test_ranks_with_other_hyperparameters_fail_together(fm):
    X, y = _data("float64")

    def body(comm):
        net = fm.MLP(SIZES, activation="tanh", dtype="float64", seed=3)
        tr = fm.Trainer(net, lr=0.1 * (1 + comm.Get_rank()), batch_size=10, threads=1, comm=comm)
        with pytest.raises(ValueError, match=r"rank 1 of 2 has other hyperparameters than rank 0"):
            tr.fit(X, y, 1, verbose=False)
        return True
    assert run_ranks(2, body) == [True, True]


def test_a_stop_on_one_rank_stops_every_rank_after_the_same_chunk(fm, one_step_chunks):
    from fastmlp.training import TrainingInterrupted
    X, y = _data("float32")

    def body(comm):
        net = fm.MLP(SIZES, activation="tanh", seed=3)
        tr = fm.Trainer(net, batch_size=10, threads=1, comm=comm)
        calls = []

        def callback(info):
            calls.append(info["done"])
            if comm.Get_rank() == 1 and len(calls) == 3:
                tr.request_stop()
        with pytest.raises(TrainingInterrupted):
            tr.fit(X, y, 2, verbose=False, callback=callback)
        return tr.steps, tr.position, calls
    a, b = run_ranks(2, body)
    # rank 1 asked after its third chunk; the flag is reduced at the end of the next one
    assert a == b and a[0] == 4 and a[1] == 40


def test_divergence_is_detected_alike_on_every_rank(fm):
    from fastmlp.errors import DivergenceError
    X, y = _data("float32")

    def body(comm):
        net = fm.MLP(SIZES, activation="relu", output="identity", seed=3)
        tr = fm.Trainer(net, loss="mse", lr=3.0, batch_size=10, threads=1, comm=comm)
        try:
            tr.fit(X, y.astype(np.float32)[:, None].repeat(3, 1), 1, verbose=False)
        except DivergenceError as e:
            return str(e), net.params.copy()
        return None, net.params.copy()
    single = body(None)
    assert single[0] is not None
    out = run_ranks(3, body)
    assert out[0][0] == out[1][0] == out[2][0] == single[0]
    assert np.isfinite(out[0][1]).all() and np.array_equal(out[0][1], out[2][1])


def test_checkpoint_of_two_ranks_resumes_with_one_or_three(fm, tmp_path, one_step_chunks):
    from fastmlp.training import Trainer
    X, y = _data("float64")
    path = str(tmp_path / "ckpt.npz")
    full, _, _ = _run(fm, None, "adam", "float64", epochs=2)

    def first(comm):
        net = fm.MLP(SIZES, activation="tanh", dtype="float64", seed=3)
        tr = Trainer(net, optimizer="adam", lr=LR["adam"], weight_decay=0.01, batch_size=10, seed=4, threads=1,
                     comm=comm)
        tr.fit(X, y, 1, verbose=False)
        tr.save_checkpoint(path)   # rank 0 writes, rank 1 does nothing
        return tr.steps
    assert run_ranks(2, first) == [7, 7]
    from fastmlp.model import load_npz
    assert load_npz(path)[1]["training"]["world_size"] == 2

    def resume(comm):
        tr, _ = Trainer.from_checkpoint(path, threads=1, comm=comm)
        tr.fit(X, y, 2, verbose=False)
        return tr.net.params.copy(), tr.history
    alone = resume(None)
    np.testing.assert_allclose(alone[0], full[-1], atol=1e-12)
    three = run_ranks(3, resume)
    np.testing.assert_allclose(three[0][0], full[-1], atol=1e-12)
    assert three[0][1]["epoch"] == [1, 2]


def test_only_rank_zero_prints(fm, capsys):
    X, y = _data("float32")

    def body(comm):
        fm.train(fm.MLP(SIZES, seed=3), X, y, epochs=1, batch_size=10, threads=1, comm=comm)
    run_ranks(3, body)
    assert capsys.readouterr().out.count("epoch 1/1") == 1


@pytest.mark.skipif(os.environ.get("FASTMLP_NO_MPI") == "1", reason="FASTMLP_NO_MPI=1")
def test_one_mpi_rank_is_bit_identical(fm, one_step_chunks):
    MPI = pytest.importorskip("mpi4py.MPI")
    ref, _, _ = _run(fm, None, "adam", "float32")
    snaps, _, tr = _run(fm, MPI.COMM_SELF, "adam", "float32")
    assert all(np.array_equal(a, b) for a, b in zip(ref, snaps))
    assert tr._dist.size == 1


def test_a_communicator_must_look_like_mpi4py(fm):
    with pytest.raises(ValueError, match="expected an mpi4py communicator"):
        fm.Trainer(fm.MLP(SIZES), comm=object())


def test_failed_rank_reported(fm):
    # the simulation itself: an exception on one rank ends the others instead of hanging them
    def body(comm):
        if comm.Get_rank() == 1:
            raise ZeroDivisionError("boom")
        comm.allgather(1)
    with pytest.raises(ZeroDivisionError):
        run_ranks(2, body)


def test_ranks_run_the_same_chunks_whatever_their_thread_pacers_say(fm, monkeypatch):
    # the pacer times chunks and may pick other chunk sizes on each rank; with a communicator the
    # chunks end in collectives, so every rank must run the planned chunks regardless
    from fastmlp import _pacer
    ref, _, _ = _run(fm, None, "sgd", "float64", epochs=1)
    ranks = {}

    def plan(self, chunk):
        ranks.setdefault(id(self), len(ranks))
        return 1, 10 * (1 + ranks[id(self)])   # 10 samples on one rank, 20 on another
    monkeypatch.setattr(_pacer.ThreadPacer, "plan", plan)
    out = run_ranks(2, lambda comm: _run(fm, comm, "sgd", "float64", epochs=1))
    np.testing.assert_allclose(out[0][0][-1], ref[-1], rtol=0, atol=1e-12)


def test_two_ranks_of_two_threads(fm):
    # the parallel update (_update_all) and kernels on 2 threads per rank: the same result
    X, y = _data("float64")

    def body(comm):
        net = fm.MLP([5, 512, 3], dtype="float64", seed=3)  # P = 4611: the update runs on 2 threads
        tr = fm.Trainer(net, optimizer="adam", lr=0.01, batch_size=20, seed=4, threads=2, comm=comm)
        tr.fit(X, y, 2, verbose=False)
        return net.params
    ref = body(None)
    out = run_ranks(2, body)
    np.testing.assert_allclose(out[0], ref, rtol=0, atol=1e-12)


def test_launchers_are_detected_from_their_environment():
    from fastmlp.distributed import launched_size
    assert launched_size({}) is None
    assert launched_size({"PMI_SIZE": "1"}) is None             # mpiexec -n 1: train alone
    assert launched_size({"PMI_SIZE": "4"}) == 4                # MPICH, Intel MPI
    assert launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2    # Open MPI
    assert launched_size({"SLURM_NTASKS": "8"}) == 8            # srun
    assert launched_size({"SLURM_NTASKS": "1"}) is None         # a one-task Slurm job
    assert launched_size({"PMIX_RANK": "0"}) == -1              # PMIx: MPI tells the size
    assert launched_size({"PMI_SIZE": "x"}) is None


def test_the_cli_imports_mpi4py_only_under_a_launcher(tmp_path):
    import subprocess
    import sys
    code = ("import sys\nfrom fastmlp.cli import main\n"
            "sys.argv = ['fastmlp', 'train', '--data', 'xor', '--hidden', '4', '--epochs', '1', '--quiet',"
            " '--threads', '1']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('mpi4py' in sys.modules)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_NTASKS")}
    env["PYTHONPATH"] = root
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_a_rank_that_failed_before_training_stops_the_others_at_the_start(fm):
    # what fastmlp.commands.mpi does on a rank whose options or data were bad: it joins the first
    # exchange of Group.start with its verdict, and every other rank raises PeerFailed
    from fastmlp.distributed import PeerFailed
    X, y = _data("float32")

    def body(comm):
        if comm.Get_rank() == 1:
            comm.allgather({"failed": (2, "--output: bad")})
            return None
        tr = fm.Trainer(fm.MLP(SIZES, seed=3), batch_size=10, threads=1, comm=comm)
        with pytest.raises(PeerFailed) as info:
            tr.fit(X, y, 1, verbose=False)
        return info.value.failed_rank, info.value.code, info.value.message
    assert run_ranks(2, body)[0] == (1, 2, "--output: bad")


@pytest.mark.parametrize("size", [1, 3])
def test_sample_weights_are_shared_out_like_the_samples(fm, size):
    # each minibatch's cost is sum_s w_s c_s / sum_s w_s over the global batch, whatever the split
    X, y = _data("float64")
    w = np.random.default_rng(5).uniform(0.0, 2.0, N_SAMPLES)
    w[:12] = 0.0   # some batches hold zero-weight samples only on some ranks

    def body(comm):
        net = fm.MLP(SIZES, activation="tanh", dtype="float64", seed=3)
        tr = fm.Trainer(net, optimizer="adam", lr=0.01, batch_size=10, seed=4, threads=1, comm=comm)
        tr.fit(X, y, 2, verbose=False, sample_weight=w)
        return net.params.copy(), tr.history["loss"]
    ref = body(None)
    out = run_ranks(size, body)
    if size == 1:
        assert np.array_equal(out[0][0], ref[0]) and out[0][1] == ref[1]
    else:
        np.testing.assert_allclose(out[0][0], ref[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[0][1], ref[1], rtol=1e-12)
