"""Where a distributed step's time goes: the gradient of a rank's slice, the Allreduce of the flat
gradient (including the wait for the slowest rank) and the update, per global batch size; then
the Allreduce alone on buffers of several sizes. Ranks train with 1 thread each.

    mpiexec -n 2 python benchmarks/mpi_steps.py [--hidden 100] [--samples 8192] [--batches 32,128,512]

Rank 0 prints a Markdown table (figures in benchmarks/RESULTS.md and docs/distributed.md's scaling model).
"""
import argparse
import time

import numpy as np
from mpi4py import MPI

import fastmlp
from fastmlp import datasets, distributed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="100")
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batches", default="32,128,512")
    parser.add_argument("--repeats", type=int, default=200, help="Allreduce calls per buffer size")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = datasets.load("synthetic-digits")
    X, y = X[:args.samples], y[:args.samples]
    sizes = [784, *[int(h) for h in args.hidden.split(",")], 10]
    out = print if rank == 0 else (lambda *a, **k: None)
    out(f"{size} ranks x 1 thread, {sizes}, {X.shape[0]} samples, {distributed.library_version()}")
    out("| global batch | samples per rank | gradient ms | Allreduce ms | update ms | Allreduce share "
        "| samples/s |")
    out("|---|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        net = fastmlp.MLP(sizes, seed=0)
        tr = fastmlp.Trainer(net, batch_size=batch, lr=0.05, threads=1, comm=comm)
        tr.fit(X, y, 1, verbose=False)   # compiles; the second epoch is timed
        tr._dist.timings = {"steps": 0, "gradient": 0.0, "allreduce": 0.0, "update": 0.0}
        comm.Barrier()
        t0 = time.perf_counter()
        tr.fit(X, y, 2, verbose=False)
        wall = time.perf_counter() - t0
        t = tr._dist.timings
        n = t["steps"]
        step = t["gradient"] + t["allreduce"] + t["update"]
        out(f"| {batch} | {-(-batch // size)} | {1e3 * t['gradient'] / n:.3f} | {1e3 * t['allreduce'] / n:.3f} "
            f"| {1e3 * t['update'] / n:.3f} | {t['allreduce'] / step:.0%} | {X.shape[0] / wall:,.0f} |")
    P = net.params.size
    out()
    out("| float32 values | bytes | Allreduce us (median) | GB/s (2 (N-1)/N bytes / time) |")
    out("|---|---|---|---|")
    for count in (1, 1024, P, 4 * P, 16 * P):
        buf = np.ones(count, dtype=np.float32)
        times = []
        for _ in range(args.repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        moved = 2 * (size - 1) / size * buf.nbytes
        out(f"| {count:,} | {buf.nbytes:,} | {1e6 * med:.1f} | {moved / med / 1e9:.2f} |")


if __name__ == "__main__":
    main()
