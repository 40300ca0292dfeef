"""Throughput benchmark: fastmlp against a vectorised NumPy trainer or PyTorch on the CPU.

    from fastmlp import bench
    bench.run(hidden=(100,), batch_size=32, threads=2, vs="torch")

All trainers run plain minibatch SGD with softmax + cross-entropy on the same MNIST-shaped data
(uint8 pixels scaled by 1/255, 10 classes), from the same initial weights, for one epoch after a
warm-up of at least WARMUP_SECONDS (compilation, first-touch of memory, thread pools, and time
for the host to give the threads their cores), and are compared as samples per second measured in
the same process. GFLOP/s count the useful arithmetic of a training sample: forward pass, weight
gradients and the deltas of the hidden layers (2 flops per multiply-add; no input gradient); "work
done" leaves out what the kernels skip (done_flops_per_sample), so that it never overstates the
rate of the arithmetic the CPU did.
`matmul_gflops` is the float32 2048x2048 matmul rate of NumPy's BLAS on this machine, the practical
ceiling (OpenBLAS follows OPENBLAS_NUM_THREADS, set before NumPy is imported).

Importing this module imports neither Numba nor PyTorch (nor click): they load when used.
"""
import contextlib
import functools
import time

import numpy as np

from .errors import FastMLPError
from ._plan import label_grouped

N_INPUT = 784
N_CLASSES = 10
TORCH_MISSING = "PyTorch is not installed: pip install 'fastmlp[torch]' (or pip install torch==2.13.0)"
JAX_MISSING = "JAX is not installed: pip install 'fastmlp[jax]' (or pip install \"jax[cpu]\")"
SKLEARN_MISSING = "scikit-learn is not installed: pip install 'fastmlp[sklearn]' (or pip install scikit-learn)"
# "jax" is JAX's strongest form here: jax.jit over lax.scan of a chunk of minibatches, buffers donated;
# "jax-jit" is one jitted call per minibatch.
VS_CHOICES = ("numpy", "torch", "torch-compile", "jax", "jax-jit", "sklearn")
OPTIMIZERS = ("sgd", "adam")
DTYPES = ("float32", "float64")
LR = 0.05
ADAM_LR = 0.001
# Minibatches per jitted lax.scan call of the "jax" trainer.
JAX_SCAN_STEPS = 256
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


def skips_zero_deltas():
    """True when this CPU's weight-gradient kernel leaves out the samples whose deltas of a group of
    4 rows are all zero (the AVX-512 and 16-register non-FMA blockings); the AVX2 + FMA micro-kernel
    does the whole product."""
    from . import _kernels
    return _kernels.TILE_ROWS != 6


def delta_skip_groups(sizes):
    """Per hidden layer l = 1..L-1 of a network with layer sizes `sizes`: the number of consecutive
    samples of a minibatch over which the delta recursion through layer l (summing over its N_l
    units into delta^{l-1}) leaves out a unit whose deltas are all zero (ReLU off for all of them):
    6 with the AVX2 + FMA micro-kernel, 4 with the AVX-512 tiles, 0 where nothing is left out (the
    16-register non-FMA blockings, and layer 1, below which no delta is computed)."""
    from . import _kernels
    tiles = 4 if _kernels.TILE_ROWS == 4 else 0
    return [0] + [_kernels.MICRO_ROWS if _kernels.delta_takes_micro(N) else tiles for N in sizes[2:-1]]


def done_flops_per_sample(Ws, bs, X, skips=True, group=4, delta_groups=None, batch_size=None, labels=None,
                          forward_threads=None, itemsize=4):
    """The arithmetic a training sample actually costs the kernels, estimated from the weights Ws,
    bs of a ReLU network on the uint8 rows X: flops_per_sample less, with `skips`, the weight-gradient
    work of each hidden layer for the (sample, group of `group` rows) pairs whose z are all <= 0
    (ReLU's delta is zero there and the kernel leaves them out; the rows grouped as a trainer
    groups them, _kernels._group_units, from the first minibatch of batch_size rows, 128 by
    default), and, with delta_groups (see delta_skip_groups), the delta-recursion work of each
    hidden layer l for the (unit, group of delta_groups[l - 1] consecutive samples) pairs whose z
    are all <= 0; the groups start afresh in each minibatch of batch_size rows (default: all of X),
    and with `labels` (one per row of X) take each minibatch's samples in the order of their labels,
    as the trainer does (_plan.label_grouped); and, with forward_threads (the trainer's thread
    count; itemsize its floats' bytes), the forward work of each layer for the (input, group of 4
    consecutive samples, in that order too) pairs whose inputs are all zero, in the minibatches
    whose forward pass through that layer takes the gather tile (_kernels.forward_grouped_samples).
    At the trained weights: the share skipped earlier in the epoch differs somewhat."""
    sizes = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    total = float(flops_per_sample(sizes))
    a = X.astype(np.float64) / 255.0
    B = batch_size or max(X.shape[0], 1)
    grouped = np.arange(X.shape[0])  # the rows in the order the trainer groups them
    if labels is not None:
        grouped = label_grouped(grouped, labels, B)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        if forward_threads:
            total -= 2.0 * sizes[l + 1] * _forward_skipped(a[grouped], sizes[l + 1], B, forward_threads, itemsize)
        if l == len(Ws) - 1:
            break
        z = a @ np.asarray(W, dtype=np.float64).T + np.asarray(b, dtype=np.float64)
        n, N = z.shape
        if skips:
            order = np.arange(N, dtype=np.int64)
            if group == 4 and n:
                from . import _kernels
                _kernels._group_units((z[:batch_size or 128] > 0).astype(np.float64), order)
            pad = -N % group  # a last partial group repeats its last row
            zero = (z <= 0)[:, np.concatenate([order, np.repeat(order[-1:], pad)])]
            rows = np.minimum(group, N - group * np.arange(zero.shape[1] // group))  # real rows per group
            skipped_rows = (zero.reshape(n, -1, group).all(axis=2) * rows).sum(axis=1).mean()
            total -= 2.0 * skipped_rows * sizes[l]
        G = delta_groups[l] if delta_groups else 0
        if G and n:
            starts = np.concatenate([np.arange(b0, min(b0 + B, n), G) for b0 in range(0, n, B)])  # groups' first rows
            active = np.add.reduceat((z[grouped] > 0).astype(np.int64), starts, axis=0) > 0  # (groups, N)
            samples = np.diff(np.append(starts, n))  # real samples per group
            total -= 2.0 * sizes[l] * float(((~active).sum(axis=1) * samples).sum()) / n
        a = np.maximum(z, 0.0)
    return total


def _forward_skipped(a, N, batch_size, threads, itemsize):
    """Per sample of a (n, M), the inputs that the forward pass through a layer of N units leaves
    out (done_flops_per_sample): for each minibatch of batch_size rows, in each range of samples
    that takes the gather tile, each group of 4 consecutive samples leaves out the inputs that are
    zero for all of them, for each of its samples."""
    from . import _kernels
    n, M = a.shape
    skipped = 0.0
    for b0 in range(0, n, batch_size):
        rows = min(batch_size, n - b0)
        for s0, s1 in _kernels.forward_grouped_samples(N, M, rows, threads, itemsize):
            for g in range(b0 + s0, b0 + s1, 4):
                e = min(g + 4, b0 + s1)
                skipped += float((a[g:e] == 0).all(axis=0).sum()) * (e - g)
    return skipped / n if n else 0.0


DATA_CHOICES = ("synthetic-digits", "random", "fashion-mnist")


def make_data(n_samples=60000, seed=0, n_input=N_INPUT, n_classes=N_CLASSES, data="synthetic-digits"):
    """(X uint8 (n, 784), y int64 (n,)): MNIST-shaped data.

    'synthetic-digits' (default): fastmlp's generated hand-drawn digits (learnable, about 60% zero
    pixels, like MNIST's 80%), the first n of the training split, repeated beyond 60,000.
    'fashion-mnist': the real Fashion-MNIST training split (found locally, e.g. Debian's
    dataset-fashion-mnist; never downloaded here), repeated beyond 60,000.
    'random': uniform random pixels and labels. Not learnable: with SGD most ReLUs die within an
    epoch, their deltas are zero and the trainers' work changes, so it measures something else."""
    if data not in DATA_CHOICES:
        raise FastMLPError(f"data: got {data!r}, expected one of {', '.join(DATA_CHOICES)}")
    if data == "fashion-mnist" and (n_input, n_classes) == (N_INPUT, N_CLASSES):
        from . import datasets
        X, y = datasets.load("fashion-mnist", "train", download=False, progress=False)
        return _repeat(X, y, n_samples)
    if data == "synthetic-digits" and (n_input, n_classes) == (N_INPUT, N_CLASSES):
        from . import _synthetic
        m = min(n_samples, _synthetic.SIZES["train"])
        X, y = _synthetic.generate("train", m)
        return _repeat(X, y, n_samples)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n_samples, n_input), dtype=np.uint8)
    y = rng.integers(0, n_classes, size=n_samples).astype(np.int64)
    return X, y


def _repeat(X, y, n_samples):
    if X.shape[0] < n_samples:
        reps = -(-n_samples // X.shape[0])
        X, y = np.tile(X, (reps, 1)), np.tile(y, reps)
    return np.ascontiguousarray(X[:n_samples]), np.ascontiguousarray(y[:n_samples], dtype=np.int64)


def make_test_data(data="synthetic-digits"):
    """The held-out split of `data` (X uint8, y int64), on which every trainer's final weights are
    scored, or None for random data."""
    if data not in DATA_CHOICES:
        raise FastMLPError(f"data: got {data!r}, expected one of {', '.join(DATA_CHOICES)}")
    if data == "random":
        return None
    if data == "fashion-mnist":
        from . import datasets
        X, y = datasets.load("fashion-mnist", "test", download=False, progress=False)
    else:
        from . import _synthetic
        X, y = _synthetic.generate("test")
    return np.ascontiguousarray(X), np.ascontiguousarray(y, dtype=np.int64)


def test_accuracy(Ws, bs, X, y):
    """Share of the rows of uint8 X whose argmax of the ReLU network's output is y (NumPy, float64)."""
    a = X.astype(np.float64) / 255.0
    for l, (W, b) in enumerate(zip(Ws, bs)):
        a = a @ np.asarray(W, dtype=np.float64).T + np.asarray(b, dtype=np.float64)
        if l < len(Ws) - 1:
            a = np.maximum(a, 0.0)
    return float(np.mean(np.argmax(a, axis=1) == y))


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


def _init_weights(sizes, seed, dtype="float32"):
    from .model import MLP
    net = MLP(sizes, activation="relu", output="softmax", dtype=dtype, seed=seed)
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
                  warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32"):
    from .training import Trainer
    if warmup:  # compile (or load from the cache), start the thread pool, then keep it busy
        wnet, _, _ = _init_weights(sizes, seed, dtype)
        wt = Trainer(wnet, optimizer=optimizer, lr=lr, batch_size=batch_size, seed=seed, threads=threads)
        # at least one whole chunk of the timed fit, whose buffers (fastmlp._buffers.take_workspace)
        # are then allocated and faulted in here, as every peer's are in its warm-up
        m = min(X.shape[0], max(_warmup_size(X, batch_size), wt.chunk_samples(X.shape[0])))
        _warm_up(lambda: wt.fit(X[:m], y[:m], wt.epoch + 1, verbose=False), warmup_seconds)
    net, _, _ = _init_weights(sizes, seed, dtype)
    trainer = Trainer(net, optimizer=optimizer, lr=lr, loss="ce", batch_size=batch_size, seed=seed,
                      threads=threads)
    t0 = time.perf_counter()
    trainer.fit(X, y, epochs, verbose=False)
    seconds = time.perf_counter() - t0
    return seconds, [W.copy() for W in net.weights], [b.copy() for b in net.biases]


def _numpy_epoch(X, y, Ws, bs, order, batch_size, lr):
    L = len(Ws)
    dt = Ws[0].dtype.type
    lr = dt(lr)
    inv255 = dt(1.0 / 255.0)
    for s0 in range(0, order.shape[0], batch_size):
        idx = order[s0:s0 + batch_size]
        n = idx.shape[0]
        acts = [X[idx].astype(dt) * inv255]
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
        delta *= dt(1.0 / n)
        for l in range(L - 1, -1, -1):
            a_prev = acts[l]
            dW = delta.T @ a_prev
            db = delta.sum(axis=0)
            if l > 0:
                delta = (delta @ Ws[l]) * (a_prev > 0)
            Ws[l] -= lr * dW
            bs[l] -= lr * db


def train_numpy(X, y, sizes, batch_size, threads=None, epochs=1, seed=0, lr=LR, warmup=True,
                warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32"):
    """A vectorised NumPy trainer (BLAS matmuls): the same SGD, initial weights and sample order."""
    if optimizer != "sgd":
        raise FastMLPError(f"the NumPy reference trains with sgd only, not {optimizer!r}")
    _, Ws, bs = _init_weights(sizes, seed, dtype)
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
                warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32", compile=False):
    """PyTorch CPU: nn.Sequential of Linear/ReLU, CrossEntropyLoss, SGD or Adam, manual batching;
    with compile=True the model runs through torch.compile (shapes static: one graph for the batch
    size and one for the last, partial batch, both compiled during the warm-up)."""
    torch = _import_torch()
    torch.set_num_threads(threads)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    _, Ws, bs = _init_weights(sizes, seed, dtype)
    layers = []
    for l in range(len(Ws)):
        lin = torch.nn.Linear(sizes[l], sizes[l + 1], dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(Ws[l]))
            lin.bias.copy_(torch.from_numpy(bs[l]))
        layers.append(lin)
        if l < len(Ws) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    saved = [p.detach().clone() for p in model.parameters()]
    loss_fn = torch.nn.CrossEntropyLoss()
    forward = model
    if compile:
        try:
            forward = torch.compile(model, dynamic=False)
        except Exception as e:  # noqa: BLE001 - any backend failure is reported as one line
            raise FastMLPError(f"torch.compile failed: {e}") from None
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)

    def make_opt():
        if optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=lr)
        return torch.optim.SGD(model.parameters(), lr=lr)

    def epoch(order, opt):
        for s0 in range(0, order.shape[0], batch_size):
            idx = order[s0:s0 + batch_size]
            xb = Xt[idx].to(tdtype).mul_(1.0 / 255.0)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(forward(xb), yt[idx])
            loss.backward()
            opt.step()

    if warmup:
        m = _warmup_size(X, batch_size)
        wopt = make_opt()
        # the last batch of the timed epoch may be shorter: compile (and warm) its shape too
        tail = X.shape[0] % batch_size
        _warm_up(lambda: (epoch(torch.arange(m), wopt), tail and epoch(torch.arange(tail), wopt)),
                 warmup_seconds)
        with torch.no_grad():
            for p, s in zip(model.parameters(), saved):
                p.copy_(s)
    opt = make_opt()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        epoch(torch.from_numpy(rng.permutation(X.shape[0])), opt)
    seconds = time.perf_counter() - t0
    params = [p.detach().numpy().copy() for p in model.parameters()]
    return seconds, params[0::2], params[1::2]


def train_torch_compile(X, y, sizes, batch_size, threads, epochs=1, seed=0, lr=LR, warmup=True,
                        warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32"):
    return train_torch(X, y, sizes, batch_size, threads, epochs, seed, lr, warmup, warmup_seconds,
                       optimizer, dtype, compile=True)


def _import_jax(dtype):
    try:
        import jax
    except ImportError:
        raise FastMLPError(JAX_MISSING) from None
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    return jax


def _jax_step_fn(jax, optimizer, lr, dt):
    """The training step (params, opt_state), (X, y, idx) -> new state: softmax-CE of the mean over
    the batch, SGD or Adam with PyTorch's semantics, the gather and 1/255 inside the compiled code."""
    jnp = jax.numpy

    def loss(params, xb, yb):
        a = xb
        for W, b in params[:-1]:
            a = jax.nn.relu(a @ W.T + b)
        W, b = params[-1]
        logp = jax.nn.log_softmax(a @ W.T + b)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    grad = jax.grad(loss)
    b1, b2, eps = 0.9, 0.999, 1e-8

    def step(state, X, y, idx):
        params, opt = state
        xb = X[idx].astype(dt) * dt(1.0 / 255.0)
        g = grad(params, xb, y[idx])
        if optimizer == "sgd":
            return jax.tree_util.tree_map(lambda p, d: p - dt(lr) * d, params, g), opt
        m, v, t = opt
        t = t + 1
        m = jax.tree_util.tree_map(lambda m_, d: b1 * m_ + (1 - b1) * d, m, g)
        v = jax.tree_util.tree_map(lambda v_, d: b2 * v_ + (1 - b2) * d * d, v, g)
        step_size = lr / (1 - b1 ** t)
        bc2 = jnp.sqrt(1 - b2 ** t)
        params = jax.tree_util.tree_map(lambda p, m_, v_: p - step_size * m_ / (jnp.sqrt(v_) / bc2 + eps),
                                        params, m, v)
        return params, (m, v, t)

    return step


def train_jax(X, y, sizes, batch_size, threads, epochs=1, seed=0, lr=LR, warmup=True,
              warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32", scan=True):
    """JAX on the CPU. scan=True: jax.jit over lax.scan of JAX_SCAN_STEPS minibatches per call (the
    form that pays the dispatch cost once per chunk), state buffers donated; scan=False: one jitted
    call per minibatch. The remaining full batches and the last partial one run through the
    per-step function. Every compiled shape is compiled during the warm-up."""
    jax = _import_jax(dtype)
    jnp = jax.numpy
    dt = np.float64 if dtype == "float64" else np.float32
    _, Ws, bs = _init_weights(sizes, seed, dtype)
    step = _jax_step_fn(jax, optimizer, lr, dt)
    one = jax.jit(step, donate_argnums=0)

    def many(state, X_, y_, idxs):
        return jax.lax.scan(lambda s, idx: (step(s, X_, y_, idx), None), state, idxs)[0]

    chunk = jax.jit(many, donate_argnums=0)
    Xd, yd = jnp.asarray(X), jnp.asarray(y.astype(np.int32))

    def fresh_state():
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(Ws, bs)]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        opt = (zeros, jax.tree_util.tree_map(jnp.zeros_like, params), 0) if optimizer == "adam" else ()
        return params, opt

    def epoch(state, order):
        n = order.shape[0]
        full = n // batch_size
        s = 0
        if scan:
            while full - s // batch_size >= JAX_SCAN_STEPS:
                idxs = order[s:s + JAX_SCAN_STEPS * batch_size].reshape(JAX_SCAN_STEPS, batch_size)
                state = chunk(state, Xd, yd, jnp.asarray(idxs))
                s += JAX_SCAN_STEPS * batch_size
        while s < n:
            state = one(state, Xd, yd, jnp.asarray(order[s:s + batch_size]))
            s += batch_size
        return state

    def block(state):
        jax.block_until_ready(state[0])
        return state

    if warmup:
        m = _warmup_size(X, batch_size)
        warm = [fresh_state()]
        shapes = [np.arange(min(X.shape[0], JAX_SCAN_STEPS * batch_size)) if scan else np.arange(0),
                  np.arange(m), np.arange(X.shape[0] % batch_size)]

        def warm_epoch():
            for order in shapes:
                warm[0] = block(epoch(warm[0], order.astype(np.int32)))

        _warm_up(warm_epoch, warmup_seconds)
    state = fresh_state()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        state = block(epoch(state, rng.permutation(X.shape[0]).astype(np.int32)))
    seconds = time.perf_counter() - t0
    params = [(np.asarray(W), np.asarray(b)) for W, b in state[0]]
    return seconds, [W for W, _ in params], [b for _, b in params]


def train_jax_jit(X, y, sizes, batch_size, threads, epochs=1, seed=0, lr=LR, warmup=True,
                  warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32"):
    return train_jax(X, y, sizes, batch_size, threads, epochs, seed, lr, warmup, warmup_seconds,
                     optimizer, dtype, scan=False)


def train_sklearn(X, y, sizes, batch_size, threads, epochs=1, seed=0, lr=LR, warmup=True,
                  warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32"):
    """scikit-learn's MLPClassifier, partial_fit for one pass per epoch: the same network, loss,
    optimizer (plain SGD: momentum 0; or Adam), learning rate and batch size, no L2 penalty. Its own
    initial weights and sample order (it takes neither from outside); X is scaled to [0, 1] in the
    network's dtype before the clock starts."""
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        raise FastMLPError(SKLEARN_MISSING) from None
    import warnings
    dt = np.float64 if dtype == "float64" else np.float32
    Xf = X.astype(dt) / dt(255.0)
    classes = np.arange(sizes[-1])

    def make():
        return MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver=optimizer,
                             alpha=0.0, batch_size=batch_size, learning_rate_init=lr, momentum=0.0,
                             nesterovs_momentum=False, shuffle=True, random_state=seed)

    if warmup:
        m = _warmup_size(X, batch_size)
        w = make()
        _warm_up(lambda: w.partial_fit(Xf[:m], y[:m], classes=classes), warmup_seconds)
    clf = make()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            clf.partial_fit(Xf, y, classes=classes)
    seconds = time.perf_counter() - t0
    return seconds, [W.T.copy() for W in clf.coefs_], [b.copy() for b in clf.intercepts_]


def threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return None


TRAINERS = {"fastmlp": "train_fastmlp", "numpy": "train_numpy", "torch": "train_torch",
            "torch-compile": "train_torch_compile", "jax": "train_jax", "jax-jit": "train_jax_jit",
            "sklearn": "train_sklearn"}


def default_lr(optimizer):
    return ADAM_LR if optimizer == "adam" else LR


def measure(trainer, hidden=(100,), batch_size=32, threads=2, n_samples=60000, epochs=1, seed=0,
            data="synthetic-digits", warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32",
            lr=None):
    """Samples/s of one trainer, in this process (see measure_isolated), and the test accuracy of
    the weights it trained (None for random data)."""
    if trainer not in TRAINERS:
        raise FastMLPError(f"trainer: got {trainer!r}, expected one of {', '.join(TRAINERS)}")
    sizes = sizes_of(hidden)
    X, y = make_data(n_samples, seed, data=data)
    fn = globals()[TRAINERS[trainer]]
    lr = default_lr(optimizer) if lr is None else lr
    seconds, Ws, bs = fn(X, y, sizes, batch_size, threads, epochs, seed, lr, warmup_seconds=warmup_seconds,
                         optimizer=optimizer, dtype=dtype)
    test = make_test_data(data)
    done = None
    if trainer == "fastmlp":
        done = done_flops_per_sample(Ws, bs, test[0] if test is not None else X[:10000], skips_zero_deltas(),
                                     delta_groups=delta_skip_groups(sizes), batch_size=batch_size,
                                     labels=test[1] if test is not None else y[:10000], forward_threads=threads,
                                     itemsize=np.dtype(dtype).itemsize)
    return {"seconds": seconds, "samples_per_second": n_samples * epochs / seconds,
            "test_accuracy": None if test is None else test_accuracy(Ws, bs, *test),
            "done_flops_per_sample": done,
            "threading_layer": threading_layer() if trainer == "fastmlp" else None}


def _child_env(threads, unpinned_blas=False):
    """The environment of a measuring subprocess. unpinned_blas drops OPENBLAS_CORETYPE and
    OPENBLAS_L2_SIZE (which some machines set to pin OpenBLAS to an older, narrower kernel), so that
    the matmul ceiling is measured with the kernel OpenBLAS picks for this CPU; only the ceiling's
    own subprocess ever runs that way."""
    import os
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    # XLA sizes its pool to the machine; one thread must mean one thread for JAX too
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                            "intra_op_parallelism_threads=1").strip()
    if unpinned_blas:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    return env


def blas_kernel():
    """The BLAS library and the CPU kernel it runs (threadpoolctl), e.g. 'openblas SkylakeX', or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return f"{pool.get('internal_api')} {pool.get('architecture')}"
    return None


def _in_subprocess(payload, threads, unpinned_blas=False):
    import json
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "fastmlp.bench", json.dumps(payload)],
                          env=_child_env(threads, unpinned_blas), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise FastMLPError(f"benchmark subprocess failed: {lines[-1] if lines else proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_isolated(trainer, hidden=(100,), batch_size=32, threads=2, n_samples=60000, epochs=1, seed=0,
                     data="synthetic-digits", warmup_seconds=WARMUP_SECONDS, optimizer="sgd", dtype="float32",
                     lr=None):
    """measure() in a fresh Python process with every thread pool (Numba's OpenMP, OpenBLAS, PyTorch's
    OpenMP, XLA) sized to `threads`: two OpenMP runtimes in one process spin against each other, and a
    trainer measured after another would pay for the other's idle threads."""
    return _in_subprocess({"what": "measure", "trainer": trainer, "hidden": list(hidden),
                           "batch_size": batch_size, "threads": threads, "n_samples": n_samples,
                           "epochs": epochs, "seed": seed, "data": data, "warmup_seconds": warmup_seconds,
                           "optimizer": optimizer, "dtype": dtype, "lr": lr},
                          threads)


class MeasuringProcess:
    """A fresh Python process, environment as measure_isolated's, that stays and answers measure()
    requests one after another (a context manager; close() ends it):

        with MeasuringProcess(2) as p:
            r = p.measure("jax", hidden=(100,), batch_size=32, data="fashion-mnist")

    Trainers that alternate through processes of their own that stay meet the machine in the same
    moments: their measurements follow one another seconds apart, not separated by starting
    Python, importing PyTorch or JAX and loading the data each time (a slow spell of a shared
    host lasts seconds and would fall on one trainer's rounds more than another's). Each request
    still warms up for its warmup_seconds."""

    def __init__(self, threads):
        import subprocess
        import sys
        import tempfile
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen([sys.executable, "-m", "fastmlp.bench", "--serve"], env=_child_env(threads),
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True)

    def measure(self, trainer, hidden=(100,), **kwargs):
        """measure(trainer, hidden, ...) in the process: its dict, with the process's "pid"."""
        import json
        payload = {"what": "measure", "trainer": trainer, "hidden": list(hidden), **kwargs}
        try:
            self._proc.stdin.write(json.dumps(payload) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except (BrokenPipeError, ValueError):  # (ValueError: closed)
            line = ""
        if not line:
            self._stderr.seek(0)
            lines = self._stderr.read().strip().splitlines()
            raise FastMLPError(f"benchmark subprocess failed: {lines[-1] if lines else self._proc.poll()}")
        out = json.loads(line)
        if "error" in out:
            raise FastMLPError(out["error"])
        return out

    def close(self):
        try:
            self._proc.stdin.close()  # (the process reads its end and exits)
        except OSError:  # (a request it never read, when it died)
            pass
        try:
            self._proc.wait(timeout=30)
        except Exception:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve():
    # MeasuringProcess's side: one JSON request per line of stdin, one JSON answer per line of the
    # stdout it was started with (anything else a trainer prints goes to stderr)
    import json
    import os
    import sys
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        payload = json.loads(line)
        payload.pop("what")
        payload["hidden"] = tuple(payload["hidden"])
        try:
            out = dict(measure(**payload), pid=os.getpid())
        except FastMLPError as e:
            out = {"error": str(e)}
        except Exception as e:  # (a peer's own failure: reported as the one-shot process reports it)
            out = {"error": f"benchmark subprocess failed: {type(e).__name__}: {e}"}
        answers.write(json.dumps(out) + "\n")
        answers.flush()


def matmul_gflops_isolated(threads, unpinned_blas=False):
    """(GFLOP/s, BLAS kernel) of NumPy's float32 matmul in a fresh process; see _child_env."""
    out = _in_subprocess({"what": "matmul"}, threads, unpinned_blas)
    return out["gflops"], out["blas"]


# Between two measurements in processes that stay, the longest wait for the cores to look idle
SETTLE_SECONDS = 2.0


def settle(threads):
    """Wait until the trainer measured last has stopped using the cores (a thread pool spins for a
    moment after its work), at most SETTLE_SECONDS."""
    from ._pacer import cores_busy
    end = time.monotonic() + SETTLE_SECONDS
    time.sleep(0.1)
    while cores_busy(threads) and time.monotonic() < end:
        time.sleep(0.05)


def alternate(trainers, repeats, threads, isolated=True):
    """Yield (trainer, how) for `repeats` rounds, each trainer once per round in round_order; how(**kw)
    measures that trainer (measure's keywords but the trainer). isolated: in a process of its own
    that stays for every round (MeasuringProcess), after the cores look idle (settle); else here."""
    with contextlib.ExitStack() as stack:
        procs = {t: stack.enter_context(MeasuringProcess(threads)) for t in trainers} if isolated else {}
        for i in range(repeats):
            for t in round_order(trainers, i):
                if isolated:
                    settle(threads)
                    yield t, functools.partial(procs[t].measure, t)
                else:
                    yield t, functools.partial(measure, t)


def round_order(items, i):
    """The order of round i of measurements that alternate between items: each round starts one item
    further along (a process that follows another finds the machine in another state, and none
    should always meet the same one)."""
    k = i % len(items)
    return list(items[k:]) + list(items[:k])


def run(hidden=(100,), batch_size=32, threads=2, vs="numpy", n_samples=60000, epochs=1, seed=0,
        matmul=True, isolated=True, data="synthetic-digits", repeats=1, warmup_seconds=WARMUP_SECONDS,
        optimizer="sgd", dtype="float32"):
    """One side-by-side measurement; returns a dict of the figures (see the module docstring).
    Each trainer (and the matmul) runs in its own subprocess unless isolated=False; a trainer's
    process stays for all its rounds (MeasuringProcess). With repeats > 1 the two trainers run
    alternately that many times each (each round starting with the other one) and the medians are
    compared, so that a slow moment of a shared machine falls on both."""
    if vs not in VS_CHOICES:
        raise FastMLPError(f"vs: got {vs!r}, expected one of {', '.join(VS_CHOICES)}")
    if optimizer not in OPTIMIZERS:
        raise FastMLPError(f"optimizer: got {optimizer!r}, expected one of {', '.join(OPTIMIZERS)}")
    if dtype not in DTYPES:
        raise FastMLPError(f"dtype: got {dtype!r}, expected one of {', '.join(DTYPES)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise FastMLPError(f"repeats: got {repeats!r}, expected a positive integer")
    if (isinstance(warmup_seconds, bool) or not isinstance(warmup_seconds, (int, float))
            or not 0 <= warmup_seconds <= 3600):
        raise FastMLPError(f"warmup_seconds: got {warmup_seconds!r}, expected a number of seconds "
                           f"from 0 to 3600")
    if vs == "numpy" and optimizer != "sgd":
        raise FastMLPError(f"the NumPy reference trains with sgd only, not {optimizer!r}")
    if vs.startswith("torch"):  # fail before the long part
        _import_torch()
    elif vs.startswith("jax"):
        _import_jax("float32")
    hidden = (hidden,) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    sizes = sizes_of(hidden)
    fps = flops_per_sample(sizes)
    args = dict(hidden=hidden, batch_size=batch_size, threads=threads, n_samples=n_samples, epochs=epochs,
                seed=seed, data=data, warmup_seconds=float(warmup_seconds), optimizer=optimizer, dtype=dtype)
    runs, last = {"fastmlp": [], vs: []}, {}
    for who, how in alternate(("fastmlp", vs), repeats, threads, isolated):
        last[who] = how(**args)
        runs[who].append(last[who]["samples_per_second"])
    f, r = last["fastmlp"], last[vs]
    f_runs, r_runs = runs["fastmlp"], runs[vs]
    if matmul:
        mm, blas = matmul_gflops_isolated(threads) if isolated else (matmul_gflops(), blas_kernel())
    else:
        mm, blas = float("nan"), None
    f_sps = float(np.median(f_runs))
    r_sps = float(np.median(r_runs))
    f_gf = f_sps * fps / 1e9
    f_done = f_sps * f["done_flops_per_sample"] / 1e9
    return {
        "network": "-".join(str(s) for s in sizes),
        "batch_size": batch_size,
        "threads": threads,
        "vs": vs,
        "optimizer": optimizer,
        "dtype": dtype,
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
        "fastmlp_test_accuracy": f.get("test_accuracy"),
        "reference_test_accuracy": r.get("test_accuracy"),
        "flops_per_sample": fps,
        "fastmlp_gflops": f_gf,
        "fastmlp_done_gflops": f_done,
        "reference_gflops": r_sps * fps / 1e9,
        "matmul_gflops": mm,
        "blas_kernel": blas,
        "fastmlp_share_of_matmul": f_gf / mm,
        "fastmlp_done_share_of_matmul": f_done / mm,
        "threading_layer": f["threading_layer"] if isolated else threading_layer(),
    }


def _accuracy(a):
    return "" if a is None else f"  test accuracy {100 * a:.2f}%"


def format_result(r):
    return "\n".join([
        f"network {r['network']}  batch {r['batch_size']}  threads {r['threads']}  "
        f"{r['n_samples']} samples ({r['data']}) x {r['epochs']} epoch(s)  threading layer {r['threading_layer']}"
        + (f"\nmedians of {r['repeats']} alternating runs each" if r["repeats"] > 1 else ""),
        f"fastmlp   {r['fastmlp_samples_per_second']:>12,.0f} samples/s  {r['fastmlp_gflops']:7.1f} GFLOP/s  "
        f"({100 * r['fastmlp_share_of_matmul']:.0f}% of matmul {r['matmul_gflops']:.0f} GFLOP/s; work done "
        f"{r['fastmlp_done_gflops']:.1f} GFLOP/s, {100 * r['fastmlp_done_share_of_matmul']:.0f}%)"
        + _accuracy(r.get("fastmlp_test_accuracy")),
        f"{r['vs']:<9} {r['reference_samples_per_second']:>12,.0f} samples/s  {r['reference_gflops']:7.1f} GFLOP/s"
        + _accuracy(r.get("reference_test_accuracy")),
        f"ratio     {r['ratio']:.2f}x",
    ])


def _main(argv):
    import json
    import sys
    if argv == ["--serve"]:
        _serve()
        return
    payload = json.loads(argv[0])
    if payload.pop("what") == "matmul":
        out = {"gflops": matmul_gflops(), "blas": blas_kernel()}
    else:
        payload["hidden"] = tuple(payload["hidden"])
        try:
            out = measure(**payload)
        except FastMLPError as e:
            print(str(e), file=sys.stderr)
            raise SystemExit(1) from None
    print(json.dumps(out))


if __name__ == "__main__":
    import sys
    _main(sys.argv[1:])
