"""Training under CPU contention: fastmlp's default thread count against one thread, with and without one
busy background process per core.

    PYTHONPATH=. python benchmarks/contention.py [--rounds R] [--busy-seconds S] [--cases digits,784]
                                                 [--base DIR]

Cases (one epoch each, plain SGD, batch 32): 784-100-10 on 10,000 samples (Fashion-MNIST's first
10,000 training images when the Debian files are there, else random uint8 pixels), and 64-100-10 on
scikit-learn's 1,797 digits (sklearn.datasets.load_digits, scaled to [0, 1]).

Each measurement runs in a fresh process, as a user's script would: it loads the compiled kernels in a
one-thread warm-up fit (which starts no thread pool and leaves the thread pacer's memory empty), then
times the wall clock of train() calls: the first fit of the process (the pacer knows nothing yet), a
second one right after it (the pacer starts from the first one's verdict), and the median of 5 more
(the steady state; single fits of a few milliseconds are at the mercy of the scheduler). Default threads and
one thread alternate, each round starting with the other (a process run right after another finds the
machine in another state), R rounds (15 by default: under load a fit on one thread takes about twice as
long when the scheduler shares its core with a busy process as when it does not, and over fewer rounds
that, not the thread count, decided the medians: benchmarks/RESULTS.md), medians; the ratio printed is
speed(default) / speed(1 thread), so 1.0 means the default is as fast as one thread (the target under
contention is >= 0.8). Fits of fewer than fastmlp._pacer.SMALL_RUN_FLOPS (the digits) run on one thread
whatever the count asked for.

The busy processes are started by this script, one per core, first after the quiet rounds: each spins
until its own deadline (--busy-seconds) or until this script's process is gone, and the script
terminates them in a finally block and at exit, so none outlives the run.

--base DIR also measures the default thread count of another checkout of fastmlp (e.g. an older
commit's `git archive` unpacked in DIR) in the same rounds, against the same one-thread runs.
"""
import argparse
import atexit
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "784": dict(title="784-100-10, batch 32, 10,000 samples", sizes=[784, 100, 10]),
    "digits": dict(title="64-100-10, batch 32, 1,797 digits", sizes=[64, 100, 10]),
}


# fits after the first two in a worker process; their median is the third figure
LATER_FITS = 5


def busy(seconds, parent):
    """Spin until `seconds` have passed or the parent process is gone."""
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        for _ in range(100000):
            x += 1
        if os.getppid() != parent:
            return


class BusyLoad:
    """One busy process per core while the block runs; all terminated on exit (and at interpreter exit
    if the block is left abnormally), each also ending by itself after `seconds`."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.procs = []

    def __enter__(self):
        cores = len(os.sched_getaffinity(0))
        self.procs = [multiprocessing.Process(target=busy, args=(self.seconds, os.getpid()), daemon=True)
                      for _ in range(cores)]
        atexit.register(self.stop)
        for p in self.procs:
            p.start()
        time.sleep(0.5)  # let the scheduler see them
        return self

    def stop(self):
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()

    def __exit__(self, *exc):
        self.stop()
        atexit.unregister(self.stop)


def load_case(name):
    import numpy as np
    if name == "digits":
        from sklearn.datasets import load_digits
        X, y = load_digits(return_X_y=True)
        return (X / 16.0).astype(np.float32), y
    try:
        import fastmlp
        X, y = fastmlp.datasets.load("fashion-mnist", "train", download=False)
        return X[:10000], y[:10000]
    except Exception:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (10000, 784), dtype=np.uint8), rng.integers(0, 10, 10000)


def worker(case, threads):
    """In a fresh process: warm up on one thread, then the wall seconds of the first train() call,
    the second, and the median of the later ones."""
    import fastmlp as fm
    X, y = load_case(case)
    sizes = CASES[case]["sizes"]
    warm = fm.MLP(sizes, seed=0)
    fm.train(warm, X[:64], y[:64], epochs=1, batch_size=32, threads=1, verbose=False)
    out = []
    for _ in range(2 + LATER_FITS):
        net = fm.MLP(sizes, seed=0)
        t0 = time.perf_counter()
        fm.train(net, X, y, epochs=1, batch_size=32, lr=0.05, threads=threads, verbose=False)
        out.append(time.perf_counter() - t0)
    return out[:2] + [statistics.median(out[2:])]


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(case, threads, root=HERE):
    arg = json.dumps({"case": case, "threads": threads})
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", arg], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_rounds(cases, rounds, default, base):
    """{case: {key: [[first, second], ...]}} over alternating rounds; key: the thread count, or
    "base" for the base checkout's default."""
    keys = [default, 1] + (["base"] if base else [])
    out = {c: {k: [] for k in keys} for c in cases}
    from fastmlp.bench import round_order
    for r in range(rounds):
        for c in cases:
            for k in round_order(keys, r):
                out[c][k].append(measure(c, default, base) if k == "base" else measure(c, k))
    return out


def report(label, results, default):
    print(f"\n{label} (load average {os.getloadavg()[0]:.2f}, 1 min)")
    base = any("base" in by for by in results.values())
    print(f"| case | fit | {default} threads s | 1 thread s | speed ratio {default}/1 |"
          + (f" base: {default} threads s | base ratio |" if base else ""))
    print("|---|---|---|---|---|" + ("---|---|" if base else ""))
    for c, by in results.items():
        for i, which in enumerate(("first in process", "second", f"later (median of {LATER_FITS})")):
            d = statistics.median(r[i] for r in by[default])
            o = statistics.median(r[i] for r in by[1])
            row = f"| {CASES[c]['title']} | {which} | {d:.4f} | {o:.4f} | {o / d:.2f}x |"
            if base:
                b = statistics.median(r[i] for r in by["base"])
                row += f" {b:.4f} | {o / b:.2f}x |"
            print(row, flush=True)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        a = json.loads(sys.argv[2])
        print(json.dumps(worker(a["case"], a["threads"])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--busy-seconds", type=float, default=1800.0,
                        help="hard limit of each busy process's life (must outlast the loaded rounds)")
    parser.add_argument("--cases", default="784,digits")
    parser.add_argument("--no-quiet", action="store_true", help="skip the rounds without background load")
    parser.add_argument("--base", help="another fastmlp checkout to measure beside this one")
    args = parser.parse_args()
    cases = args.cases.split(",")
    import numba
    default = numba.get_num_threads()
    print(f"default threads {default}, {len(os.sched_getaffinity(0))} cores, "
          f"load average {os.getloadavg()}", flush=True)
    if not args.no_quiet:
        report("Without background load", run_rounds(cases, args.rounds, default, args.base), default)
    with BusyLoad(args.busy_seconds) as load:
        results = run_rounds(cases, args.rounds, default, args.base)
        if not all(p.is_alive() for p in load.procs):
            print("warning: a busy process ended before the rounds did (raise --busy-seconds)")
    report(f"With one busy process per core ({len(os.sched_getaffinity(0))})", results, default)


if __name__ == "__main__":
    main()
