"""fastmlp.callbacks and the training loop around them: each callback against a history worked
by hand, trainer.stop(), per-epoch lr, stopped_epoch/best_epoch, restore_best, validation_split,
and checkpoints that resume bit-identically with EarlyStopping and ReduceLROnPlateau active."""
import csv

import numpy as np
import pytest

import fastmlp
from fastmlp import training
from fastmlp.callbacks import (Callback, CSVLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint,
                               ReduceLROnPlateau)
from fastmlp.model import MLP
from fastmlp.training import Trainer, TrainingInterrupted

COMPARED = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr")


def _data(n=400, d=8, k=3, seed=1, noise=2.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, (k, d))
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(0, noise, (n, d))).astype(np.float32)
    return X, y.astype(np.int64)


def _trainer(lr=0.3, optimizer="momentum", seed=0):
    net = MLP([8, 16, 3], activation="tanh", output="softmax", dtype="float32", seed=seed)
    return Trainer(net, optimizer=optimizer, lr=lr, momentum=0.9, loss="ce", batch_size=16, seed=seed,
                   threads=1)


def _driven(cb, lr=0.1):
    """A callback attached to a trainer that never trains: its hooks are driven by hand."""
    trainer = _trainer(lr=lr)
    cb.set_trainer(trainer)
    cb.on_train_begin()
    return cb, trainer


# ------------------------------------------------------------------- hand-worked histories
def test_early_stopping_hand_worked():
    # best 1.0 (epoch 0); 0.95 is not below 1.0 - 0.1: wait 1; 0.8 is: best, wait 0;
    # 0.85: wait 1; 0.79 is not below 0.8 - 0.1: wait 2 = patience: stop after epoch 4.
    cb, trainer = _driven(EarlyStopping(patience=2, min_delta=0.1, restore_best=False))
    waits = []
    for epoch, value in enumerate([1.0, 0.95, 0.8, 0.85, 0.79]):
        assert not trainer._stop_training
        cb.on_epoch_end(epoch, {"val_loss": value})
        waits.append(cb.wait)
    assert waits == [0, 1, 0, 1, 2]
    assert trainer._stop_training
    assert (cb.best, cb.best_epoch, cb.stopped_epoch) == (0.8, 2, 4)
    assert trainer.history["best_epoch"] == 3  # counted from 1, like history['epoch']


def test_early_stopping_maximises_accuracy_and_ignores_nan():
    cb, trainer = _driven(EarlyStopping(monitor="val_accuracy", patience=2))
    for epoch, value in enumerate([0.5, 0.6, float("nan"), 0.6]):
        cb.on_epoch_end(epoch, {"val_accuracy": value})
    # 0.6 then NaN (no improvement) and 0.6 (not above 0.6): stopped after epoch 3
    assert (cb.best, cb.best_epoch, cb.wait, cb.stopped_epoch) == (0.6, 1, 2, 3)
    assert trainer._stop_training


def test_early_stopping_patience_zero_stops_at_first_non_improvement():
    cb, trainer = _driven(EarlyStopping(monitor="loss", patience=0))
    cb.on_epoch_end(0, {"loss": 2.0})
    cb.on_epoch_end(1, {"loss": 1.0})
    assert not trainer._stop_training
    cb.on_epoch_end(2, {"loss": 1.0})
    assert trainer._stop_training and cb.stopped_epoch == 2


def test_reduce_lr_on_plateau_hand_worked():
    # lr 0.1, factor 0.5, patience 2, min_lr 0.02: the epochs 1-2 plateau halves it (0.05), 0.5
    # improves, 4-5 halve it again (0.025), 6-7 would give 0.0125 but min_lr holds it at 0.02.
    cb, trainer = _driven(ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, min_lr=0.02), lr=0.1)
    lrs = []
    for epoch, value in enumerate([1.0, 1.0, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]):
        cb.on_epoch_end(epoch, {"loss": value})
        lrs.append(trainer.lr)
    assert lrs == [0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02]
    assert not trainer._stop_training


def test_learning_rate_scheduler_sets_each_epochs_lr():
    X, y = _data()
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return 0.2 * 0.5 ** epoch

    trainer = _trainer(lr=0.2)
    history = trainer.fit(X, y, 3, verbose=False, callbacks=[LearningRateScheduler(schedule)])
    assert seen == [(0, 0.2), (1, 0.2), (2, 0.1)]
    assert history["lr"] == [0.2, 0.1, 0.05]
    assert history["stopped_epoch"] is None and history["best_epoch"] is None
    # the same as setting the rate by hand between epochs: the kernel takes lr on every call
    manual = _trainer(lr=0.2)
    for epochs, lr in ((1, 0.2), (2, 0.1), (3, 0.05)):
        manual.lr = lr
        manual.fit(X, y, epochs, verbose=False)
    assert np.array_equal(manual.net.params, trainer.net.params)
    assert manual.history["loss"] == history["loss"]


def test_learning_rate_scheduler_rejects_a_bad_rate():
    X, y = _data(n=64)
    trainer = _trainer()
    with pytest.raises(ValueError, match=r"schedule\(0, 0.3\) returned -1"):
        trainer.fit(X, y, 2, verbose=False, callbacks=[LearningRateScheduler(lambda e, lr: -1)])


# ------------------------------------------------------------------------- in training
def test_early_stopping_in_training_restores_the_best_epoch(tmp_path):
    X, y = _data()
    Xv, yv = _data(n=200, seed=2)
    trainer = _trainer(lr=0.5)
    es = EarlyStopping(patience=2)
    ckpt = ModelCheckpoint(tmp_path / "best.npz")
    every = ModelCheckpoint(tmp_path / "e{epoch:02d}.npz", save_best_only=False)
    history = trainer.fit(X, y, 40, validation=(Xv, yv), verbose=False, callbacks=[es, ckpt, every])
    val = history["val_loss"]
    best = int(np.argmin(val)) + 1
    assert history["best_epoch"] == best
    assert history["stopped_epoch"] == best + 2 == len(val) < 40
    assert all(v >= val[best - 1] for v in val[best:])
    # restore_best: the network is that of the best epoch, and so is the best checkpoint
    assert trainer.net.evaluate(Xv, yv)[0] == pytest.approx(val[best - 1], rel=1e-6)
    assert np.array_equal(MLP.load(tmp_path / "best.npz").params, trainer.net.params)
    assert np.array_equal(MLP.load(tmp_path / f"e{best:02d}.npz").params, trainer.net.params)
    assert sorted(p.name for p in tmp_path.glob("e*.npz")) == [f"e{i:02d}.npz" for i in range(1, len(val) + 1)]


def test_restore_best_false_keeps_the_last_parameters():
    X, y = _data()
    Xv, yv = _data(n=200, seed=2)
    trainer = _trainer(lr=0.5)
    history = trainer.fit(X, y, 40, validation=(Xv, yv), verbose=False,
                          callbacks=[EarlyStopping(patience=2, restore_best=False)])
    assert trainer.net.evaluate(Xv, yv)[0] == pytest.approx(history["val_loss"][-1], rel=1e-6)


def test_stop_from_a_callback_returns_normally():
    class StopAt(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.trainer.stop()

    X, y = _data(n=64)
    history = fastmlp.train(_trainer().net, X, y, epochs=5, verbose=False, threads=1, callbacks=[StopAt()])
    assert history["epoch"] == [1, 2]
    assert history["stopped_epoch"] == 2


def test_csv_logger_writes_the_history(tmp_path):
    X, y = _data(n=64)
    path = tmp_path / "log.csv"
    history = fastmlp.train(_trainer().net, X, y, epochs=3, verbose=False, threads=1, validation_split=0.25,
                            callbacks=[CSVLogger(path)])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(training.HISTORY_KEYS)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert [float(r[key]) for r in rows] == history[key]
    assert not list(tmp_path.glob(".*part"))


def test_monitoring_a_missing_key_fails_before_training():
    X, y = _data(n=64)
    trainer = _trainer()
    before = trainer.net.params.copy()
    for cb in (EarlyStopping(), ReduceLROnPlateau(), ModelCheckpoint("unused.npz"),
               EarlyStopping(monitor="val_acc")):
        with pytest.raises(ValueError, match="is not in the history"):
            trainer.fit(X, y, 2, verbose=False, callbacks=[cb])
    assert np.array_equal(trainer.net.params, before) and trainer.epoch == 0


@pytest.mark.parametrize("bad, match", [
    (dict(patience=-1), "patience"), (dict(min_delta=-0.1), "min_delta"), (dict(monitor=3), "monitor")])
def test_bad_callback_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**bad)


def test_bad_callbacks_argument():
    X, y = _data(n=64)
    with pytest.raises(ValueError, match="callbacks"):
        _trainer().fit(X, y, 1, verbose=False, callbacks=EarlyStopping(monitor="loss"))
    with pytest.raises(ValueError, match=r"callbacks\[0\]"):
        _trainer().fit(X, y, 1, verbose=False, callbacks=[lambda: None])


# --------------------------------------------------------------------- validation_split
def test_validation_split_is_stratified_and_seeded():
    X, y = _data(n=300)
    trainer = _trainer()
    Xt, yt, _, (Xv, yv) = trainer._split(X, y, 0.2)
    for c in range(3):
        assert (yv == c).sum() == round(0.2 * (y == c).sum())
    assert len(yt) + len(yv) == 300
    # the held-out rows and the kept rows are disjoint and together are X
    rows = {r.tobytes() for r in X}
    assert {r.tobytes() for r in Xt} | {r.tobytes() for r in Xv} == rows
    assert not {r.tobytes() for r in Xt} & {r.tobytes() for r in Xv}
    again = _trainer()._split(X, y, 0.2)[3][0]
    other = _trainer(seed=1)._split(X, y, 0.2)[3][0]
    assert np.array_equal(again, Xv) and not np.array_equal(other, Xv)
    # training with the split is training with validation= on those arrays
    h1 = _trainer().fit(X, y, 2, verbose=False, validation_split=0.2)
    h2 = _trainer().fit(Xt, yt, 2, verbose=False, validation=(Xv, yv))
    for key in COMPARED:
        assert h1[key] == h2[key]


def test_validation_split_errors():
    X, y = _data(n=20)
    with pytest.raises(ValueError, match="at most one"):
        _trainer().fit(X, y, 1, verbose=False, validation=(X, y), validation_split=0.1)
    with pytest.raises(ValueError, match="validation_split"):
        _trainer().fit(X, y, 1, verbose=False, validation_split=1.0)
    with pytest.raises(ValueError, match="holds out 0 of 20"):
        _trainer().fit(X, y, 1, verbose=False, validation_split=0.01)


# --------------------------------------------------------------- checkpoints and resume
@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(training, "MAX_CHUNK_SAMPLES", 64)


def _callbacks():
    return [EarlyStopping(patience=3), ReduceLROnPlateau(factor=0.5, patience=1)]


EPOCHS = 30


def _reference():
    X, y = _data()
    Xv, yv = _data(n=200, seed=2)
    trainer = _trainer(lr=0.5)
    trainer.fit(X, y, EPOCHS, validation=(Xv, yv), verbose=False, callbacks=_callbacks())
    return trainer, (X, y), (Xv, yv)


def test_reference_run_reduces_lr_and_stops():
    reference, _, _ = _reference()
    h = reference.history
    assert len(set(h["lr"])) >= 2  # the plateau callback acted
    assert h["stopped_epoch"] is not None and h["stopped_epoch"] < EPOCHS


# 400 samples in chunks of 64: 7 progress calls per epoch (6 chunks + the end of the epoch).
@pytest.mark.parametrize("stop_after", [3, 7, 16, 22, 30])
def test_resume_with_callbacks_is_bit_identical(tmp_path, small_chunks, stop_after):
    reference, (X, y), val = _reference()
    assert 7 * reference.history["stopped_epoch"] >= stop_after
    trainer = _trainer(lr=0.5)
    calls = []

    def stop_soon(info):
        calls.append(info)
        if len(calls) == stop_after:
            trainer.request_stop()

    try:
        trainer.fit(X, y, EPOCHS, validation=val, verbose=False, callbacks=_callbacks(), callback=stop_soon)
    except TrainingInterrupted:
        pass
    path = tmp_path / "ckpt.npz"
    trainer.save_checkpoint(path)
    resumed, _ = Trainer.from_checkpoint(path, threads=1)
    history = resumed.fit(X, y, EPOCHS, validation=val, verbose=False, callbacks=_callbacks())
    assert np.array_equal(resumed.net.params, reference.net.params)
    assert np.array_equal(resumed.v, reference.v)
    assert resumed.lr == reference.lr
    for key in COMPARED + ("stopped_epoch", "best_epoch"):
        assert history[key] == reference.history[key], key


def test_checkpoint_at_the_stopping_epoch_resumes_to_a_stop(tmp_path):
    reference, (X, y), val = _reference()
    stopped = reference.history["stopped_epoch"]
    trainer = _trainer(lr=0.5)
    path = tmp_path / "ckpt.npz"

    def save_each_epoch(info):
        if info["end_of_epoch"]:
            trainer.save_checkpoint(path)

    trainer.fit(X, y, EPOCHS, validation=val, verbose=False, callbacks=_callbacks(), callback=save_each_epoch)
    resumed, _ = Trainer.from_checkpoint(path, threads=1)
    assert resumed.epoch == stopped
    history = resumed.fit(X, y, EPOCHS, validation=val, verbose=False, callbacks=_callbacks())
    assert history["epoch"][-1] == stopped
    # restore_best applies at the end of the resumed fit too
    assert np.array_equal(resumed.net.params, reference.net.params)
