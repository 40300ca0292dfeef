"""Callbacks for fastmlp.train / Trainer.fit, in the manner of Keras.

    from fastmlp.callbacks import EarlyStopping, ReduceLROnPlateau
    history = fastmlp.train(net, X, y, epochs=100, validation_split=0.1,
                            callbacks=[EarlyStopping(patience=5), ReduceLROnPlateau(patience=2)])

A callback receives on_train_begin(logs), on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs)
and on_train_end(logs); `epoch` counts from 0 and `logs` at the end of an epoch is its history row
(loss, accuracy, val_loss, val_accuracy, lr, ...). `self.trainer` is the Trainer: a callback may
change `trainer.lr` (used from the next minibatch on) and end training with `trainer.stop()`
(after the current epoch; fit then returns normally).

state_dict()/load_state_dict() carry a callback's state (best value, wait counter, ...) through
a checkpoint, so that a resumed run continues bit-identically: give the resumed fit() the same
callbacks, in the same order. Values that are NumPy arrays are stored as arrays in the .npz.

`monitor` names a history key: losses ("loss", "val_loss") are minimised, accuracies maximised.
"""
import csv
import io
import math
import numbers
import os

import numpy as np

from . import _checks

__all__ = ["Callback", "EarlyStopping", "ReduceLROnPlateau", "LearningRateScheduler", "ModelCheckpoint",
           "CSVLogger"]


class Callback:
    """Base class: override the hooks you need. `trainer` is set by fit() before on_train_begin."""

    trainer = None

    @property
    def net(self):
        return None if self.trainer is None else self.trainer.net

    def set_trainer(self, trainer):
        self.trainer = trainer

    def monitored(self):
        """The history key this callback needs (checked before training), or None."""
        return None

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def state_dict(self):
        """The state a resumed run needs: JSON values, or NumPy arrays."""
        return {}

    def load_state_dict(self, state):
        pass


class _Monitor(Callback):
    """A callback that follows one history key and knows which direction is better."""

    def __init__(self, monitor, min_delta):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor: got {monitor!r}, expected a history key such as 'val_loss'")
        self.monitor = monitor
        self.min_delta = _checks.check_float("min_delta", min_delta, 0.0)
        self.mode = "max" if "acc" in monitor else "min"
        self.best = None

    def monitored(self):
        return self.monitor

    def _current(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None or not isinstance(value, numbers.Real) or not math.isfinite(value):
            return None
        return float(value)

    def _improves(self, current):
        # a NaN or missing value never improves; the first finite value always does
        if current is None:
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return current < self.best - self.min_delta
        return current > self.best + self.min_delta


def _check_patience(patience):
    return _checks.check_int("patience", patience, 0)


class EarlyStopping(_Monitor):
    """Stop when `monitor` has not improved by more than min_delta for `patience` epochs.

    With restore_best=True the network ends training with the parameters of the best epoch
    (also when training ran to the last epoch). The history's best_epoch is that epoch (counted
    from 1, like history['epoch']); stopped_epoch is the epoch after which training stopped.
    A checkpoint saved after training keeps the last epoch's parameters in this callback's state,
    so that resuming with the same callbacks continues from them, not from the restored ones."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        super().__init__(monitor, min_delta)
        self.patience = _check_patience(patience)
        self.restore_best = bool(restore_best)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self.best_params = None
        self.last_params = None  # the parameters training ended with, when restore_best replaced them

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if self._improves(current):
            self.best, self.best_epoch, self.wait = current, epoch, 0
            if self.restore_best:
                self.best_params = self.trainer.net.params.copy()
            self.trainer.history["best_epoch"] = epoch + 1
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop()

    def on_train_end(self, logs=None):
        if self.restore_best and self.best_params is not None:
            self.last_params = self.trainer.net.params.copy()
            self.trainer.net.params[...] = self.best_params

    def state_dict(self):
        state = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                 "stopped_epoch": self.stopped_epoch}
        if self.best_params is not None:
            state["best_params"] = self.best_params
        if self.last_params is not None:
            state["last_params"] = self.last_params
        return state

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.stopped_epoch = int(state["wait"]), state["stopped_epoch"]
        self.best_params = state.get("best_params")
        if self.best_params is not None:
            self.best_params = np.array(self.best_params, dtype=self.trainer.net.dtype)
        last = state.get("last_params")
        self.last_params = None
        if last is not None:
            # the checkpoint holds the restored best parameters: training continues from the last ones
            self.trainer.net.params[...] = last


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by `factor` (not below min_lr) when `monitor` has not improved by
    more than min_delta for `patience` epochs; the wait then starts again."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=2, min_delta=0.0, min_lr=0.0):
        super().__init__(monitor, min_delta)
        self.factor = _checks.check_float("factor", factor, 0.0, strict=True, maximum=1.0, max_strict=True)
        self.patience = _check_patience(patience)
        self.min_lr = _checks.check_float("min_lr", min_lr, 0.0)
        self.on_train_begin()

    def on_train_begin(self, logs=None):
        self.best = None
        self.wait = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if self._improves(current):
            self.best, self.wait = current, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            lr = self.trainer.lr
            if lr > self.min_lr:
                self.trainer.lr = max(lr * self.factor, self.min_lr)
            self.wait = 0

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], int(state["wait"])


class LearningRateScheduler(Callback):
    """At the start of each epoch, lr = schedule(epoch, lr) (epoch counted from 0)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise ValueError(f"schedule: got {type(schedule).__name__}, expected a function (epoch, lr) -> lr")
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch, self.trainer.lr)
        ok = isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
        if not ok:
            raise ValueError(f"LearningRateScheduler: schedule({epoch}, {self.trainer.lr:g}) returned {lr!r}, "
                             "expected a finite learning rate > 0")
        self.trainer.lr = float(lr)


def cosine_schedule(epochs, lr, min_lr=0.0):
    """schedule(epoch, _) for LearningRateScheduler: cosine annealing from lr (epoch 0) towards
    min_lr over `epochs` epochs: min_lr + (lr - min_lr) (1 + cos(pi epoch / epochs)) / 2."""
    epochs = _checks.check_int("epochs", epochs, 1)
    lr = _checks.check_float("lr", lr, 0.0, strict=True)
    min_lr = _checks.check_float("min_lr", min_lr, 0.0)

    def schedule(epoch, _current):
        return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs)) / 2

    return schedule


class ModelCheckpoint(_Monitor):
    """Save the network (net.save, atomic) after each epoch, or with save_best_only only after an
    epoch that improved `monitor`. `path` may hold {epoch} (counted from 1) and history keys,
    e.g. 'model-{epoch:03d}.npz'."""

    def __init__(self, path, monitor="val_loss", save_best_only=True):
        super().__init__(monitor, 0.0)
        self.path = os.fspath(path)
        self.save_best_only = bool(save_best_only)

    def monitored(self):
        return self.monitor if self.save_best_only else None

    def on_train_begin(self, logs=None):
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.save_best_only:
            current = self._current(logs)
            if not self._improves(current):
                return
            self.best = current
        logs["epoch"] = epoch + 1
        path = self.path.format(**logs) if "{" in self.path else self.path
        self.trainer.net.save(path)

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state["best"]


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return repr(float(value))  # the shortest text that reads back as the same float


class CSVLogger(Callback):
    """Write the history to a CSV file after each epoch: a header of the per-epoch history keys and
    one row per epoch (empty cells for values that are None). The file is rewritten atomically
    from the history, so a resumed run continues it."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def on_epoch_end(self, epoch, logs=None):
        from ._files import atomic_write
        from .training import HISTORY_KEYS
        history = self.trainer.history
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(HISTORY_KEYS)
        for i in range(len(history["epoch"])):
            writer.writerow([_cell(history[k][i]) for k in HISTORY_KEYS])
        text = buf.getvalue()

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

        atomic_write(self.path, write)
