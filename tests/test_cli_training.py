"""`fastmlp train` options of issue 13 through click's CliRunner: --early-stopping, --lr-schedule,
--csv, --task regression, labels of any kind, standardisation and --no-standardize, binary bce."""
import csv

import numpy as np
import pytest
from test_cli import ONE, fails, invoke, isolated, last_json  # noqa: F401  (isolated: autouse fixture)

from fastmlp import run
from fastmlp.model import MLP, load_npz
from fastmlp.training import Trainer


def _blobs(n=300, k=3, d=6, seed=0, scale=1.0, noise=2.0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(0, 2, (k, d))
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(0, noise, (n, d))) * scale
    return X.astype(np.float32), y


def test_early_stopping_plateau_and_csv(tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    log, model = tmp_path / "log.csv", tmp_path / "m.npz"
    r = last_json(invoke("train", "--data", tmp_path / "d.npz", "--hidden", "16", "--lr", "0.5", "--epochs", "60",
                         "--early-stopping", "2", "--lr-schedule", "plateau", "--csv", log, "--save", model,
                         "--json", *ONE))
    assert r["n_val"] == 30 and r["n_train"] == 270  # --early-stopping: 10% for validation
    assert r["stopped_epoch"] is not None and r["stopped_epoch"] < 60
    trainer, _ = Trainer.from_checkpoint(model)
    h = trainer.history
    assert r["best_epoch"] == h["best_epoch"] == int(np.argmin(h["val_loss"])) + 1
    assert r["val_loss"] == h["val_loss"][h["best_epoch"] - 1]
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == h["epoch"]
    assert [float(row["lr"]) for row in rows] == h["lr"]
    assert MLP.load(model).predict(X[:30]).shape == (30,)


def test_early_stopping_resume_is_bit_identical(tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    common = ("train", "--data", tmp_path / "d.npz", "--hidden", "16", "--lr", "0.5", "--early-stopping", "2",
              "--lr-schedule", "plateau", *ONE)
    invoke(*common, "--epochs", "40", "--save", tmp_path / "full.npz")
    invoke(*common, "--epochs", "3", "--save", tmp_path / "part.npz")
    invoke("train", "--resume", tmp_path / "part.npz", "--epochs", "40", "--save", tmp_path / "part.npz", *ONE)
    full, _ = Trainer.from_checkpoint(tmp_path / "full.npz")
    part, _ = Trainer.from_checkpoint(tmp_path / "part.npz")
    assert np.array_equal(full.net.params, part.net.params)
    for key in ("loss", "val_loss", "lr", "stopped_epoch", "best_epoch"):
        assert full.history[key] == part.history[key], key
    fails(["train", "--resume", tmp_path / "part.npz", "--early-stopping", "5", *ONE], 2,
          "--early-stopping 5 conflicts with the checkpoint")


def test_cosine_schedule(tmp_path):
    X, y = _blobs(n=60)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    invoke("train", "--data", tmp_path / "d.npz", "--epochs", "4", "--lr", "0.2", "--lr-schedule", "cosine",
           "--save", tmp_path / "m.npz", *ONE)
    trainer, _ = Trainer.from_checkpoint(tmp_path / "m.npz")
    want = [0.2 * (1 + np.cos(np.pi * e / 4)) / 2 for e in range(4)]
    np.testing.assert_allclose(trainer.history["lr"], want, rtol=1e-15)


def test_labels_of_any_kind_are_mapped_and_printed_back(tmp_path):
    X, y = _blobs(n=200)
    labels = np.array([-5, 7, 42])[y]
    np.savez(tmp_path / "d.npz", X=X, y=labels, X_test=X[:50], y_test=labels[:50])
    r = last_json(invoke("train", "--data", tmp_path / "d.npz", "--epochs", "5", "--save", tmp_path / "m.npz",
                         "--json", *ONE))
    assert r["classes"] == [-5, 7, 42] and r["sizes"][-1] == 3
    assert r["test_accuracy"] > 0.5
    e = last_json(invoke("evaluate", tmp_path / "m.npz", "--json", *ONE))
    assert e["class_names"] == ["-5", "7", "42"] and e["accuracy"] == r["test_accuracy"]
    np.save(tmp_path / "rows.npy", X[:5])
    p = last_json(invoke("predict", tmp_path / "m.npz", tmp_path / "rows.npy", "--json", *ONE))
    net = MLP.load(tmp_path / "m.npz")
    assert p["labels"] == [[-5, 7, 42][k] for k in net.predict(X[:5])]
    text = invoke("predict", tmp_path / "m.npz", tmp_path / "rows.npy", *ONE).stdout
    assert text.splitlines()[1].split()[1] in ("-5", "7", "42")


def test_string_labels_in_a_csv(tmp_path):
    X, y = _blobs(n=120, d=3)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    with open(tmp_path / "iris.csv", "w") as f:
        f.write("species,a,b,c\n")
        for name, row in zip(names, X):
            f.write(name + "," + ",".join(f"{v:.4f}" for v in row) + "\n")
    r = last_json(invoke("train", "--data", tmp_path / "iris.csv", "--epochs", "3", "--json", *ONE))
    assert r["classes"] == ["setosa", "versicolor", "virginica"]
    with open(tmp_path / "bad.csv", "w") as f:
        f.write("species,a\nsetosa,1\nvirginica,oops\n")
    fails(["train", "--data", tmp_path / "bad.csv", *ONE], 1, "non-numeric value 'oops'", "line 3, column 2")


def test_too_many_labels_is_one_line_error(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(40))
    fails(["train", "--data", tmp_path / "d.npz", *ONE], 1, "40 distinct values in 40 samples",
          "--task regression")


def test_regression_reports_rmse_and_r2(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    t = 3 * X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=300) + 10
    np.savez(tmp_path / "r.npz", X=X[:250], y=t[:250], X_test=X[250:], y_test=t[250:])
    result = invoke("train", "--data", tmp_path / "r.npz", "--task", "regression", "--epochs", "40", "--lr", "0.01",
                    "--hidden", "16", "--val-split", "0.1", "--save", tmp_path / "m.npz", *ONE)
    assert "RMSE" in result.stdout and "R^2" in result.stdout and "accuracy" not in result.stdout
    r = last_json(invoke("train", "--data", tmp_path / "r.npz", "--task", "regression", "--epochs", "40",
                         "--lr", "0.01", "--hidden", "16", "--val-split", "0.1", "--json", *ONE))
    assert r["sizes"][-1] == 1 and r["output"] == "identity" and r["loss"] == "mse"
    net = MLP.load(tmp_path / "m.npz")
    pred = net.predict(X[250:])
    rmse = float(np.sqrt(np.mean((pred - t[250:]) ** 2)))
    r2 = 1 - np.sum((pred - t[250:]) ** 2) / np.sum((t[250:] - t[250:].mean()) ** 2)
    assert r["test_rmse"] == pytest.approx(rmse, rel=1e-6) and r["test_r2"] == pytest.approx(r2, rel=1e-6)
    assert r["test_r2"] > 0.9
    e = last_json(invoke("evaluate", tmp_path / "m.npz", "--json", *ONE))
    assert e["rmse"] == pytest.approx(rmse, rel=1e-6)
    fails(["train", "--data", tmp_path / "r.npz", "--task", "regression", "--loss", "ce", *ONE], 2,
          "--task regression", "--loss ce")


def test_standardisation_by_default_and_no_standardize(tmp_path):
    # features of very different scales (like breast-cancer's, up to ~4000): raw, they saturate
    X, y = _blobs(n=300, d=6, noise=1.0)
    X = X * np.array([1, 10, 100, 1000, 4000, 0.01], dtype=np.float32) + 500
    np.savez(tmp_path / "d.npz", X=X, y=y)
    r = last_json(invoke("train", "--data", tmp_path / "d.npz", "--epochs", "10", "--val-split", "0.2",
                         "--save", tmp_path / "m.npz", "--json", *ONE))
    raw = last_json(invoke("train", "--data", tmp_path / "d.npz", "--epochs", "10", "--val-split", "0.2",
                           "--lr", "1e-6", "--no-standardize", "--save", tmp_path / "raw.npz", "--json", *ONE))
    assert r["val_accuracy"] > 0.9 > raw["val_accuracy"]
    # at the default rate the raw features make training diverge
    fails(["train", "--data", tmp_path / "d.npz", "--epochs", "10", "--no-standardize", *ONE], 1,
          "training diverged")
    net, meta, _ = load_npz(tmp_path / "m.npz")
    keep = np.random.default_rng([0, run.SPLIT_SALT]).permutation(300)[:240]  # the training split
    np.testing.assert_allclose(net.input_mean, X[keep].astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(net.input_scale, X[keep].astype(np.float64).std(axis=0), rtol=1e-12)
    assert MLP.load(tmp_path / "raw.npz").input_mean is None
    e = last_json(invoke("evaluate", tmp_path / "m.npz", "--data", tmp_path / "d.npz", "--json", *ONE))
    assert e["accuracy"] > 0.9  # evaluate applies the stored standardisation to the raw rows


def test_binary_bce_trains_one_sigmoid_unit(tmp_path):
    X, y = _blobs(n=200, k=2)
    np.savez(tmp_path / "b.npz", X=X, y=np.where(y == 1, 5, 2))
    r = last_json(invoke("train", "--data", tmp_path / "b.npz", "--output", "sigmoid", "--loss", "bce",
                         "--epochs", "5", "--val-split", "0.2", "--save", tmp_path / "m.npz", "--json", *ONE))
    assert r["sizes"][-1] == 1 and r["classes"] == [2, 5] and r["val_accuracy"] > 0.8
    e = last_json(invoke("evaluate", tmp_path / "m.npz", "--data", tmp_path / "b.npz", "--json", *ONE))
    assert e["loss_function"] == "bce" and len(e["confusion_matrix"]) == 2
    fails(["train", "--data", tmp_path / "b.npz", "--output", "sigmoid", "--loss", "ce", *ONE], 2,
          "--loss bce")


# ------------------------------------------------------------- the CSV reader, untrusted input
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from fastmlp import datasets  # noqa: E402
from fastmlp.errors import DataError  # noqa: E402

_cells = st.one_of(st.sampled_from(["cat", "dog", "label", "1", "-2.5", "", "nan", "x,y", '"', "1e3"]),
                   st.text(max_size=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(_cells, min_size=1, max_size=4), min_size=0, max_size=6))
def test_csv_with_text_labels_loads_or_fails_cleanly(tmp_path, rows):
    path = tmp_path / "fuzz.csv"
    path.write_text("\n".join(",".join(r) for r in rows), encoding="utf-8")
    try:
        X, y = datasets.load(path)
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert X.ndim == 2 and y.shape == (X.shape[0],) and X.shape[1] >= 1
    assert np.isfinite(X).all()
