"""Throughput benchmark: fastmlp against a vectorised NumPy trainer or PyTorch on the CPU.

    from fastmlp import bench
    bench.run(hidden=(100,), batch_size=32, threads=2, vs="torch")

All trainers run plain minibatch SGD with softmax + cross-entropy on the same MNIST-shaped data
(uint8 pixels scaled by 1/255, 10 classes), from the same initial weights, for one epoch after a
warm-up of at least WARMUP_SECONDS (compilation, first-touch of memory, thread pools, and time
for the host to give the threads their cores), and are compared as samples per second measured in
the same process. GFLOP/s count the useful arithmetic of a training sample: forward pass, weight
gradients and the deltas of the hidden layers (2 flops per multiply-add; no input gradient).
`matmul_gflops` is the float32 2048x2048 matmul rate of NumPy's BLAS on this machine, the practical
ceiling (OpenBLAS follows OPENBLAS_NUM_THREADS, set before NumPy is imported).

Importing this module imports neither Numba nor PyTorch (nor click): they load when used.
"""
import time

import numpy as np

from .errors import FastMLPError

N_INPUT = 784
N_CLASSES = 10
TORCH_MISSING = "PyTorch is not installed: pip install 'fastmlp[torch]' (or pip install torch==2.13.0)"
VS_CHOICES = ("numpy", "torch")
LR = 0.05
# Each trainer trains on a small subset for at least this long before it is timed. Compiling, first
# touches of memory and thread pools are done after one pass; the rest is for the host: on this
# machine a process's two busy threads often run no faster than one for its first 25-600 ms.
WARMUP_SECONDS = 1.0
WARMUP_SAMPLES = 2048


def sizes_of(hidden, n_input=N_INPUT, n_classes=N_CLASSES):
    return [int(n_input)] + [int(h) for h in hidden] + [int(n_classes)]


def flops_per_sample(sizes):
    """Forward (2 per weight) + weight gradient (2 per weight) + delta of every hidden layer
    (2 per weight of the layer above it); the input gradient is not needed and not counted."""
    weights = [sizes[l] * sizes[l - 1] for l in range(1, len(sizes))]
    return 4 * sum(weights) + 2 * sum(weights[1:])


DATA_CHOICES = ("synthetic-digits", "random")


def make_data(n_samples=60000, seed=0, n_input=N_INPUT, n_classes=N_CLASSES, data="synthetic-digits"):
    """(X uint8 (n, 784), y int64 (n,)): MNIST-shaped data.

    'synthetic-digits' (default): fastmlp's generated hand-drawn digits (learnable, about 60% zero
    pixels, like MNIST's 80%), the first n of the training split, repeated beyond 60,000.
    'random': uniform random pixels and labels. Not learnable: with SGD most ReLUs die within an
    epoch, their deltas are zero and the trainers' work changes, so it measures something else."""
    if data not in DATA_CHOICES:
        raise FastMLPError(f"data: got {data!r}, expected one of {', '.join(DATA_CHOICES)}")
    if data == "synthetic-digits" and (n_input, n_classes) == (N_INPUT, N_CLASSES):
        from . import _synthetic
        m = min(n_samples, _synthetic.SIZES["train"])
        X, y = _synthetic.generate("train", m)
        if m < n_samples:
            reps = -(-n_samples // m)
            X, y = np.tile(X, (reps, 1))[:n_samples], np.tile(y, reps)[:n_samples]
        return np.ascontiguousarray(X), np.ascontiguousarray(y, dtype=np.int64)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n_samples, n_input), dtype=np.uint8)
    y = rng.integers(0, n_classes, size=n_samples).astype(np.int64)
    return X, y


def matmul_gflops(n=2048, repeats=5):
    """Best-of float32 (n x n) @ (n x n) rate of NumPy's BLAS, in GFLOP/s."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    np.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def _init_weights(sizes, seed):
    from .model import MLP
    net = MLP(sizes, activation="relu", output="softmax", dtype="float32", seed=seed)
    return net, [W.copy() for W in net.weights], [b.copy() for b in net.biases]


# ---------------------------------------------------------------------------------------------
# The trainers. Each returns (seconds of the timed epoch, final weights, final biases).
# ---------------------------------------------------------------------------------------------

def _warm_up(epoch, seconds):
    """epoch() once, then again until `seconds` have passed since the start."""
    t0 = time.perf_counter()
    epoch()
    while time.perf_counter() - t0 < seconds:
        epoch()


def _warmup_size(X, batch_size):
    return min(X.shape[0], max(4 * batch_size, WARMUP_SAMPLES))


def train_fastmlp(X, y, sizes, batch_size, threads, epochs=1, seed=0, lr=LR, warmup=True,
                  warmup_seconds=WARMUP_SECONDS):
    from .training import Trainer
    if warmup:  # compile (or load from the cache), start the thread pool, then keep it busy
        wnet, _, _ = _init_weights(sizes, seed)
        m = _warmup_size(X, batch_size)
        wt = Trainer(wnet, lr=lr, batch_size=batch_size, seed=seed, threads=threads)
        _warm_up(lambda: wt.fit(X[:m], y[:m], wt.epoch + 1, verbose=False), warmup_seconds)
    net, _, _ = _init_weights(sizes, seed)
    trainer = Trainer(net, optimizer="sgd", lr=lr, loss="ce", batch_size=batch_size, seed=seed,
                      threads=threads)
    t0 = time.perf_counter()
    trainer.fit(X, y, epochs, verbose=False)
    seconds = time.perf_counter() - t0
    return seconds, [W.copy() for W in net.weights], [b.copy() for b in net.biases]


def _numpy_epoch(X, y, Ws, bs, order, batch_size, lr):
    L = len(Ws)
    lr = np.float32(lr)
    inv255 = np.float32(1.0 / 255.0)
    for s0 in range(0, order.shape[0], batch_size):
        idx = order[s0:s0 + batch_size]
        n = idx.shape[0]
        acts = [X[idx].astype(np.float32) * inv255]
        for l in range(L):
            z = acts[-1] @ Ws[l].T
            z += bs[l]
            if l < L - 1:
                np.maximum(z, 0, out=z)
            acts.append(z)
        z = acts[-1]
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        delta = z
        delta[np.arange(n), y[idx]] -= 1
        delta *= np.float32(1.0 / n)
        for l in range(L - 1, -1, -1):
            a_prev = acts[l]
            dW = delta.T @ a_prev
            db = delta.sum(axis=0)
            if l > 0:
                delta = (delta @ Ws[l]) * (a_prev > 0)
            Ws[l] -= lr * dW
            bs[l] -= lr * db


def train_numpy(X, y, sizes, batch_size, threads=None, epochs=1, seed=0, lr=LR, warmup=True,
                warmup_seconds=WARMUP_SECONDS):
    """A vectorised NumPy trainer (BLAS matmuls): the same SGD, initial weights and sample order."""
    _, Ws, bs = _init_weights(sizes, seed)
    if warmup:
        wW, wb = [W.copy() for W in Ws], [b.copy() for b in bs]
        m = _warmup_size(X, batch_size)
        _warm_up(lambda: _numpy_epoch(X, y, wW, wb, np.arange(m), batch_size, lr), warmup_seconds)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        _numpy_epoch(X, y, Ws, bs, rng.permutation(X.shape[0]), batch_size, lr)
    return time.perf_counter() - t0, Ws, bs


def _import_torch():
    try:
        import torch
    except ImportError:
        raise FastMLPError(TORCH_MISSING) from None
    return torch


def train_torch(X, y, sizes, batch_size, threads, epochs=1, seed=0, lr=LR, warmup=True,
                warmup_seconds=WARMUP_SECONDS):
    """PyTorch CPU: nn.Sequential of Linear/ReLU, CrossEntropyLoss, SGD, manual batching."""
    torch = _import_torch()
    torch.set_num_threads(threads)
    _, Ws, bs = _init_weights(sizes, seed)
    layers = []
    for l in range(len(Ws)):
        lin = torch.nn.Linear(sizes[l], sizes[l + 1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(Ws[l]))
            lin.bias.copy_(torch.from_numpy(bs[l]))
        layers.append(lin)
        if l < len(Ws) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    saved = [p.detach().clone() for p in model.parameters()]
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)

    def epoch(order, opt):
        for s0 in range(0, order.shape[0], batch_size):
            idx = order[s0:s0 + batch_size]
            xb = Xt[idx].float().mul_(1.0 / 255.0)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yt[idx])
            loss.backward()
            opt.step()

    if warmup:
        m = _warmup_size(X, batch_size)
        wopt = torch.optim.SGD(model.parameters(), lr=lr)
        _warm_up(lambda: epoch(torch.arange(m), wopt), warmup_seconds)
        with torch.no_grad():
            for p, s in zip(model.parameters(), saved):
                p.copy_(s)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch(torch.from_numpy(rng.permutation(X.shape[0])), opt)
    seconds = time.perf_counter() - t0
    params = [p.detach().numpy().copy() for p in model.parameters()]
    return seconds, params[0::2], params[1::2]


def threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return None


TRAINERS = {"fastmlp": "train_fastmlp", "numpy": "train_numpy", "torch": "train_torch"}


def measure(trainer, hidden=(100,), batch_size=32, threads=2, n_samples=60000, epochs=1, seed=0,
            data="synthetic-digits", warmup_seconds=WARMUP_SECONDS):
    """Samples/s of one trainer, in this process (see measure_isolated)."""
    sizes = sizes_of(hidden)
    X, y = make_data(n_samples, seed, data=data)
    fn = globals()[TRAINERS[trainer]]
    seconds, _, _ = fn(X, y, sizes, batch_size, threads, epochs, seed, warmup_seconds=warmup_seconds)
    return {"seconds": seconds, "samples_per_second": n_samples * epochs / seconds,
            "threading_layer": threading_layer() if trainer == "fastmlp" else None}


def _child_env(threads):
    import os
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _in_subprocess(payload, threads):
    import json
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "fastmlp.bench", json.dumps(payload)], env=_child_env(threads),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise FastMLPError(f"benchmark subprocess failed: {lines[-1] if lines else proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_isolated(trainer, hidden=(100,), batch_size=32, threads=2, n_samples=60000, epochs=1, seed=0,
                     data="synthetic-digits", warmup_seconds=WARMUP_SECONDS):
    """measure() in a fresh Python process with every thread pool (Numba's OpenMP, OpenBLAS, PyTorch's
    OpenMP) sized to `threads`: two OpenMP runtimes in one process spin against each other, and a
    trainer measured after another would pay for the other's idle threads."""
    return _in_subprocess({"what": "measure", "trainer": trainer, "hidden": list(hidden),
                           "batch_size": batch_size, "threads": threads, "n_samples": n_samples,
                           "epochs": epochs, "seed": seed, "data": data, "warmup_seconds": warmup_seconds},
                          threads)


def matmul_gflops_isolated(threads):
    return _in_subprocess({"what": "matmul"}, threads)["gflops"]


def run(hidden=(100,), batch_size=32, threads=2, vs="numpy", n_samples=60000, epochs=1, seed=0,
        matmul=True, isolated=True, data="synthetic-digits", repeats=1, warmup_seconds=WARMUP_SECONDS):
    """One side-by-side measurement; returns a dict of the figures (see the module docstring).
    Each trainer (and the matmul) runs in its own subprocess unless isolated=False. With repeats > 1
    the two trainers run alternately that many times each and the medians are compared, so that a
    slow moment of a shared machine falls on both."""
    if vs not in VS_CHOICES:
        raise FastMLPError(f"vs: got {vs!r}, expected one of {', '.join(VS_CHOICES)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise FastMLPError(f"repeats: got {repeats!r}, expected a positive integer")
    if isinstance(warmup_seconds, bool) or not isinstance(warmup_seconds, (int, float)) or not warmup_seconds >= 0:
        raise FastMLPError(f"warmup_seconds: got {warmup_seconds!r}, expected a number of seconds >= 0")
    if vs == "torch":
        _import_torch()  # fail before the long part
    hidden = (hidden,) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    sizes = sizes_of(hidden)
    fps = flops_per_sample(sizes)
    how = measure_isolated if isolated else measure
    args = dict(hidden=hidden, batch_size=batch_size, threads=threads, n_samples=n_samples, epochs=epochs,
                seed=seed, data=data, warmup_seconds=float(warmup_seconds))
    f_runs, r_runs = [], []
    for _ in range(repeats):
        f = how("fastmlp", **args)
        f_runs.append(f["samples_per_second"])
        r_runs.append(how(vs, **args)["samples_per_second"])
    if matmul:
        mm = matmul_gflops_isolated(threads) if isolated else matmul_gflops()
    else:
        mm = float("nan")
    f_sps = float(np.median(f_runs))
    r_sps = float(np.median(r_runs))
    f_gf = f_sps * fps / 1e9
    return {
        "network": "-".join(str(s) for s in sizes),
        "batch_size": batch_size,
        "threads": threads,
        "vs": vs,
        "n_samples": n_samples,
        "epochs": epochs,
        "data": data,
        "repeats": repeats,
        "warmup_seconds": float(warmup_seconds),
        "fastmlp_runs_samples_per_second": f_runs,
        "reference_runs_samples_per_second": r_runs,
        "fastmlp_samples_per_second": f_sps,
        "reference_samples_per_second": r_sps,
        "ratio": f_sps / r_sps,
        "flops_per_sample": fps,
        "fastmlp_gflops": f_gf,
        "reference_gflops": r_sps * fps / 1e9,
        "matmul_gflops": mm,
        "fastmlp_share_of_matmul": f_gf / mm,
        "threading_layer": f["threading_layer"] if isolated else threading_layer(),
    }


def format_result(r):
    return "\n".join([
        f"network {r['network']}  batch {r['batch_size']}  threads {r['threads']}  "
        f"{r['n_samples']} samples ({r['data']}) x {r['epochs']} epoch(s)  threading layer {r['threading_layer']}"
        + (f"\nmedians of {r['repeats']} alternating runs each" if r["repeats"] > 1 else ""),
        f"fastmlp   {r['fastmlp_samples_per_second']:>12,.0f} samples/s  {r['fastmlp_gflops']:7.1f} GFLOP/s  "
        f"({100 * r['fastmlp_share_of_matmul']:.0f}% of matmul {r['matmul_gflops']:.0f} GFLOP/s)",
        f"{r['vs']:<9} {r['reference_samples_per_second']:>12,.0f} samples/s  {r['reference_gflops']:7.1f} GFLOP/s",
        f"ratio     {r['ratio']:.2f}x",
    ])


def _main(argv):
    import json
    payload = json.loads(argv[0])
    if payload.pop("what") == "matmul":
        out = {"gflops": matmul_gflops()}
    else:
        payload["hidden"] = tuple(payload["hidden"])
        out = measure(**payload)
    print(json.dumps(out))


if __name__ == "__main__":
    import sys
    _main(sys.argv[1:])
