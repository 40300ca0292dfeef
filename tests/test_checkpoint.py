"""Checkpoints through the Python API: a run stopped (request_stop -> TrainingInterrupted), saved,
loaded and continued ends bit-identical to an uninterrupted run; bad checkpoint files are refused
with a one-line CheckpointError."""
import json

import numpy as np
import pytest

from fastmlp import training
from fastmlp.errors import CheckpointError
from fastmlp.model import MLP
from fastmlp.training import Trainer, TrainingInterrupted

EPOCHS = 3


def _data(n=600, d=12, k=3, seed=1):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (k, d))
    y = rng.integers(0, k, n)
    X = (centers[y] + rng.normal(0, 1, (n, d))).astype(np.float32)
    return X, y.astype(np.int64)


def _trainer(optimizer, seed=0):
    net = MLP([12, 16, 3], activation="tanh", output="softmax", dtype="float32", seed=seed)
    lr = 0.01 if optimizer == "adam" else 0.05
    return Trainer(net, optimizer=optimizer, lr=lr, momentum=0.9, weight_decay=1e-4, loss="ce",
                   batch_size=16, seed=seed, threads=1)


@pytest.fixture
def small_chunks(monkeypatch):
    """A few minibatches per chunk, so an epoch has several chunks to stop between."""
    monkeypatch.setattr(training, "MAX_CHUNK_SAMPLES", 64)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
# 600 samples in chunks of 64: 10 chunk callbacks and 1 end-of-epoch callback per epoch; a stop asked
# at callback 3 stops in epoch 1, at 10 (the last chunk) at the end of epoch 1, at 20 in epoch 2.
@pytest.mark.parametrize("stop_after, epoch, position", [(3, 0, 192), (10, 1, 0), (20, 1, 576)])
def test_interrupted_saved_and_resumed_equals_uninterrupted(tmp_path, small_chunks, optimizer, stop_after,
                                                           epoch, position):
    X, y = _data()
    Xv, yv = _data(n=100, seed=2)

    reference = _trainer(optimizer)
    reference.fit(X, y, EPOCHS, validation=(Xv, yv), verbose=False)

    trainer = _trainer(optimizer)
    calls = []

    def stop_soon(info):
        calls.append(info)
        if len(calls) == stop_after:
            trainer.request_stop()  # noqa: F821 (`del trainer` below confuses pyflakes)

    with pytest.raises(TrainingInterrupted) as excinfo:
        trainer.fit(X, y, EPOCHS, validation=(Xv, yv), verbose=False, callback=stop_soon)
    assert excinfo.value.trainer is trainer
    assert isinstance(excinfo.value, KeyboardInterrupt)
    assert (trainer.epoch, trainer.position) == (epoch, position)
    path = tmp_path / "ckpt.npz"
    trainer.save_checkpoint(path, extra_meta={"run": {"dataset": "blobs"}})
    del trainer

    resumed, meta = Trainer.from_checkpoint(path, threads=1)
    assert meta["run"] == {"dataset": "blobs"}
    history = resumed.fit(X, y, EPOCHS, validation=(Xv, yv), verbose=False)

    assert np.array_equal(resumed.net.params, reference.net.params)
    assert np.array_equal(resumed.m, reference.m) and np.array_equal(resumed.v, reference.v)
    assert resumed.steps == reference.steps
    assert history["epoch"] == [1, 2, 3]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history[key] == reference.history[key]


def test_interrupt_mid_epoch_records_the_position(tmp_path, small_chunks):
    X, y = _data()
    trainer = _trainer("sgd")

    def stop_at_epoch_end(info):
        if info["end_of_epoch"]:
            trainer.request_stop()

    trainer.fit(X, y, 1, verbose=False, callback=stop_at_epoch_end)
    # a stop at the end of the last epoch is no interruption: fit returns
    assert trainer.epoch == 1 and trainer.position == 0
    with pytest.raises(TrainingInterrupted):
        trainer.fit(X, y, 2, verbose=False, callback=lambda info: trainer.request_stop())
    assert trainer.epoch == 1 and trainer.position == 64
    trainer.save_checkpoint(tmp_path / "c.npz")
    back, _ = Trainer.from_checkpoint(tmp_path / "c.npz")
    assert (back.epoch, back.position, back.steps) == (1, 64, trainer.steps)


def test_checkpoint_loads_without_pickle(tmp_path):
    X, y = _data()
    trainer = _trainer("adam")
    trainer.fit(X, y, 1, verbose=False)
    path = tmp_path / "c.npz"
    trainer.save_checkpoint(path, extra_meta={"run": {"dataset": "blobs", "epochs": 5}})
    with np.load(path, allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    assert set(arrays) == {"params", "meta", "optimizer_m", "optimizer_v"}
    meta = json.loads(str(arrays["meta"]))
    assert meta["training"]["epoch"] == 1 and meta["run"]["epochs"] == 5
    assert not list(tmp_path.glob(".fastmlp-*"))  # no temporary file left behind
    net = MLP.load(path)  # a checkpoint is also a model
    assert np.array_equal(net.params, trainer.net.params)


# -- bad files ------------------------------------------------------------------------------------

def _good_checkpoint(path):
    X, y = _data(n=64)
    trainer = _trainer("momentum")
    trainer.fit(X, y, 1, verbose=False)
    trainer.save_checkpoint(path)
    with np.load(path, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


def _rewrite(path, arrays, **meta_changes):
    meta = json.loads(str(arrays["meta"]))
    for key, value in meta_changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    arrays = dict(arrays, meta=np.array(json.dumps(meta)))
    np.savez(path, **arrays)


def _one_line_error(call, *fragments):
    with pytest.raises(CheckpointError) as excinfo:
        call()
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    arrays = _good_checkpoint(path)
    np.savez(path, params=np.array([object(), 1], dtype=object), meta=arrays["meta"])
    _one_line_error(lambda: MLP.load(path), "object arrays")
    _one_line_error(lambda: Trainer.from_checkpoint(path), "object arrays")


def test_wrong_parameter_shape_is_refused(tmp_path):
    path = tmp_path / "shape.npz"
    arrays = _good_checkpoint(path)
    np.savez(path, **dict(arrays, params=arrays["params"][:-3]))
    _one_line_error(lambda: MLP.load(path), "shape", "[12, 16, 3]")


def test_wrong_optimizer_state_shape_is_refused(tmp_path):
    path = tmp_path / "state.npz"
    arrays = _good_checkpoint(path)
    np.savez(path, **dict(arrays, optimizer_v=arrays["optimizer_v"][:5]))
    _one_line_error(lambda: Trainer.from_checkpoint(path), "optimizer state v")


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "v99.npz"
    arrays = _good_checkpoint(path)
    _rewrite(path, arrays, format_version=99)
    _one_line_error(lambda: MLP.load(path), "format version 99", "upgrade fastmlp")


def test_model_without_training_state_cannot_be_resumed(tmp_path):
    path = tmp_path / "model.npz"
    MLP([4, 3, 2], seed=0).save(path)
    MLP.load(path)  # a fine model
    _one_line_error(lambda: Trainer.from_checkpoint(path), "no training state")


def test_damaged_training_state_is_refused(tmp_path):
    path = tmp_path / "damaged.npz"
    arrays = _good_checkpoint(path)
    meta = json.loads(str(arrays["meta"]))
    del meta["training"]["rng_state"]
    _rewrite(path, arrays, training=meta["training"])
    _one_line_error(lambda: Trainer.from_checkpoint(path), "bad training state")


def test_not_an_npz_file_is_refused(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    _one_line_error(lambda: MLP.load(path), "junk.npz")
    truncated = tmp_path / "truncated.npz"
    _good_checkpoint(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    _one_line_error(lambda: Trainer.from_checkpoint(truncated), "truncated.npz")
    _one_line_error(lambda: MLP.load(tmp_path / "missing.npz"), "does not exist")
