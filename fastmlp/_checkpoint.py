"""Validation of a saved model's or checkpoint's JSON metadata, every field, in one place.

A model file's metadata is written by fastmlp but may be edited by hand or damaged: nothing in it
is trusted. :func:`validate` checks the model fields (format, version, sizes, activation, output,
dtype), the training state of a checkpoint (hyperparameters, step/epoch/position counters, the
generator states, the partial epoch, the history) and the command line's run record, and raises
:class:`fastmlp.errors.CheckpointError` with one line naming the field, what it holds and what was
expected. Keys it does not know are left alone (newer writers may add some).
"""
import math
import numbers

import numpy as np

from . import _checks
from .errors import CheckpointError

FORMAT = "fastmlp"
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_second")


class _Fields:
    def __init__(self, path, where, d):
        self.path, self.where, self.d = path, where, d

    def fail(self, key, expected, value=None, show=True):
        got = f"holds {_show(value)}" if show else "is missing"
        what = "bad training state in the checkpoint" if self.where.startswith("training") else "bad metadata"
        raise CheckpointError(f"{self.path}: {what}: {self.where}{key} {got}, expected {expected}")

    def get(self, key, required=True):
        if key not in self.d:
            if required:
                self.fail(key, "a value", show=False)
            return None
        return self.d[key]

    def int(self, key, minimum=0, maximum=None, required=True):
        v = self.get(key, required)
        if v is None and not required:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum or (maximum is not None and v > maximum):
            top = f" and <= {maximum}" if maximum is not None else ""
            self.fail(key, f"an integer >= {minimum}{top}", v)
        return v

    def float(self, key, minimum=None, maximum=None, strict=False, max_strict=False, required=True):
        v = self.get(key, required)
        if v is None and not required:
            return None
        try:
            return _checks.check_float(key, v, minimum, strict, maximum, max_strict)
        except ValueError as e:
            self.fail(key, str(e).split("expected ", 1)[-1], v)

    def choice(self, key, choices, required=True):
        v = self.get(key, required)
        if v is None and not required:
            return None
        if not isinstance(v, str) or v not in choices:
            self.fail(key, "one of " + ", ".join(map(repr, choices)), v)
        return v

    def str(self, key, required=False):
        v = self.get(key, required)
        if v is not None and not isinstance(v, str):
            self.fail(key, "a string or null", v)
        return v


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_rng_state(fields, key, state):
    gen = np.random.PCG64()
    try:
        gen.state = state
    except Exception:
        fields.fail(key, "the state of numpy's PCG64 generator (a dict written by fastmlp)", state)


def validate(meta, path):
    """Check a model file's metadata dict; return it. CheckpointError (one line) otherwise."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: bad metadata: holds {_show(meta)}, expected a JSON object "
                              f"written by fastmlp")
    top = _Fields(path, "", meta)
    if meta.get("format", FORMAT) != FORMAT:
        top.fail("format", repr(FORMAT), meta["format"])
    from .model import FORMAT_VERSION
    version = top.int("format_version", 1)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version} is newer than this fastmlp "
                              f"understands ({FORMAT_VERSION}); upgrade fastmlp")
    sizes = top.get("sizes")
    if not isinstance(sizes, list) or len(sizes) < 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= _checks.MAX_UNITS for s in sizes):
        top.fail("sizes", f"a list of at least 2 layer sizes from 1 to {_checks.MAX_UNITS:,}", sizes)
    top.choice("activation", _checks.HIDDEN_ACTIVATIONS)
    top.choice("output", _checks.OUTPUTS)
    top.choice("dtype", _checks.DTYPES)
    if "training" in meta:
        _validate_training(path, meta["training"], meta["output"])
    if "run" in meta:
        _validate_run(path, meta["run"])
    return meta


def _validate_training(path, state, output):
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: bad metadata: training holds {_show(state)}, expected a JSON "
                              f"object (the training state)")
    t = _Fields(path, "training.", state)
    t.choice("optimizer", _checks.OPTIMIZERS)
    t.float("lr", 0.0, strict=True)
    t.float("momentum", 0.0, 1.0, max_strict=True)
    t.float("weight_decay", 0.0)
    t.float("beta1", 0.0, 1.0, max_strict=True)
    t.float("beta2", 0.0, 1.0, max_strict=True)
    t.float("eps", 0.0, strict=True)
    loss = t.choice("loss", _checks.LOSSES)
    if loss == "ce" and output != "softmax":
        t.fail("loss", f"'mse' for a {output} output (cross-entropy needs softmax)", loss)
    t.int("batch_size", 1, _checks.MAX_INT)
    t.int("seed", 0, _checks.MAX_INT)
    t.int("steps", 0, _checks.MAX_INT)
    epoch = t.int("epoch", 0, _checks.MAX_INT)
    position = t.int("position", 0, _checks.MAX_INT)
    _check_rng_state(t, "rng_state", t.get("rng_state"))
    epoch_state = t.get("epoch_rng_state")
    if position > 0 or epoch_state is not None:
        _check_rng_state(t, "epoch_rng_state", epoch_state)
    partial = t.get("partial")
    if not isinstance(partial, dict):
        t.fail("partial", "an object with loss_sum, correct and seconds", partial)
    p = _Fields(path, "training.partial.", partial)
    p.float("loss_sum", 0.0)
    p.int("correct", 0, position)
    p.float("seconds", 0.0)
    history = t.get("history")
    if not isinstance(history, dict):
        t.fail("history", "an object of per-epoch lists", history)
    h = _Fields(path, "training.history.", history)
    for key in HISTORY_KEYS:
        values = h.get(key)
        if not isinstance(values, list) or len(values) != epoch:
            h.fail(key, f"a list of {epoch} values (one per completed epoch)", values)
        for v in values:
            if v is None:  # no validation split, or no accuracy (a regression network)
                continue
            if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)):
                h.fail(key, "finite numbers (or null for a missing value)", values)


def _validate_run(path, run):
    if not isinstance(run, dict):
        raise CheckpointError(f"{path}: bad metadata: run holds {_show(run)}, expected a JSON object")
    r = _Fields(path, "run.", run)
    r.str("dataset")
    r.str("data_dir")
    r.float("val_split", 0.0, 1.0, max_strict=True, required=False)
    r.int("epochs", 1, _checks.MAX_INT, required=False)
    r.int("threads", 1, _checks.MAX_INT, required=False)
    if run.get("input_dtype") is not None:
        r.choice("input_dtype", ("uint8", "float32", "float64"))
