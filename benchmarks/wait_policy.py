"""Small-batch training against the OpenMP runtime's waiting: OMP_WAIT_POLICY=PASSIVE and Numba's
threading layers, fastmlp (paced, two threads forced, one thread) and PyTorch.

    PYTHONPATH=. python benchmarks/wait_policy.py [--rounds R] [--samples N] [--batches 10,32]

784-100-10, plain SGD, one epoch of N samples (Fashion-MNIST's first N training images when the Debian
files are there, else random uint8 pixels), samples/s, median of R alternating rounds, each run in a
fresh process after a warm-up fit on 2,000 samples in the same mode. Environments: as is (libgomp
spins a while before it sleeps), OMP_WAIT_POLICY=PASSIVE (its threads sleep at once: every parallel
region wakes them through the kernel), NUMBA_THREADING_LAYER=workqueue (Numba's own pool, no
OpenMP), and tbb when it loads. fastmlp modes: "paced" is the default (threads=None: the thread
pacer picks one thread or all per chunk; after the warm-up it starts from the warm-up's verdict),
"2" forces both threads for every chunk, "1" is one thread.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ENVS = {
    "default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
    "tbb": {"NUMBA_THREADING_LAYER": "tbb"},
}


def data(n):
    import numpy as np
    try:
        import fastmlp
        X, y = fastmlp.datasets.load("fashion-mnist", "train", download=False)
        return X[:n], y[:n]
    except Exception:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 784), dtype=np.uint8), rng.integers(0, 10, n)


def worker(mode, batch, n):
    if mode == "torch":
        from fastmlp import bench
        r = bench.measure("torch", hidden=(100,), batch_size=batch, threads=2, n_samples=n,
                          data="fashion-mnist", warmup_seconds=0.5)
        return {"samples_per_second": r["samples_per_second"], "layer": None}
    import numba

    import fastmlp as fm
    from fastmlp._pacer import ThreadPacer
    if mode == "2":
        ThreadPacer.plan = lambda self, chunk: (self.max_threads, chunk)
    threads = {"paced": None, "2": 2, "1": 1}[mode]
    X, y = data(n)
    fm.train(fm.MLP([784, 100, 10], seed=0), X[:2000], y[:2000], epochs=1, batch_size=batch, threads=threads,
             verbose=False)
    net = fm.MLP([784, 100, 10], seed=0)
    t0 = time.perf_counter()
    fm.train(net, X, y, epochs=1, batch_size=batch, lr=0.05, threads=threads, verbose=False)
    seconds = time.perf_counter() - t0
    return {"samples_per_second": n / seconds, "layer": numba.threading_layer()}


def measure(env_name, mode, batch, n):
    env = dict(os.environ, **ENVS[env_name])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "2"
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                           json.dumps([mode, batch, n])], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print(json.dumps(worker(*json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batches", default="10,32")
    parser.add_argument("--envs", default="default,PASSIVE,workqueue,tbb")
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args()
    runs = [(e, m) for e in args.envs.split(",") for m in ("paced", "2", "1")]
    if not args.no_torch:
        runs += [(e, "torch") for e in ("default", "PASSIVE") if e in args.envs.split(",")]
    print(f"load average {os.getloadavg()}", flush=True)
    for batch in map(int, args.batches.split(",")):
        got = {r: [] for r in runs}
        layers = {}
        for _ in range(args.rounds):
            for r in runs:
                out = measure(r[0], r[1], batch, args.samples)
                if out is not None:
                    got[r].append(out["samples_per_second"])
                    layers[r] = out["layer"]
        print(f"\nbatch {batch}, {args.samples} samples, samples/s (median of {args.rounds}), "
              f"load average {os.getloadavg()[0]:.2f}")
        print("| environment | fastmlp paced | fastmlp 2 threads | fastmlp 1 thread | PyTorch 2 threads |")
        print("|---|---|---|---|---|")
        for e in args.envs.split(","):
            cells = []
            for m in ("paced", "2", "1", "torch"):
                v = got.get((e, m))
                cells.append(f"{statistics.median(v):,.0f}" if v else "—")
            layer = next((layers[(e, m)] for m in ("paced", "2", "1") if layers.get((e, m))), None)
            print(f"| {e} ({layer or 'did not load'}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
