"""fastmlp.bench: the throughput comparison (small runs only: figures are checked for sanity,
never against timing thresholds)."""
import builtins
import json
import math
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
                "matmul_gflops", "fastmlp_share_of_matmul", "threading_layer"):
        assert key in r
    assert r["network"] == "784-16-10" and r["vs"] == "numpy" and r["threads"] == 1
    for key in ("fastmlp_samples_per_second", "reference_samples_per_second", "fastmlp_gflops",
                "matmul_gflops"):
        assert math.isfinite(r[key]) and r[key] > 0
    assert r["ratio"] == pytest.approx(r["fastmlp_samples_per_second"] / r["reference_samples_per_second"])
    assert r["fastmlp_gflops"] == pytest.approx(r["fastmlp_samples_per_second"] * 4 * (784 * 16 + 160) / 1e9
                                                + r["fastmlp_samples_per_second"] * 2 * 160 / 1e9)
    assert r["threading_layer"] in ("omp", "tbb", "workqueue")
    assert "fastmlp" in bench.format_result(r)


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
        return {"seconds": 1.0, "samples_per_second": next(figures[trainer]), "threading_layer": "omp"}

    monkeypatch.setattr(bench, "measure", fake_measure)
    r = bench.run(hidden=(16,), batch_size=8, threads=1, vs="numpy", n_samples=64, isolated=False,
                  matmul=False, repeats=3)
    assert calls == ["fastmlp", "numpy"] * 3
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


def test_warmup_seconds_reach_every_measurement(bench, monkeypatch):
    seen = []

    def fake_measure(trainer, **kw):
        seen.append((trainer, kw["warmup_seconds"]))
        return {"seconds": 1.0, "samples_per_second": 10.0, "threading_layer": "omp"}

    monkeypatch.setattr(bench, "measure", fake_measure)
    r = bench.run(hidden=(16,), batch_size=8, threads=1, vs="numpy", n_samples=64, isolated=False,
                  matmul=False, repeats=2, warmup_seconds=0.5)
    assert seen == [("fastmlp", 0.5), ("numpy", 0.5)] * 2 and r["warmup_seconds"] == 0.5
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
