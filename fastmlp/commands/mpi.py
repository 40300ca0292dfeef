"""The CLI under an MPI launcher (`mpiexec -n N fastmlp train ...`, `srun --mpi=pmix fastmlp ...`).

A command runs in two phases on every rank:
- preparation (options, files, data, the model): each rank checks its inputs, then all ranks
  exchange their verdicts in one collective (the first of Group.start, which a failed rank joins
  from running()), so that an error on any rank makes every rank exit together, with that
  error's status (2 for a usage error), and one message;
- training: the ranks meet in collectives at every step. An exception that every rank raises
  alike (divergence, Ctrl-C, a mismatch found by a collective check) ends every rank normally;
  any other exception on one rank prints `rank r/N: ...` and calls MPI_Abort, which ends the job
  instead of leaving the other ranks waiting in a collective for ever. SIGINT, SIGTERM and SIGUSR1
  ask for a stop: all ranks stop after the same chunk of steps, rank 0 saves the checkpoint, and
  every rank exits with status 130.
Only rank 0 prints (the other ranks' stdout and stderr go to /dev/null, except their `rank r/N:`
fault lines and the first failing rank's error).
"""
import contextlib
import os
import signal
import sys
import time

import click

from .. import distributed

# Seconds a faulty rank waits after printing its error line and before it aborts the job.
FAULT_GRACE_SECONDS = 1.0


class Session:
    """This process's place in an MPI job, for the CLI (see start())."""

    current = None  # the session of this process, while a command runs under MPI

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.stderr = sys.stderr
        self.training = False  # set once the ranks have agreed that every one is ready to train
        self.group = None
        self.stop_requested = False  # SIGTERM or SIGUSR1 before the training began
        self.stop_handler = signal.SIG_DFL
        self.saved_sigint = None
        # the ranks on this machine; every rank gets here before any of them can fail
        self.node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        mine = os.sched_getaffinity(0)
        masks = self.node.allgather(sorted(mine))
        self.sharing = sum(1 for m in masks if mine.intersection(m))
        self.cpus = len(mine)

    def prefix(self):
        return f"rank {self.rank}/{self.size}: "

    def default_threads(self):
        """Numba threads for this rank: the CPUs it may run on, shared with the ranks of its node
        that may run on any of them (all ranks of the node, unless the launcher bound them apart)."""
        import numba
        return max(1, min(self.cpus // max(self.sharing, 1), numba.config.NUMBA_NUM_THREADS))

    def fault(self, message):
        """A rank-local fault during training: one line, then end the whole job."""
        try:
            self.stderr.write(f"{self.prefix()}{message}\n")
            self.stderr.flush()
            # The launcher forwards each rank's output asynchronously, and MPI_Abort kills the job at once:
            # give it a moment to pass the line on, or the user sees an exit status without a reason.
            time.sleep(FAULT_GRACE_SECONDS)
        finally:
            self.comm.Abort(1)

    def ready(self, group, trainer, data):
        """Called by Group.start once every rank reported ready: from here on a fault ends the job.
        The first rank of each node compiles the training kernels (or loads them from Numba's
        cache) while the node's other ranks wait, then they load what it cached."""
        self.training = True
        self.group = group
        group.stop_requested = group.stop_requested or self.stop_requested
        # from here a Ctrl-C is a stop request too (before, it interrupts the preparation on every
        # rank, and the ranks agree on exit 130)
        self.saved_sigint = signal.signal(signal.SIGINT, self.stop_handler)
        first = self.node.Get_rank() == 0
        if not first:
            self.node.Barrier()
        try:
            group.compile_data(trainer, data)
        finally:
            if first:
                self.node.Barrier()


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


def rank_options(session, options):
    """The train command's options on this rank: the default thread count is this rank's share
    of its node; ranks other than 0 print nothing and write no --metrics or --csv."""
    options = dict(options)
    if options.get("threads") is None:
        options["threads"] = session.default_threads()
    if session.rank != 0:
        options.update(quiet=True, metrics=None)
        if "csv_path" in options:
            options["csv_path"] = None
    return options


def attach(trainer):
    """Train with the ranks of the current session (no-op outside MPI)."""
    session = Session.current
    if session is not None and trainer._dist is None:
        distributed.attach(trainer, session.comm, ready=session.ready)


def _exit_code(e):
    # as commands.common.handle_errors and fastmlp.cli decide it in one process
    from ..errors import ConfigError
    if isinstance(e, (click.exceptions.Exit, click.ClickException)):
        return e.exit_code
    if isinstance(e, ConfigError):
        return 2
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, SystemExit):
        return e.code if isinstance(e.code, int) else 1
    return 1


def _message(e):
    from ..errors import FastMLPError, one_line
    from .common import describe_exception
    if isinstance(e, click.ClickException):
        return one_line(e.format_message())
    if isinstance(e, (FastMLPError, ValueError, OSError, MemoryError)):
        return one_line(describe_exception(e))
    return one_line(f"{type(e).__name__}: {e}")


def _collective(e):
    from ..errors import DivergenceError
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (DivergenceError, KeyboardInterrupt)) or getattr(e, "all_ranks", False):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def running(session, stop_signals=(signal.SIGTERM, signal.SIGUSR1)):
    """Run a command's body on every rank (see the module's docstring)."""
    Session.current = session
    saved = sys.stdout, sys.stderr
    devnull = None
    handlers = {}

    def stop(signum, frame):
        session.stop_requested = True
        if session.group is not None:
            session.group.stop_requested = True
    session.stop_handler = stop
    for sig in stop_signals:
        handlers[sig] = signal.signal(sig, stop)
    if session.rank != 0:
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
        sys.stdout = sys.stderr = devnull
    try:
        yield
    except distributed.PeerFailed as e:
        # another rank failed before training and said why: exit as it did
        raise click.exceptions.Exit(e.code) from None
    except BaseException as e:
        if isinstance(e, (SystemExit, click.exceptions.Exit)) and session.training:
            raise
        if not session.training:
            # failed while preparing: tell the other ranks (they are, or will be, in Group.start's
            # first exchange, or here), then exit with the most severe status of all failures
            verdicts = session.comm.allgather({"failed": (_exit_code(e), _message(e))})
            failures = [(r, v["failed"]) for r, v in enumerate(verdicts) if "failed" in v]
            codes = {code for _, (code, _) in failures}
            code = 2 if 2 in codes else max(codes)
            first = failures[0][0]
            if session.rank == first:
                # the one message, from the first failing rank (as in one process on rank 0)
                sys.stdout, sys.stderr = saved
                if session.rank == 0 and _exit_code(e) == code:
                    raise
                click.echo(f"Error: {session.prefix() if session.rank else ''}{_message(e)}", err=True)
            raise click.exceptions.Exit(code) from None
        if _collective(e):
            raise
        session.fault(_message(e))
        raise
    finally:
        sys.stdout, sys.stderr = saved
        if devnull is not None:
            devnull.close()
        for sig, old in handlers.items():
            signal.signal(sig, old)
        if session.saved_sigint is not None:
            signal.signal(signal.SIGINT, session.saved_sigint)
        Session.current = None


def info():
    """`fastmlp info`: the MPI library and world size when launched under MPI; else whether
    mpi4py is installed (without importing it, which would initialise MPI)."""
    import importlib.metadata
    if distributed.launched_size() is None:
        try:
            found = f"mpi4py {importlib.metadata.version('mpi4py')} installed"
        except importlib.metadata.PackageNotFoundError:
            found = "mpi4py not installed (pip install 'fastmlp[mpi]')"
        return {"mpi": f"{found}; not launched under MPI"}
    comm = distributed.world()
    return {"mpi": distributed.library_version(), "mpi_world_size": comm.Get_size(),
            "mpi_rank": comm.Get_rank()}
