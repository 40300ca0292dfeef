"""Prediction latency and throughput: fastmlp against PyTorch (inference_mode) and jax.jit, in one process.

    PYTHONPATH=. python benchmarks/latency.py                  # the table of issue 11
    PYTHONPATH=. python benchmarks/latency.py --parts          # and what one small call spends where

Cases (the same weights in every library, NumPy in and NumPy out, float32):
- one row (784,) of 784-100-10: net.forward (softmax outputs) and net.predict (the class index);
- 10,000 rows of 784-512-512-10: net.forward, as rows per second.
Each figure is the median over rounds of the mean time per call of a block of calls (after warm-up
calls that compile). PyTorch and JAX are optional: a missing one is skipped with a line.
Issue 11's targets: one row <= 0.5x PyTorch's latency; 10,000 rows >= 1.2x JAX's throughput.
"""
import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

PAUSE = 0.5  # seconds between timed blocks: spinning worker threads go to sleep
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def per_call(f, calls, rounds, warm=True):
    """Median over `rounds` of the mean seconds per call of `calls` calls."""
    if warm:
        f()
        f()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            f()
        times.append((time.perf_counter_ns() - t0) / calls / 1e9)
    return statistics.median(times)


def make_net(sizes, seed=0):
    import fastmlp
    return fastmlp.MLP(sizes, activation="relu", output="softmax", dtype="float32", seed=seed)


def torch_fns(net, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    layers = []
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if l < len(net.weights) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).eval()

    def forward(x):
        with torch.inference_mode():
            return torch.softmax(model(torch.from_numpy(x)), dim=-1).numpy()

    def predict(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).argmax(dim=-1).numpy()

    return forward, predict, f"PyTorch {torch.__version__}"


def jax_fns(net):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(net.weights, net.biases)]

    def logits(params, x):
        a = x
        for W, b in params[:-1]:
            a = jax.nn.relu(a @ W.T + b)
        W, b = params[-1]
        return a @ W.T + b

    fwd = jax.jit(lambda p, x: jax.nn.softmax(logits(p, x), axis=-1))
    pred = jax.jit(lambda p, x: jnp.argmax(logits(p, x), axis=-1))
    return (lambda x: np.asarray(fwd(params, x)), lambda x: np.asarray(pred(params, x)),
            f"JAX {jax.__version__}")


def parts(net, x):
    """What one small forward call spends where (the steps of the general path and of the fast path)."""
    import numba
    from fastmlp import _checks, _kernels as k
    from fastmlp._buffers import Workspace
    from fastmlp._threads import resolve_threads, thread_count

    def tc():
        with thread_count(1):
            pass

    sizes = net.sizes
    work = np.empty(x.shape[0] * sum(sizes), dtype=net.dtype)
    out = np.empty((x.shape[0], sizes[-1]), dtype=net.dtype)
    codes = (k.ACTIVATION_CODES[net.activation], k.ACTIVATION_CODES[net.output])
    rows = [
        ("net.forward (whole call)", lambda: net.forward(x)),
        ("net.predict (whole call)", lambda: net.predict(x)),
        ("general path: _checks.check_input", lambda: _checks.check_input("X", x, sizes[0], net.dtype)),
        ("general path: resolve_threads(None)", lambda: resolve_threads(None)),
        ("general path: thread_count enter + exit", tc),
        ("general path: Workspace(...)", lambda: Workspace(sizes, net.dtype, x.shape[0])),
        ("general path: net._run (all of it)", lambda: net._run(x, want_outputs=True)),
        ("fast path: two np.empty", lambda: (np.empty(x.shape[0] * sum(sizes), dtype=net.dtype),
                                             np.empty((x.shape[0], sizes[-1]), dtype=net.dtype))),
        ("fast path: _forward_rows kernel call", lambda: k._forward_rows(
            net.params, net.w_off, net.b_off, net.sizes_array, codes[0], codes[1], x.view(np.uint8),
            k.INPUT_FLOAT32 if x.dtype == np.float32 else k.INPUT_FLOAT64, 1.0, work, out, x.shape[0], 0, 1,
            k.network_kernels(net.dtype, net.sizes).forward_block.address())),
        ("np.argmax of the output row", lambda: np.argmax(out[0], axis=-1)),
        ("numba.get_num_threads()", numba.get_num_threads),
    ]
    print(f"\nwhere a one-row call of {'-'.join(map(str, sizes))} spends its time (us, median):")
    for name, f in rows:
        print(f"  {name:44s} {per_call(f, 2000, 7) * 1e6:8.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--calls", type=int, default=2000, help="calls per round for one row")
    p.add_argument("--big-calls", type=int, default=5, help="calls per round for 10,000 rows")
    p.add_argument("--parts", action="store_true", help="also the cost of each step of a small call")
    p.add_argument("--root", default=None, help="measure the fastmlp of this checkout (e.g. an unpacked "
                   "`git archive` of an older commit) instead of this one's")
    a = p.parse_args()
    if a.root:
        sys.path.insert(0, os.path.abspath(a.root))
    import numba
    threads = min(a.threads, numba.config.NUMBA_NUM_THREADS)
    rng = np.random.default_rng(0)
    small = make_net([784, 100, 10])
    big = make_net([784, 512, 512, 10])
    x1 = rng.random(784, dtype=np.float32)
    x1_row = x1.reshape(1, 784)
    Xbig = rng.random((10000, 784), dtype=np.float32)
    peers = [("fastmlp", (lambda x: small.forward(x, threads=threads), lambda x: small.predict(x, threads=threads),
                          lambda X: big.forward(X, threads=threads)), "fastmlp")]
    for name, make in (("PyTorch", lambda n: torch_fns(n, threads)), ("JAX", jax_fns)):
        fs, fb = make(small), make(big)
        if fs is None:
            print(f"{name} is not installed: skipped")
            continue
        peers.append((name, (lambda x, f=fs[0]: f(x[None])[0], lambda x, f=fs[1]: f(x[None])[0], fb[0]), fs[2]))
    # The same answers before timing anything.
    ref_fwd = small.forward(x1)
    ref_big = big.forward(Xbig[:64])
    for name, (fwd, pred, bigf), _ in peers[1:]:
        assert np.allclose(fwd(x1), ref_fwd, atol=1e-5), name
        assert int(pred(x1)) == int(np.argmax(ref_fwd)), name
        assert np.allclose(bigf(Xbig[:64]), ref_big, atol=1e-4), name
    print(f"{threads} threads; {', '.join(label for _, _, label in peers)}; "
          f"numba threading layer after a call: ", end="")
    big.forward(Xbig[:2000])
    print(numba.threading_layer())
    # Rounds alternate between the libraries, so that a busy stretch of the machine hits them alike;
    # a pause after each library's turn lets its idle worker threads stop spinning (OpenMP threads
    # spin for a while after a parallel region) before the next library runs.
    cases = [(name, i, functools.partial(f, X), calls)
             for name, fs, _ in peers
             for i, (f, X, calls) in enumerate(zip(fs, (x1, x1, Xbig), (a.calls, a.calls, a.big_calls)))]
    times = {(name, i): [] for name, i, _, _ in cases}
    for _, _, f, _ in cases:
        f()
        f()
    for _ in range(a.rounds):
        for lib, _, _ in peers:
            for name, i, f, calls in cases:
                if name == lib:
                    time.sleep(PAUSE)
                    times[name, i].append(per_call(f, calls, 1, warm=False))
    results = {name: tuple(statistics.median(times[name, i]) for i in range(3)) for name, _, _ in peers}
    base = results["fastmlp"]
    print(f"\n{'':10s} {'forward 1 row':>14s} {'predict 1 row':>14s} {'10,000 rows 784-512-512-10':>28s}")
    for name, (f, pr, b) in results.items():
        print(f"{name:10s} {f * 1e6:11.2f} us {pr * 1e6:11.2f} us {b * 1e3:11.1f} ms {10000 / b:12,.0f} rows/s")
    for name, (f, pr, b) in results.items():
        if name == "fastmlp":
            continue
        print(f"fastmlp / {name}: forward latency {base[0] / f:.2f}x, predict latency {base[1] / pr:.2f}x, "
              f"10,000-row throughput {b / base[2]:.2f}x")
    if a.parts:
        parts(small, x1_row)


if __name__ == "__main__":
    main()
