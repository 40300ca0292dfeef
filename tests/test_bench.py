"""fastmlp.bench: the throughput comparison (small runs only: figures are checked for sanity,
never against timing thresholds)."""
import builtins
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.fixture(scope="module")
def bench():
    from fastmlp import bench
    return bench


def test_import_is_light():
    code = ("import sys, fastmlp.bench; "
            "print(json.dumps([m in sys.modules for m in ('numba', 'torch', 'click')]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == [False, False, False]


def test_flops_per_sample(bench):
    assert bench.flops_per_sample([784, 100, 10]) == 319600
    assert bench.flops_per_sample([784, 512, 512, 10]) == 3209216


def test_done_flops_per_sample_by_hand(bench):
    # x = (255, 0) gives a = (1, 0), x = (0, 0) gives a = 0. Hidden layer of 4 units z = a_1 - 0.5:
    # 0.5 for the first sample, -0.5 (all four zero under ReLU: one group skipped) for the second.
    # flops_per_sample([2, 4, 3]) = 4 (8 + 12) + 2 * 12 = 104; the skipped group saves 2 * 4 rows *
    # 2 inputs for one sample of two: 8 per sample on average.
    X = np.array([[255, 0], [0, 0]], dtype=np.uint8)
    W1 = np.array([[1.0, 0.0]] * 4)
    b1 = np.full(4, -0.5)
    W2, b2 = np.ones((3, 4)), np.zeros(3)
    assert bench.done_flops_per_sample([W1, W2], [b1, b2], X) == 96.0
    assert bench.done_flops_per_sample([W1, W2], [b1, b2], X, skips=False) == 104.0
    # a fifth unit always active (z = 1): the second group (row 4, alone) is never skipped, and
    # only 4 real rows are saved for the second sample; flops_per_sample([2, 5, 3]) = 130
    W1 = np.array([[1.0, 0.0]] * 5)
    b1 = np.array([-0.5] * 4 + [1.0])
    W2 = np.ones((3, 5))
    assert bench.done_flops_per_sample([W1, W2], [b1, b2], X) == 130.0 - 8.0
    # the last partial group skipped too: all five units off for the second sample saves 5 rows
    b1 = np.full(5, -0.5)
    assert bench.done_flops_per_sample([W1, W2], [b1, b2], X) == 130.0 - 10.0


def test_done_flops_count_the_groups_a_trainer_makes_by_hand(bench):
    # x = (255, 0) and x = (0, 255): units 0, 2, 4, 6 (z = a_1 - a_2 - 0.5) are on for the first
    # and off for the second, units 1, 3, 5, 7 the other way round. In place no group of 4
    # neighbours is ever all off; grouped as a trainer groups them (0, 2, 4, 6 | 1, 3, 5, 7), each
    # sample leaves out one group: 4 rows * 2 inputs * 2 flops. flops_per_sample([2, 8, 3]) =
    # 4 (16 + 24) + 2 * 24 = 208.
    X = np.array([[255, 0], [0, 255]], dtype=np.uint8)
    W1 = np.array([[1.0, -1.0], [-1.0, 1.0]] * 4)
    b1 = np.full(8, -0.5)
    W2, b2 = np.ones((3, 8)), np.zeros(3)
    assert bench.done_flops_per_sample([W1, W2], [b1, b2], X, skips=False) == 208.0
    assert bench.done_flops_per_sample([W1, W2], [b1, b2], X) == 208.0 - 16.0


def test_done_flops_leave_out_the_delta_recursions_skips_by_hand(bench):
    # Two hidden layers. x = (255, 0) gives a hidden-1 layer of three units at 0.5, x = (0, 0) all
    # three off; hidden-2 unit 0 sums them (z = 1.5 - 1 or -1: on with the first kind of sample),
    # unit 1 is always off (z = -1). The delta recursion through hidden 2 sums over its 2 units into
    # the 3 below: 2 * 3 flops per unit and sample. Samples s0 (on), s1 (off), s2 (on) in groups of
    # 2: {s0, s1} leaves out unit 1 (2 samples), {s2} unit 1 (1 sample): 2 * 3 * 3 / 3 = 6 per
    # sample. In minibatches of 1: unit 1 for all three and unit 0 for s1: 2 * 3 * 4 / 3 = 8.
    # Grouped by labels 0, 1, 0 (the trainer's order: s0, s2, s1): {s0, s2} leaves out unit 1 (2
    # samples), {s1} both units (1 sample): 2 * 3 * 4 / 3 = 8.
    X = np.array([[255, 0], [0, 0], [255, 0]], dtype=np.uint8)
    Ws = [np.array([[1.0, 0.0]] * 3), np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), np.ones((2, 2))]
    bs = [np.full(3, -0.5), np.full(2, -1.0), np.zeros(2)]
    total = bench.flops_per_sample([2, 3, 2, 2])
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False) == total
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, delta_groups=[0, 2]) == total - 6.0
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, delta_groups=[0, 2], batch_size=1) == total - 8.0
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, delta_groups=[0, 2], batch_size=2) == total - 6.0
    labels = np.array([0, 1, 0])
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, delta_groups=[0, 2], labels=labels) == total - 8.0
    # in minibatches of 2 the order changes nothing: {s0, s1} and {s2}, as above
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, delta_groups=[0, 2], batch_size=2,
                                       labels=labels) == total - 6.0


def test_done_flops_leave_out_the_forward_gathers_skips_by_hand(bench, monkeypatch):
    # Pixels (255, 0), (0, 0), (0, 0), (0, 0), (0, 255); hidden layer of 4 units z = a_1 - 0.5: on
    # for the first sample only. flops_per_sample([2, 4, 3]) = 104. With every sample grouped
    # (the rule patched), in groups of 4 from the start: layer 1 leaves out pixel 1 for samples
    # 0-3 and pixel 0 for sample 4, 5 inputs: 2 * 4 * 5 / 5 = 8 per sample; layer 2 (3 units)
    # leaves out nothing for samples 0-3 (sample 0 has all four units on) and all 4 for sample 4:
    # 2 * 3 * 4 / 5 = 4.8.
    from fastmlp import _kernels
    X = np.array([[255, 0], [0, 0], [0, 0], [0, 0], [0, 255]], dtype=np.uint8)
    Ws = [np.array([[1.0, 0.0]] * 4), np.ones((3, 4))]
    bs = [np.full(4, -0.5), np.zeros(3)]
    calls = []

    def every_sample(N, M, n, threads, itemsize):
        calls.append((N, M, n, threads, itemsize))
        return [(0, n)]

    monkeypatch.setattr(_kernels, "forward_grouped_samples", every_sample)
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False) == 104.0
    assert calls == []
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, forward_threads=2) == pytest.approx(104.0 - 8.0 - 4.8)
    assert calls == [(4, 2, 5, 2, 4), (3, 4, 5, 2, 4)]
    # in minibatches of 2 (groups start afresh in each): layer 1 leaves out 1 pixel x 2 samples,
    # 2 x 2, 1 x 1 = 7 (2 * 4 * 7 / 5 = 11.2); layer 2 nothing, 4 units x 2 samples, 4 x 1 = 12
    # (2 * 3 * 12 / 5 = 14.4)
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, batch_size=2, forward_threads=1,
                                       itemsize=8) == pytest.approx(104.0 - 11.2 - 14.4)
    assert calls[2:] == [(4, 2, 2, 1, 8), (4, 2, 2, 1, 8), (4, 2, 1, 1, 8), (3, 4, 2, 1, 8), (3, 4, 2, 1, 8),
                         (3, 4, 1, 1, 8)]
    # only the samples the rule names, from the second of each minibatch: samples 1 and 3, each a
    # group of its own, leave out both pixels (2 * 4 * 4 / 5 = 6.4) and all 4 units (2 * 3 * 8 / 5
    # = 9.6); the last minibatch has no second sample
    monkeypatch.setattr(_kernels, "forward_grouped_samples", lambda N, M, n, threads, itemsize: [(1, n)])
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, batch_size=2,
                                       forward_threads=2) == pytest.approx(104.0 - 6.4 - 9.6)
    # with labels 1 0 0 1 0 the trainer runs the minibatch of all 5 as rows 1, 2, 4, 0, 3
    # (_plan.label_grouped): group {1, 2, 4, 0} leaves out nothing in either layer, sample 3's
    # both pixels (2 * 4 * 2 / 5 = 3.2) and all 4 units (2 * 3 * 4 / 5 = 4.8)
    monkeypatch.setattr(_kernels, "forward_grouped_samples", every_sample)
    assert bench.done_flops_per_sample(Ws, bs, X, skips=False, forward_threads=2,
                                       labels=np.array([1, 0, 0, 1, 0])) == pytest.approx(104.0 - 3.2 - 4.8)


def test_delta_skip_groups_follow_the_kernels(bench):
    from fastmlp import _kernels as k
    for sizes in [(784, 100, 10), (784, 512, 512, 10), (784, 2048, 2048, 10), (20, 30, 2100, 40, 5)]:
        want = [0]  # (no delta below layer 1)
        for N in sizes[2:-1]:
            if k.MICRO_DELTA_MIN_ROWS == 0 or 0 <= k.MICRO_DELTA_MIN_ROWS <= N:
                want.append(6)  # the micro-kernel's 6 samples
            else:
                want.append(4 if k.TILE_ROWS == 4 else 0)
        assert bench.delta_skip_groups(sizes) == want


def test_skips_zero_deltas_follows_the_blocking(bench):
    from fastmlp import _kernels
    assert bench.skips_zero_deltas() == (_kernels.TILE_ROWS != 6)


def test_make_data(bench):
    X, y = bench.make_data(50)
    assert X.shape == (50, 784) and X.dtype == np.uint8 and y.dtype == np.int64
    assert 0 <= y.min() and y.max() <= 9
    Xr, yr = bench.make_data(50, data="random")
    assert Xr.shape == (50, 784) and Xr.dtype == np.uint8
    from fastmlp.errors import FastMLPError
    with pytest.raises(FastMLPError, match="data"):
        bench.make_data(5, data="nope")


@pytest.mark.parametrize("isolated", [False, True])
def test_run_numpy_sane(bench, isolated):
    r = bench.run(hidden=(16,), batch_size=32, threads=1, vs="numpy", n_samples=640, isolated=isolated)
    for key in ("network", "batch_size", "threads", "vs", "fastmlp_samples_per_second",
                "reference_samples_per_second", "ratio", "fastmlp_gflops", "reference_gflops",
                "matmul_gflops", "fastmlp_share_of_matmul", "fastmlp_done_gflops",
                "fastmlp_done_share_of_matmul", "threading_layer"):
        assert key in r
    assert r["network"] == "784-16-10" and r["vs"] == "numpy" and r["threads"] == 1
    for key in ("fastmlp_samples_per_second", "reference_samples_per_second", "fastmlp_gflops",
                "matmul_gflops"):
        assert math.isfinite(r[key]) and r[key] > 0
    assert r["ratio"] == pytest.approx(r["fastmlp_samples_per_second"] / r["reference_samples_per_second"])
    assert r["fastmlp_gflops"] == pytest.approx(r["fastmlp_samples_per_second"] * 4 * (784 * 16 + 160) / 1e9
                                                + r["fastmlp_samples_per_second"] * 2 * 160 / 1e9)
    assert 0 < r["fastmlp_done_gflops"] <= r["fastmlp_gflops"]
    if not bench.skips_zero_deltas():
        assert r["fastmlp_done_gflops"] == r["fastmlp_gflops"]
    assert r["threading_layer"] in ("omp", "tbb", "workqueue")
    assert "fastmlp" in bench.format_result(r) and "work done" in bench.format_result(r)


def test_numpy_reference_trains_like_fastmlp(bench):
    X, y = bench.make_data(203, seed=3)
    sizes = [784, 20, 10]
    _, W1, b1 = bench.train_fastmlp(X, y, sizes, 16, 1, warmup=False)
    _, W2, b2 = bench.train_numpy(X, y, sizes, 16, 1, warmup=False)
    for a, b in zip(W1 + b1, W2 + b2):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_torch_missing_is_a_clear_error(bench, monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    from fastmlp.errors import FastMLPError
    with pytest.raises(FastMLPError) as info:
        bench.run(hidden=(8,), batch_size=8, threads=1, vs="torch", n_samples=64)
    assert str(info.value) == ("PyTorch is not installed: pip install 'fastmlp[torch]' "
                               "(or pip install torch==2.13.0)")


def test_bad_vs(bench):
    from fastmlp.errors import FastMLPError
    with pytest.raises(FastMLPError, match="vs"):
        bench.run(vs="tensorflow", n_samples=10)


def test_torch_trainer_if_installed(bench):
    pytest.importorskip("torch")
    X, y = bench.make_data(203, seed=3)
    sizes = [784, 20, 10]
    _, W1, b1 = bench.train_fastmlp(X, y, sizes, 16, 1, warmup=False)
    _, W2, b2 = bench.train_torch(X, y, sizes, 16, 1, warmup=False)
    for a, b in zip(W1 + b1, W2 + b2):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def _cli():
    try:
        from fastmlp.cli import main
    except ImportError:
        pytest.skip("fastmlp.cli not available")
    return main


def test_cli_bench_json():
    from click.testing import CliRunner
    main = _cli()
    result = CliRunner().invoke(main, ["bench", "--hidden", "16", "--batch-size", "32", "--threads", "1",
                                       "--vs", "numpy", "--samples", "320", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["network"] == "784-16-10" and r["batch_size"] == 32 and r["n_samples"] == 320
    assert r["fastmlp_samples_per_second"] > 0 and r["ratio"] > 0


def test_cli_bench_text_and_errors():
    from click.testing import CliRunner
    main = _cli()
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "--hidden", "8", "--threads", "1", "--samples", "128",
                                  "--batch-size", "16", "--warmup", "0.2"])
    assert result.exit_code == 0, result.output
    assert "samples/s" in result.output and "GFLOP/s" in result.output and "ratio" in result.output
    bad = runner.invoke(main, ["bench", "--hidden", "a,b", "--samples", "10"])
    assert bad.exit_code != 0 and "--hidden" in bad.output


def test_repeats_alternate_and_take_medians(bench, monkeypatch):
    calls = []
    figures = {"fastmlp": iter([100.0, 300.0, 200.0]), "numpy": iter([50.0, 10.0, 40.0])}

    def fake_measure(trainer, **kw):
        calls.append(trainer)
        return {"seconds": 1.0, "samples_per_second": next(figures[trainer]), "threading_layer": "omp",
                "done_flops_per_sample": 1.0}

    monkeypatch.setattr(bench, "measure", fake_measure)
    r = bench.run(hidden=(16,), batch_size=8, threads=1, vs="numpy", n_samples=64, isolated=False,
                  matmul=False, repeats=3)
    assert calls == ["fastmlp", "numpy", "numpy", "fastmlp", "fastmlp", "numpy"]
    assert r["fastmlp_samples_per_second"] == 200.0 and r["reference_samples_per_second"] == 40.0
    assert r["ratio"] == 5.0 and r["repeats"] == 3
    assert r["fastmlp_runs_samples_per_second"] == [100.0, 300.0, 200.0]
    assert "medians of 3 alternating runs" in bench.format_result(r)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_repeats_must_be_a_positive_integer(bench, bad):
    with pytest.raises(bench.FastMLPError, match="repeats"):
        bench.run(hidden=(8,), batch_size=8, threads=1, vs="numpy", n_samples=16, repeats=bad)


def test_cli_bench_repeats():
    from click.testing import CliRunner
    main = _cli()
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "--hidden", "8", "--threads", "1", "--samples", "128",
                                  "--batch-size", "16", "--repeats", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["repeats"] == 2 and len(r["fastmlp_runs_samples_per_second"]) == 2
    assert r["warmup_seconds"] == 0
    bad = runner.invoke(main, ["bench", "--repeats", "0"])
    assert bad.exit_code == 2 and "--repeats" in bad.output


def test_warm_up_repeats_until_the_time_has_passed(bench):
    calls = []
    bench._warm_up(lambda: calls.append(1), 0)
    assert len(calls) == 1  # once at least: compiling and first touches

    def epoch():
        calls.append(1)
        import time
        time.sleep(0.01)

    calls.clear()
    bench._warm_up(epoch, 0.1)
    assert len(calls) >= 5


@pytest.mark.parametrize("trainer", ["fastmlp", "numpy"])
def test_trainers_warm_up_for_the_given_time(bench, monkeypatch, trainer):
    """Each trainer runs its warm-up epoch (on a subset, not timed) until warmup_seconds have passed."""
    seen = []
    real = bench._warm_up
    monkeypatch.setattr(bench, "_warm_up", lambda epoch, seconds: (seen.append(seconds), real(epoch, seconds)))
    X, y = bench.make_data(256)
    fn = bench.train_fastmlp if trainer == "fastmlp" else bench.train_numpy
    fn(X, y, [784, 8, 10], 32, 1, warmup_seconds=0.05)
    fn(X, y, [784, 8, 10], 32, 1, warmup=False)
    assert seen == [0.05]


def test_the_timed_fit_takes_the_buffers_the_warm_up_made(bench, monkeypatch):
    """The warm-up fits at least one chunk of the timed fit, so that the timed fit takes the warm-up's
    workspace from the pool instead of allocating and faulting in one of its own (as every peer's
    buffers are allocated in its warm-up)."""
    from fastmlp import _buffers
    monkeypatch.setattr(_buffers, "_pool", [])
    made = []

    class Counted(_buffers.Workspace):
        def __init__(self, *args, **kw):
            made.append(args[2:] + tuple(kw.values()))
            super().__init__(*args, **kw)

    monkeypatch.setattr(_buffers, "Workspace", Counted)
    X, y = bench.make_data(6000)
    bench.train_fastmlp(X, y, [784, 8, 10], 32, 1, warmup_seconds=0)
    assert made == [(32, 6016)]                    # the warm-up's (a whole chunk: 188 batches), taken again
    made.clear()
    bench.train_fastmlp(X, y, [784, 8, 10], 32, 1, warmup=False)
    assert made == []                              # the pool's, without a warm-up too


def test_warmup_seconds_reach_every_measurement(bench, monkeypatch):
    seen = []

    def fake_measure(trainer, **kw):
        seen.append((trainer, kw["warmup_seconds"]))
        return {"seconds": 1.0, "samples_per_second": 10.0, "threading_layer": "omp", "done_flops_per_sample": 1.0}

    monkeypatch.setattr(bench, "measure", fake_measure)
    r = bench.run(hidden=(16,), batch_size=8, threads=1, vs="numpy", n_samples=64, isolated=False,
                  matmul=False, repeats=2, warmup_seconds=0.5)
    assert seen == [("fastmlp", 0.5), ("numpy", 0.5), ("numpy", 0.5), ("fastmlp", 0.5)]
    assert r["warmup_seconds"] == 0.5
    r = bench.run(hidden=(16,), batch_size=8, threads=1, vs="numpy", n_samples=64, isolated=False,
                  matmul=False)
    assert seen[-1] == ("numpy", bench.WARMUP_SECONDS) and r["warmup_seconds"] == bench.WARMUP_SECONDS


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), True, "1"])
def test_warmup_seconds_must_be_a_number_of_seconds(bench, bad):
    with pytest.raises(bench.FastMLPError, match="warmup_seconds"):
        bench.run(hidden=(8,), batch_size=8, threads=1, vs="numpy", n_samples=16, warmup_seconds=bad)


def test_cli_bench_warmup_errors():
    from click.testing import CliRunner
    bad = CliRunner().invoke(_cli(), ["bench", "--warmup", "-1"])
    assert bad.exit_code == 2 and "--warmup" in bad.output


# -- the peers of the comparison: each must train exactly what fastmlp trains -----------------------

PEER_CASES = [("sgd", "float32"), ("adam", "float32"), ("sgd", "float64")]


def _same_weights(bench, trainer, optimizer, dtype, rtol, atol, **kw):
    X, y = bench.make_data(203, seed=3)
    sizes = [784, 20, 10]
    lr = bench.default_lr(optimizer)
    _, W1, b1 = bench.train_fastmlp(X, y, sizes, 16, 1, warmup=False, lr=lr, optimizer=optimizer, dtype=dtype)
    fn = getattr(bench, bench.TRAINERS[trainer])
    _, W2, b2 = fn(X, y, sizes, 16, 1, lr=lr, optimizer=optimizer, dtype=dtype, **kw)
    for a, b in zip(W1 + b1, W2 + b2):
        assert b.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("optimizer,dtype", PEER_CASES)
@pytest.mark.parametrize("trainer", ["jax", "jax-jit"])
def test_jax_trainers_train_like_fastmlp(bench, monkeypatch, trainer, optimizer, dtype):
    pytest.importorskip("jax")
    # 12 full batches and a partial one: two scan chunks of 4 steps, then 4 single steps and the tail
    monkeypatch.setattr(bench, "JAX_SCAN_STEPS", 4)
    tol = 1e-12 if dtype == "float64" else 1e-5
    _same_weights(bench, trainer, optimizer, dtype, rtol=1e-3, atol=tol, warmup=False)


@pytest.mark.parametrize("optimizer,dtype", PEER_CASES)
def test_torch_trainer_optimizers_and_dtypes(bench, optimizer, dtype):
    pytest.importorskip("torch")
    tol = 1e-12 if dtype == "float64" else 1e-5
    _same_weights(bench, "torch", optimizer, dtype, rtol=1e-3, atol=tol, warmup=False)


def test_torch_compile_trainer(bench):
    pytest.importorskip("torch")
    # the warm-up compiles the graphs of both batch shapes (16 and the last 11)
    _same_weights(bench, "torch-compile", "sgd", "float32", rtol=1e-3, atol=1e-5, warmup_seconds=0)


def test_numpy_reference_float64_and_no_adam(bench):
    _same_weights(bench, "numpy", "sgd", "float64", rtol=1e-9, atol=1e-12, warmup=False)
    X, y = bench.make_data(16)
    with pytest.raises(bench.FastMLPError, match="sgd only"):
        bench.train_numpy(X, y, [784, 4, 10], 8, 1, optimizer="adam")
    with pytest.raises(bench.FastMLPError, match="sgd only"):
        bench.run(hidden=(4,), vs="numpy", optimizer="adam", n_samples=16)


def test_sklearn_trainer(bench):
    pytest.importorskip("sklearn")
    X, y = bench.make_data(203, seed=3)
    seconds, Ws, bs = bench.train_sklearn(X, y, [784, 20, 10], 16, 1, warmup=False)
    assert seconds > 0
    assert [W.shape for W in Ws] == [(20, 784), (10, 20)] and [b.shape for b in bs] == [(20,), (10,)]


@pytest.mark.parametrize("bad", [dict(optimizer="rmsprop"), dict(dtype="float16")])
def test_run_rejects_unknown_optimizer_and_dtype(bench, bad):
    with pytest.raises(bench.FastMLPError, match=next(iter(bad))):
        bench.run(hidden=(4,), n_samples=16, **bad)


def test_jax_missing_is_a_clear_error(bench, monkeypatch):
    real_import = builtins.__import__

    def no_jax(name, *args, **kwargs):
        if name == "jax" or name.startswith("jax."):
            raise ImportError("No module named 'jax'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_jax)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    with pytest.raises(bench.FastMLPError) as info:
        bench.run(hidden=(8,), batch_size=8, threads=1, vs="jax", n_samples=64)
    assert str(info.value) == "JAX is not installed: pip install 'fastmlp[jax]' (or pip install \"jax[cpu]\")"


def test_test_accuracy_by_hand(bench):
    # one layer, W = [[1, 0], [0, 1]], b = [0, 0.5]: pixel rows (255, 0) -> z (1, 0.5) -> class 0;
    # (0, 0) -> z (0, 0.5) -> class 1; (0, 255) -> (0, 1.5) -> 1; (100, 0) -> (0.39, 0.5) -> 1
    X = np.array([[255, 0], [0, 0], [0, 255], [100, 0]], dtype=np.uint8)
    W, b = [np.eye(2, dtype=np.float32)], [np.array([0, 0.5], np.float32)]
    assert bench.test_accuracy(W, b, X, np.array([0, 1, 1, 1])) == 1.0
    assert bench.test_accuracy(W, b, X, np.array([0, 1, 1, 0])) == 0.75
    # a ReLU hidden layer: z^1 = -x clipped to 0, so the output is the bias alone: class 1 everywhere
    W2 = [-np.eye(2), np.eye(2)]
    assert bench.test_accuracy(W2, [np.zeros(2), np.array([0.0, 1.0])], X, np.array([1, 1, 1, 1])) == 1.0


def test_test_splits(bench):
    Xt, yt = bench.make_test_data("synthetic-digits")
    assert Xt.shape == (10000, 784) and Xt.dtype == np.uint8 and yt.shape == (10000,)
    assert bench.make_test_data("random") is None


def test_measure_reports_test_accuracy(bench):
    r = bench.measure("fastmlp", hidden=(16,), batch_size=32, threads=1, n_samples=640, warmup_seconds=0)
    assert 0.1 < r["test_accuracy"] <= 1.0  # 640 samples of learnable digits: above chance
    r = bench.measure("numpy", hidden=(16,), batch_size=32, threads=1, n_samples=64, warmup_seconds=0,
                      data="random")
    assert r["test_accuracy"] is None


def test_child_env_pins_threads_and_unpins_blas_only_when_asked(bench, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "512")
    env = bench._child_env(1)
    assert env["OPENBLAS_CORETYPE"] == "Haswell" and env["OPENBLAS_L2_SIZE"] == "512"
    assert env["NUMBA_NUM_THREADS"] == env["OMP_NUM_THREADS"] == "1"
    assert "intra_op_parallelism_threads=1" in env["XLA_FLAGS"]
    env = bench._child_env(2, unpinned_blas=True)
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert env["OPENBLAS_NUM_THREADS"] == "2" and "intra_op" not in env.get("XLA_FLAGS", "")


def test_cli_bench_vs_jax_with_adam():
    pytest.importorskip("jax")
    from click.testing import CliRunner
    result = CliRunner().invoke(_cli(), ["bench", "--hidden", "8", "--threads", "1", "--samples", "128",
                                         "--batch-size", "16", "--vs", "jax", "--optimizer", "adam",
                                         "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert r["vs"] == "jax" and r["optimizer"] == "adam" and r["dtype"] == "float32"
    assert r["reference_samples_per_second"] > 0 and 0 <= r["reference_test_accuracy"] <= 1
    bad = CliRunner().invoke(_cli(), ["bench", "--optimizer", "rmsprop"])
    assert bad.exit_code == 2 and "--optimizer" in bad.output


def test_a_measuring_process_answers_request_after_request(bench):
    """compare.py's processes that stay: every answer from the same process (not this one), the
    figures measure() gives here, a clear error for a bad request, and the process still serving
    after it; closing ends it."""
    from fastmlp.errors import FastMLPError
    kw = dict(hidden=(16,), batch_size=32, threads=1, n_samples=640, warmup_seconds=0)
    here = bench.measure("fastmlp", **kw)
    with bench.MeasuringProcess(1) as p:
        first = p.measure("fastmlp", **kw)
        with pytest.raises(FastMLPError, match="trainer: got 'nope'"):
            p.measure("nope", **kw)
        with pytest.raises(FastMLPError, match="TypeError"):
            p.measure("fastmlp", colour="blue", **kw)
        second = p.measure("numpy", **kw)
        assert first["pid"] == second["pid"] != os.getpid()
        assert first["test_accuracy"] == here["test_accuracy"]
        assert first["done_flops_per_sample"] == here["done_flops_per_sample"]
        assert second["test_accuracy"] > 0.1 and second["samples_per_second"] > 0
    assert p._proc.poll() == 0


def test_a_measuring_process_that_died_is_a_clear_error(bench):
    from fastmlp.errors import FastMLPError
    with bench.MeasuringProcess(1) as p:
        p._proc.kill()
        p._proc.wait()
        with pytest.raises(FastMLPError, match="benchmark subprocess failed"):
            p.measure("fastmlp", hidden=(16,), n_samples=64, warmup_seconds=0)
