"""The CLI under an MPI launcher (`mpiexec -n N fastmlp train ...`, `srun --mpi=pmix fastmlp ...`).

A command runs in two phases on every rank:
- preparation (options, files, data, the model): each rank checks its inputs, then all ranks
  exchange their verdicts at one point (agree()), so that an error on any rank makes every rank
  exit together, with that error's status (2 for a usage error), and one message;
- training: the ranks meet in collectives at every step. An exception that every rank raises
  alike (divergence, Ctrl-C, a mismatch found by a collective check) ends every rank normally;
  any other exception on one rank prints `rank r/N: ...` and calls MPI_Abort, which ends the job
  instead of leaving the other ranks waiting in a collective for ever. SIGINT, SIGTERM and SIGUSR1
  ask for a stop: all ranks stop after the same chunk of steps, rank 0 saves the checkpoint, and
  every rank exits with status 130.
Only rank 0 prints (the other ranks' stdout and stderr go to /dev/null during training, except
their `rank r/N:` fault lines).
"""
import contextlib
import os
import signal
import sys

import click

from . import distributed

# Tests: the rank that raises an error in its second chunk of training (a rank-local fault).
FAIL_RANK_VARIABLE = "FASTMLP_TEST_FAIL_RANK"


class Session:
    """This process's place in an MPI job, for the CLI."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.stderr = sys.stderr
        self._node = None

    @property
    def node(self):
        """The ranks on this machine (a communicator)."""
        if self._node is None:
            from mpi4py import MPI
            self._node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        return self._node

    def prefix(self):
        return f"rank {self.rank}/{self.size}: "

    def fault(self, message):
        """A rank-local fault during training: one line, then end the whole job."""
        try:
            self.stderr.write(f"{self.prefix()}{message}\n")
            self.stderr.flush()
        finally:
            self.comm.Abort(1)


def start(mode):
    """A Session when an MPI launcher started this process with more than one rank and mode is
    'auto'; None otherwise (then mpi4py is not imported)."""
    if mode == "off" or distributed.launched_size() is None:
        return None
    try:
        comm = distributed.world()
    except ImportError as e:
        raise click.ClickException(f"{e}; or give --distributed off to train in each process alone") from None
    if comm.Get_size() < 2:
        return None
    return Session(comm)


def default_threads(session):
    """Numba threads for this rank: the CPUs it may run on, shared with the ranks of its node that
    may run on any of them (all ranks of the node, unless the launcher bound them apart)."""
    import numba
    mine = os.sched_getaffinity(0)
    masks = session.node.allgather(sorted(mine))
    sharing = sum(1 for m in masks if mine.intersection(m))
    return max(1, min(len(mine) // max(sharing, 1), numba.config.NUMBA_NUM_THREADS))


def compile_in_turn(session, trainer, X, y):
    """The first rank of each node compiles the training kernels (or loads them from Numba's cache)
    while the node's other ranks wait; then they load what it cached."""
    node = session.node
    if node.Get_rank() != 0:
        node.Barrier()
    try:
        trainer._dist.compile(trainer, X, y)
    finally:
        if node.Get_rank() == 0:
            node.Barrier()


def _exit_code(e):
    if isinstance(e, click.exceptions.Exit):
        return e.exit_code
    if isinstance(e, click.ClickException):
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else 1
    return 1


def _message(e):
    if isinstance(e, click.ClickException):
        return e.format_message()
    return f"{type(e).__name__}: {e}"


@contextlib.contextmanager
def preparation(session):
    """Run the block on every rank; at its end the ranks agree: if any rank failed, every rank
    exits with the most severe status (a usage error's 2 first), and the first failing rank's
    error is shown once."""
    if session is None:
        yield
        return
    error = None
    try:
        yield
    except BaseException as e:  # noqa: BLE001 - every rank must reach the exchange below
        error = e
    verdicts = session.comm.allgather(None if error is None else (_exit_code(error), _message(error)))
    failed = [(r, v) for r, v in enumerate(verdicts) if v is not None]
    if not failed:
        return
    codes = {v[0] for _, v in failed}
    code = 2 if 2 in codes else max(codes)
    first_rank, (_, first_message) = failed[0]
    if session.rank == first_rank and error is not None:
        if isinstance(error, click.ClickException) and code == error.exit_code:
            raise error  # shown as the CLI shows it in one process
        if isinstance(error, (click.exceptions.Exit, SystemExit, KeyboardInterrupt)) and _exit_code(error) == code:
            raise error
        click.echo(f"Error: {session.prefix() if first_rank else ''}{first_message}", err=True)
    elif session.rank == 0 and first_rank != 0:
        click.echo(f"Error: rank {first_rank}/{session.size}: {first_message}", err=True)
    sys.exit(code)


def _collective(e):
    from .errors import DivergenceError
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (DivergenceError, KeyboardInterrupt)) or getattr(e, "all_ranks", False):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def training(session, trainer):
    """The training phase (see the module's docstring)."""
    if session is None:
        yield
        return
    devnull = None
    saved = sys.stdout, sys.stderr
    handlers = {}

    def stop(signum, frame):
        trainer.request_stop()
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        handlers[sig] = signal.signal(sig, stop)
    if session.rank != 0:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
        sys.stdout = sys.stderr = devnull
    try:
        yield
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (SystemExit, click.exceptions.Exit)) or _collective(e):
            raise
        session.fault(_message(e))
        raise
    finally:
        sys.stdout, sys.stderr = saved
        if devnull is not None:
            devnull.close()
        for sig, old in handlers.items():
            signal.signal(sig, old)


def info_lines():
    """`fastmlp info`: the MPI library and world size when launched under MPI (else whether mpi4py
    is installed, without importing it)."""
    if distributed.launched_size() is None:
        import importlib.util
        found = importlib.util.find_spec("mpi4py") is not None
        return {"mpi": "mpi4py installed (not launched under MPI)" if found else "mpi4py not installed"}
    comm = distributed.world()
    return {"mpi": distributed.library_version(), "mpi_world_size": comm.Get_size(),
            "mpi_rank": comm.Get_rank()}
