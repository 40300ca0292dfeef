"""A stand-in for an mpi4py communicator: N ranks as N threads of one process.

The ranks run one at a time, in turn (rank 0, 1, ..., N-1, then 0 again), each until its next
collective call: the simulation is deterministic, and no two ranks run Numba kernels at once.
Reductions add the ranks' contributions in rank order. Only the calls fastmlp.distributed makes
are provided.
"""
import copy
import threading
import types

MPI = types.SimpleNamespace(IN_PLACE=object(), SUM="sum")


class RankFailed(RuntimeError):
    pass


class _World:
    def __init__(self, size):
        self.size = size
        self.cv = threading.Condition()
        self.turn = 0
        self.slots = [None] * size
        self.tags = [None] * size
        self.result = None
        self.finished = [False] * size
        self.failed = None

    def _wait_turn(self, rank):
        while True:
            if self.failed is not None:
                raise RankFailed(f"rank {rank}: another rank failed: {self.failed}")
            if self.turn == rank:
                return
            self.cv.wait()

    def _pass_turn(self, rank):
        nxt = (rank + 1) % self.size
        while self.finished[nxt] and nxt != rank:
            nxt = (nxt + 1) % self.size
        self.turn = nxt
        self.cv.notify_all()

    def collective(self, rank, tag, value, combine):
        with self.cv:
            self._wait_turn(rank)
            self.slots[rank] = value
            self.tags[rank] = tag
            if rank == self.size - 1:
                if len(set(self.tags)) != 1:
                    self.failed = f"ranks called different collectives: {self.tags}"
                    self.cv.notify_all()
                    raise RankFailed(self.failed)
                if any(self.finished):
                    raise RankFailed("a collective after a rank finished")
                self.result = combine(self.slots)
            self._pass_turn(rank)
            self._wait_turn(rank)
            return self.result


class FakeComm:
    MPI = MPI

    def __init__(self, world, rank):
        self._world = world
        self._rank = rank

    def Get_rank(self):
        return self._rank

    def Get_size(self):
        return self._world.size

    def Allreduce(self, sendbuf, recvbuf, op=None):
        assert sendbuf is MPI.IN_PLACE and op == MPI.SUM

        def total(slots):
            acc = slots[0].copy()
            for x in slots[1:]:
                acc += x
            return acc
        out = self._world.collective(self._rank, ("Allreduce", recvbuf.shape, recvbuf.dtype.str),
                                     recvbuf.copy(), total)
        recvbuf[...] = out

    def Bcast(self, buf, root=0):
        out = self._world.collective(self._rank, ("Bcast", buf.shape, buf.dtype.str, root), buf.copy(),
                                     lambda slots: slots[root])
        buf[...] = out

    def allgather(self, obj):
        return copy.deepcopy(self._world.collective(self._rank, ("allgather",), obj, list))

    def bcast(self, obj, root=0):
        return copy.deepcopy(self._world.collective(self._rank, ("bcast", root), obj,
                                                    lambda slots: slots[root]))

    def Abort(self, errorcode=0):
        raise RankFailed(f"Abort({errorcode})")


def run_ranks(size, fn):
    """fn(comm) on `size` simulated ranks; returns the list of their results (rank order), or
    raises the first rank's exception."""
    world = _World(size)
    results = [None] * size
    errors = [None] * size

    def body(rank):
        comm = FakeComm(world, rank)
        try:
            with world.cv:
                world._wait_turn(rank)
            results[rank] = fn(comm)
        except BaseException as e:  # noqa: BLE001 - reported below, in the main thread
            errors[rank] = e
            with world.cv:
                if world.failed is None and not isinstance(e, RankFailed):
                    world.failed = f"rank {rank}: {type(e).__name__}: {e}"
        finally:
            with world.cv:
                world.finished[rank] = True
                world._pass_turn(rank)

    threads = [threading.Thread(target=body, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for e in errors:
        if e is not None and not isinstance(e, RankFailed):
            raise e
    for e in errors:
        if e is not None:
            raise e
    return results
