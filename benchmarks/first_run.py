"""A new user's first run: `fastmlp train` on empty caches, against the same command warm.

    PYTHONPATH=. python benchmarks/first_run.py                  # the default `fastmlp train`
    PYTHONPATH=. python benchmarks/first_run.py --warm 3 -- --epochs 1 --hidden 64
    git archive OLD | tar -x -C /tmp/old && python benchmarks/first_run.py --root /tmp/old   # before

What it does, in a temporary directory that stands for a fresh clone's state:
1. cold: an empty NUMBA_CACHE_DIR and an empty fastmlp data cache (XDG_CACHE_HOME; FASTMLP_DATA
   unset), then `python -m fastmlp.cli train ARGS --json` in a new process: wall time of the
   process, and every compilation Numba does in it (function, signature, seconds: inclusive, and
   exclusive of the callees compiled inside it; CPU seconds of the compiling thread), read from
   Numba's "numba:compile" events;
2. warm: the same command again (--warm times), with both caches now filled: median wall time.
Prints the ratio cold / warm (issue 11's target: <= 5) and the per-function table. A function
listed more than once was compiled for more than one signature (e.g. a Literal[int] re-specialisation).
The in-process listener costs two clock reads per compilation; the cold run is otherwise the plain
command.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(record_path, argv):
    """Run `fastmlp ARGV` in this process, recording every Numba compilation into record_path."""
    from numba.core import event

    records = []
    stack = []

    class Recorder(event.Listener):
        # CPU time of this thread (Numba compiles on the calling thread): on a shared machine it
        # moves far less than wall time when other processes take the cores
        def on_start(self, ev):
            stack.append([time.thread_time(), 0.0])

        def on_end(self, ev):
            t0, inner = stack.pop()
            incl = time.thread_time() - t0
            if stack:
                stack[-1][1] += incl
            d = ev.data["dispatcher"]
            f = d.py_func
            records.append({"function": f"{f.__module__}.{f.__qualname__}",
                            "signature": ", ".join(str(a) for a in ev.data["args"]),
                            "inclusive": incl, "exclusive": incl - inner, "depth": len(stack)})

    event.register("numba:compile", Recorder())
    from fastmlp.cli import main
    code = 0
    try:
        main.main(argv, prog_name="fastmlp")
    except SystemExit as e:
        code = e.code or 0
    with open(record_path, "w") as f:
        json.dump(records, f)
    sys.exit(code)


def _run(env, args, tmp):
    record = os.path.join(tmp, "compiles.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", record, "--", "train", *args, "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"fastmlp train failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    with open(record) as f:
        compiles = json.load(f)
    return wall, result, compiles, out.stderr


SYNTHETIC = """
import os, sys, time
import numba
from fastmlp import _synthetic
c = time.process_time(); _synthetic.generate('test', 10); comp = time.process_time() - c
numba.set_num_threads(1)
c = time.process_time(); _synthetic.generate('train'); rend = time.process_time() - c
print(f"{comp:.2f} {rend:.2f}")
"""


def synthetic(root, rounds):
    """CPU seconds to compile the synthetic-digits renderer (fresh cache) and to render the 60,000
    training digits on one thread, in new processes."""
    out = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, NUMBA_CACHE_DIR=tmp, PYTHONPATH=os.path.abspath(root))
            r = subprocess.run([sys.executable, "-c", SYNTHETIC], env=env, capture_output=True, text=True,
                               cwd=tmp)
            if r.returncode != 0:
                sys.exit(r.stderr[-2000:])
            out.append(tuple(map(float, r.stdout.split())))
    return out


def _table(compiles):
    by = {}
    for r in compiles:
        e = by.setdefault(r["function"], {"n": 0, "exclusive": 0.0, "inclusive": 0.0, "sigs": []})
        e["n"] += 1
        e["exclusive"] += r["exclusive"]
        if r["depth"] == 0:
            e["inclusive"] += r["inclusive"]
        e["sigs"].append(r["signature"])
    rows = sorted(by.items(), key=lambda kv: -kv[1]["exclusive"])
    print(f"{'function':58s} {'compiles':>8s} {'own s':>7s} {'top-level s':>11s}  (CPU seconds)")
    for name, e in rows:
        top = f"{e['inclusive']:.2f}" if e["inclusive"] else ""
        print(f"{name[-58:]:58s} {e['n']:8d} {e['exclusive']:7.2f} {top:>11s}")
    total = sum(r["exclusive"] for r in compiles)
    print(f"{'total':58s} {len(compiles):8d} {total:7.2f}")
    twice = {name: e["sigs"] for name, e in rows if e["n"] > 1}
    for name, sigs in twice.items():
        print(f"  {name} compiled {len(sigs)} times:")
        for s in sigs:
            print(f"    ({s[:150]})")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        rest = sys.argv[3:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return _child(sys.argv[2], rest)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--warm", type=int, default=3, help="warm runs (median)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--root", default=ROOT, help="the checkout to measure (default: this one), e.g. an "
                   "unpacked `git archive` of an older commit")
    p.add_argument("train_args", nargs="*", help="arguments of `fastmlp train` (after --)")
    p.add_argument("--synthetic", action="store_true", help="only the synthetic-digits generator: CPU "
                   "seconds to compile it and to render the training split on one thread (3 rounds)")
    a = p.parse_args()
    if a.synthetic:
        for comp, rend in synthetic(a.root, 3):
            print(f"synthetic-digits: compile {comp:.2f} CPU s, render 60,000 on one thread {rend:.2f} CPU s")
        return
    tmp = tempfile.mkdtemp(prefix="fastmlp-first-run-")
    env = {k: v for k, v in os.environ.items() if k not in ("FASTMLP_DATA", "NUMBA_DEBUG_CACHE")}
    env.update(NUMBA_CACHE_DIR=os.path.join(tmp, "numba"), XDG_CACHE_HOME=os.path.join(tmp, "cache"),
               PYTHONPATH=os.path.abspath(a.root) + os.pathsep + env.get("PYTHONPATH", ""))
    try:
        cold, r_cold, c_cold, err_cold = _run(env, a.train_args, tmp)
        warm = []
        for _ in range(max(a.warm, 1)):
            w, r_warm, c_warm, err_warm = _run(env, a.train_args, tmp)
            warm.append(w)
    finally:
        if not a.keep:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    w = statistics.median(warm)
    print(f"fastmlp train {' '.join(a.train_args)}  (epochs {r_cold['epochs']}, "
          f"{r_cold['n_train']:,} samples, {r_cold['threads']} threads)")
    print(f"cold (empty Numba and data caches): {cold:6.2f} s wall, of which {r_cold['seconds']:.2f} s "
          f"training and {r_cold['compile_seconds']:.2f} s in the trainer's compile step; "
          f"{sum(r['exclusive'] for r in c_cold):.2f} CPU s compiling in all ({len(c_cold)} compilations)")
    print(f"warm (median of {len(warm)}: {', '.join(f'{x:.2f}' for x in warm)}): {w:6.2f} s wall, "
          f"{len(c_warm)} compilations")
    print(f"cold / warm: {cold / w:.1f}x   (test accuracy {r_cold['test_accuracy']})")
    lines = [ln for ln in err_cold.splitlines() if ln.strip()]
    if lines:
        print("stderr of the cold run:")
        for ln in lines:
            print("  " + ln)
    print()
    print("compilations of the cold run (own s: exclusive of callees compiled inside it):")
    _table(c_cold)
    if c_warm:
        print("\ncompilations of the last warm run:")
        _table(c_warm)


if __name__ == "__main__":
    main()
