"""Synchronous data-parallel training over MPI (mpi4py), equal to training in one process.

Every rank holds the whole data set and the same model, and draws the same per-epoch permutation
from the seed. Each global minibatch (batch_size samples, the epoch's last one possibly fewer) is
split into N contiguous slices, one per rank; a rank takes the gradient of its slice's share of the
global mean cost (1/batch times its slice's sum of losses) with the trainer's own kernel, one
in-place Allreduce sums those gradients, and every rank applies the same optimizer step to the same
parameters. A rank whose slice is empty contributes zeros but still joins, so every rank takes the
same steps and no rank waits for ever. Loss sums, correct counts and the stop flag are reduced
once per chunk of steps; the check for a non-finite loss runs on reduced values, so every rank
decides alike.

The factor 1/batch is applied inside the kernel, to the output deltas, as the single-process
trainer applies it, and not to the summed gradient after the Allreduce: scaling by anything but a
power of two rounds, and one rank is then bit-identical to the single-process trainer at every
batch size (benchmarks/RESULTS.md has the differences of the other order).

mpi4py is imported only here and in the CLI (fastmlp.commands.mpi), and only when an MPI launcher
is detected or a caller passes an mpi4py communicator. Any object with mpi4py's methods Get_rank, Get_size, Allreduce,
Bcast, allgather, bcast and Abort, and an attribute MPI holding IN_PLACE and SUM, can stand in for
one (the tests simulate N ranks in one process that way).
"""
import hashlib
import os
import time

import numpy as np

# Environment variables that MPI launchers set in every rank: MPICH/Hydra and Intel MPI (PMI_SIZE),
# Open MPI (OMPI_COMM_WORLD_SIZE), PMIx launchers such as `srun --mpi=pmix` (PMIX_RANK), Slurm.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")


def launched_size(environ=None):
    """The world size an MPI launcher announced in the environment (> 1), or None: then the CLI
    trains in one process without importing mpi4py."""
    env = os.environ if environ is None else environ
    for name in LAUNCHER_SIZE_VARIABLES:
        try:
            size = int(env.get(name, ""))
        except ValueError:
            continue
        if size > 1:
            return size
    if "PMIX_RANK" in env:
        # PMIx announces the rank but not always the size; only MPI itself can tell
        return -1
    return None


def world():
    """MPI.COMM_WORLD, importing mpi4py (which initialises MPI). Raises ImportError with what to
    install when mpi4py is missing."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("distributed training needs mpi4py: pip install 'fastmlp[mpi]' "
                          f"(mpi4py plus an MPI library, e.g. the mpich wheel) ({e})") from None
    return MPI.COMM_WORLD


def library_version(comm=None):
    """One line naming the MPI library mpi4py loaded."""
    import mpi4py
    from mpi4py import MPI
    return " ".join(MPI.Get_library_version().strip().splitlines()[0].split()) + f" (mpi4py {mpi4py.__version__})"


def _mpi_namespace(comm):
    if type(comm).__module__.startswith("mpi4py"):
        from mpi4py import MPI
        return MPI
    ns = getattr(comm, "MPI", None)
    if ns is None or not hasattr(ns, "IN_PLACE") or not hasattr(ns, "SUM"):
        raise ValueError(f"comm: got {type(comm).__name__}, expected an mpi4py communicator such as "
                         "MPI.COMM_WORLD")
    return ns


def slice_bounds(n, rank, size):
    """[start, stop) of rank's contiguous slice of n samples: the first n % size ranks get one more."""
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return start, start + q + (1 if rank < r else 0)


def array_hash(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _fingerprint(a):
    # a sample of whole rows (all of them for small sets): catches ranks that loaded different data
    # without hashing gigabytes
    a = np.asarray(a)
    if a.ndim == 0 or a.shape[0] == 0:
        return (a.shape, str(a.dtype))
    stride = max(1, a.shape[0] // 1024)
    return (a.shape, str(a.dtype), array_hash(a[::stride]))


class PeerFailed(RuntimeError):
    """Raised on every rank at the start of training when some rank reported a failure instead
    of being ready (the CLI: an error while reading options, files or data on that rank)."""

    def __init__(self, failed_rank, code, message):
        super().__init__(f"rank {failed_rank} failed before training: {message}")
        self.failed_rank, self.code, self.message = failed_rank, code, message
        self.all_ranks = True


def attach(trainer, comm, ready=None):
    """Make an existing Trainer train with the ranks of comm (as Trainer(comm=...) does).
    ready(group, trainer, data), if given, is called on every rank once all of them are ready to
    train (the CLI compiles there, one rank per node at a time)."""
    trainer.comm = comm
    trainer._dist = Group(comm)
    trainer._dist.ready = ready
    return trainer._dist


def _all_ranks(error):
    # an error that every rank raises alike, after a collective decision: callers may end every rank
    # normally (the CLI calls MPI_Abort for any other error during training)
    error.all_ranks = True
    return error


# Training state that rank 0 broadcasts at the start of fit() (with the parameters and the
# optimizer's moments), so that a run resumed from a checkpoint continues alike on every rank.
_STATE_ATTRIBUTES = ("steps", "epoch", "position", "epoch_rng_state", "partial", "history")


class Group:
    """The ranks of one communicator training one model; created by Trainer(comm=...)."""

    def __init__(self, comm):
        self.mpi = _mpi_namespace(comm)
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self.stop_requested = False
        self.ready = None
        self.ready_seconds = 0.0
        self._gbuf = None
        # wall time of this rank's steps, by part (docs/distributed.md's scaling figures come from these)
        self.timings = {"steps": 0, "gradient": 0.0, "allreduce": 0.0, "update": 0.0}
        # tests of the CLI's fault handling: this rank raises in its second chunk of steps
        self._fail = os.environ.get("FASTMLP_TEST_FAIL_RANK") == str(self.rank)

    def __repr__(self):
        return f"Group(rank={self.rank}, size={self.size})"

    # -- collectives ---------------------------------------------------------------------------

    def sum_in_place(self, buf):
        self.comm.Allreduce(self.mpi.IN_PLACE, buf, op=self.mpi.SUM)

    def any(self, flag):
        """True on every rank if flag is true on any rank."""
        buf = np.array([1.0 if flag else 0.0])
        self.sum_in_place(buf)
        return bool(buf[0] > 0)

    # -- the start of fit() --------------------------------------------------------------------

    def _signature(self, tr, data):
        X, _, labels, targets, has_targets, weights, has_weights = data
        net = tr.net
        return {"layer sizes": list(net.sizes), "activation": net.activation, "output": net.output,
                "dtype": str(net.dtype), "optimizer": tr.optimizer, "loss": tr.loss,
                "hyperparameters": (tr.lr, tr.momentum, tr.weight_decay, tr.beta1, tr.beta2, tr.eps),
                "batch size": tr.batch_size, "seed": tr.seed, "training inputs": _fingerprint(X),
                "labels": _fingerprint(labels), "targets": _fingerprint(targets) if has_targets else None,
                "sample weights": _fingerprint(weights) if has_weights else None}

    def start(self, tr, data):
        """Check that every rank trains the same model on the same data, then give every rank rank
        0's parameters, optimizer state and progress. Raises on every rank alike."""
        self.stop_requested = False
        # (the CLI's ranks that failed while preparing join this first exchange with a "failed" entry)
        entries = self.comm.allgather({"signature": self._signature(tr, data)})
        for r, entry in enumerate(entries):
            if "failed" in entry:
                code, message = entry["failed"]
                raise PeerFailed(r, code, message)
        self.ready_seconds = 0.0
        if self.ready is not None:
            # every rank is here: from now on an error on one rank is that rank's alone
            t0 = time.perf_counter()
            self.ready(self, tr, data)
            self.ready_seconds = time.perf_counter() - t0
        sigs = [entry["signature"] for entry in entries]
        for r, sig in enumerate(sigs):
            for key, value in sig.items():
                if value != sigs[0][key]:
                    raise _all_ranks(ValueError(
                        f"rank {r} of {self.size} has other {key} than rank 0: {value!r} against "
                        f"{sigs[0][key]!r}; every rank must run the same command on the same data"))
        for arr in (tr.net.params, tr.m, tr.v):
            if arr.size:
                self.comm.Bcast(arr, root=0)
        state = None
        if self.rank == 0:
            state = {name: getattr(tr, name) for name in _STATE_ATTRIBUTES}
            state["rng_state"] = tr.rng.bit_generator.state
        state = self.comm.bcast(state, root=0)
        if self.rank != 0:
            for name in _STATE_ATTRIBUTES:
                setattr(tr, name, state[name])
            tr.rng.bit_generator.state = state["rng_state"]
        self.check_same(tr, "after the broadcast from rank 0")

    def parameter_hash(self, tr):
        return array_hash(tr.net.params, tr.m, tr.v)

    def check_same(self, tr, when):
        """Raise on every rank if the parameters or optimizer state differ between ranks."""
        hashes = self.comm.allgather(self.parameter_hash(tr))
        if len(set(hashes)) > 1:
            raise _all_ranks(RuntimeError(
                f"the parameters differ between ranks {when} (hashes {', '.join(hashes)}); are fastmlp, "
                "NumPy and the MPI library the same on every node?"))
        return hashes[0]

    def compile_data(self, tr, data):
        """Compile (or load from Numba's cache) the kernels that training on data (as
        Trainer._prepare returns it) runs, without training."""
        from ._buffers import Workspace
        from ._threads import thread_count
        ws = Workspace(tr.net.sizes, tr.net.dtype, 1)
        with thread_count(tr.threads):
            self.steps(tr, data, np.zeros(0, dtype=np.int64), ws, np.zeros(1), np.zeros((1, 2)))

    # -- the steps -----------------------------------------------------------------------------

    def steps(self, tr, data, order, ws, losses, stats):
        """Trainer._steps for this rank: the minibatches of order, batch_size at a time (the last
        possibly fewer), each split over the ranks. Writes the global per-step (loss sum, correct
        count) into stats, sets tr._stop from the reduced stop flag, and returns the number of
        steps completed (fewer when a step's loss was not finite, on any rank)."""
        from . import _kernels as k
        from ._buffers import Data, OptimizerState, Results, aligned_zeros, input_bytes
        from ._plan import phase_plan
        net = tr.net
        params, m, v = net.params, tr.m, tr.v
        P = params.size
        if self._gbuf is None or self._gbuf.dtype != params.dtype or self._gbuf.size != P + 1:
            # the gradient, and one more element: 1 on a rank whose slice's loss is not finite
            self._gbuf = aligned_zeros(P + 1, params.dtype)
        g = self._gbuf
        _, _, loss, update = tr._kernel_args()
        X, divisor, labels, targets, has_targets, weights, has_weights = data
        hp = tr._hp()
        plan, network, buffers = phase_plan(net.sizes, "gradient"), k.network(net), ws.buffers()
        kdata = Data(*input_bytes(X), divisor, labels, targets, has_targets, weights, has_weights, loss)
        no_outputs = np.empty((0, net.sizes[-1]), dtype=net.dtype)
        count = order.shape[0]
        B = tr.batch_size
        nsteps = -(-count // B)
        local = np.zeros((nsteps + 1, 2))

        def gradient(idx, step, out):
            # the "gradient" plan: the training phases without the update, the gradient overwritten
            return k._drive(plan, network, buffers, OptimizerState(g, m, v, k.GRADIENT_ONLY, hp, step), kdata,
                            idx, max(idx.shape[0], 1), tr.threads, Results(losses, out, no_outputs))

        if count == 0:
            # compile (or load) both kernels without training
            gradient(order, tr.steps + 1, local)
            k._update_all(params, g, m, v, net.w_off, net.b_off, net.sizes_array, k.GRADIENT_ONLY, hp,
                          tr.steps + 1, tr.threads)
            return 0
        if self._fail and self.timings["steps"] > 0:
            raise RuntimeError(f"failure injected by FASTMLP_TEST_FAIL_RANK={self.rank}")
        done = nsteps
        clock = time.perf_counter
        t_grad = t_sum = t_upd = 0.0
        for s in range(nsteps):
            s0 = s * B
            n = min(s0 + B, count) - s0
            a, b = slice_bounds(n, self.rank, self.size)
            # the global batch's factor: 1/n, or 1 over its summed weights. A rank whose slice is the
            # whole batch (one rank) leaves it to the kernel, which sums the weights in its own
            # order (bit-identical to one process); a zero sum too, as every slice's sum is then zero.
            total = float(np.sum(weights[order[s0:s0 + n]])) if has_weights else float(n)
            hp[k.HP_GRAD_SCALE] = 1.0 / total if total > 0 and b - a < n else 0.0
            t0 = clock()
            if b > a:
                finite = gradient(order[s0 + a:s0 + b], tr.steps + 1 + s, local[s:s + 1]) == 1
            else:
                g[:P] = 0
                finite = True
            g[P] = 0 if finite else 1
            t1 = clock()
            self.sum_in_place(g)
            t2 = clock()
            t_grad += t1 - t0
            t_sum += t2 - t1
            if g[P] != 0:
                done = s
                break
            k._update_all(params, g, m, v, net.w_off, net.b_off, net.sizes_array, update, hp,
                          tr.steps + 1 + s, tr.threads)
            t_upd += clock() - t2
        self.timings["steps"] += done
        self.timings["gradient"] += t_grad
        self.timings["allreduce"] += t_sum
        self.timings["update"] += t_upd
        self._share_stats(tr, local, stats, min(done + 1, nsteps))
        return done

    def _share_stats(self, tr, local, stats, rows):
        """Sum this rank's per-step (loss sum, correct count) in local[:rows] over the ranks into
        stats[:rows], and with them the stop requests (into tr._stop) and the ranks whose parameters
        are not finite (which must be none or all)."""
        local[rows] = (1.0 if self.stop_requested else 0.0, 0.0 if np.isfinite(tr.net.params).all() else 1.0)
        self.sum_in_place(local[:rows + 1])
        stats[:rows] = local[:rows]
        tr._stop = bool(local[rows, 0] > 0)
        if local[rows, 1] not in (0.0, float(self.size)):
            raise _all_ranks(RuntimeError(
                "the parameters are finite on some ranks and not on others; are fastmlp, NumPy and the "
                "MPI library the same on every node?"))

