"""The run policy: what `fastmlp train` (and `evaluate`, `predict`) decide about data, models and
checkpoints, as library code that Python programs can call too.

    from fastmlp import run
    plan = run.prepare("points.npz", hidden=[64], val_split=0.1, epochs=10)
    plan.trainer.fit(plan.X, plan.y, plan.epochs, validation=plan.validation)
    plan.trainer.save_checkpoint("model.npz", extra_meta={"run": plan.record})

    plan = run.prepare(resume="model.npz", epochs=20)   # continue it, as `fastmlp train --resume`

prepare() loads the data and checks its labels (once), holds out the validation split, builds the
network and trainer (or restores them from a checkpoint, checking that the settings given agree
with it) and picks the number of classes. Errors are DataError (the data) and ConfigError (the
settings).
"""
import os
from dataclasses import dataclass, field

import numpy as np

from . import __version__, datasets
from .errors import ConfigError, DataError

# The settings of a new run when not given; with `resume` they come from the checkpoint.
DEFAULTS = dict(hidden=(100,), activation="relu", output="softmax", dtype="float32", loss="ce",
                optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=32, seed=0,
                val_split=0.0)
# The settings that define the network or the training: a resumed run keeps the checkpoint's.
RESUME_FIXED = tuple(DEFAULTS)
# The generator of the validation split: seeded by the run's seed and this constant.
SPLIT_SALT = 0x5EED
# More distinct labels than this (or than half the samples) is not a classification problem.
MAX_CLASSES = 100_000
TASKS = ("classification", "regression")


@dataclass
class Plan:
    """A run ready to train: trainer.fit(X, y, epochs, validation=validation)."""
    trainer: object
    X: np.ndarray
    y: np.ndarray
    validation: object  # (X_val, y_val) or None
    epochs: int
    data: str
    data_dir: object
    record: dict  # the "run" metadata a checkpoint keeps (data set, split, epochs, threads...)
    notes: list = field(default_factory=list)


def prepare(data=None, *, resume=None, epochs=None, threads=None, data_dir=None, given=None, progress=True,
            spell=str, task="classification", standardize=True, **settings):
    """The plan of a new or resumed run (see the module docstring).

    settings: hidden, activation, output, dtype, loss, optimizer, lr, momentum, weight_decay,
    batch_size, seed, val_split (DEFAULTS when not given); epochs: the total (5, or the
    checkpoint's, when not given). `given`: the names of the settings (and
    "epochs") the caller chose; None means those passed and not None. `spell(name)` names a setting
    in error messages (the CLI passes its option names).

    The user's own data (a file, not a known data set): its labels, whatever they are (integers
    with gaps, negative, strings), become classes 0..K-1 in sorted order, kept in record["classes"];
    with task="regression" y is the float target of one identity output unit (loss mse); with
    standardize, float features are standardised with the mean and standard deviation of the
    training split, kept in the network (input_mean, input_scale). uint8 pixels keep their 1/255.
    A resumed run keeps the checkpoint's classes, task and standardisation."""
    if task not in TASKS:
        raise ConfigError(f"{spell('task')} {task}: expected one of {', '.join(TASKS)}")
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"prepare() got unexpected settings {', '.join(sorted(unknown))}")
    if given is None:
        given = {name for name, value in settings.items() if value is not None}
        given |= {"epochs"} if epochs is not None else set()
    settings = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    epochs = 5 if epochs is None else epochs
    notes = []
    if resume:
        trainer, record = resume_trainer(resume, settings, given, spell)
        task = "regression" if trainer.net.is_regression else "classification"
        settings["seed"], settings["val_split"] = trainer.seed, float(record.get("val_split", 0.0))
        data, data_dir, threads = _resumed_data(record, data, data_dir, threads, spell, notes)
        trainer.threads = _resolve_threads(threads)
        epochs = _resumed_epochs(trainer, record, epochs, "epochs" in given, resume, spell)
    else:
        if task == "regression":
            for name, want in (("output", "identity"), ("loss", "mse")):
                if name in given and settings[name] != want:
                    raise ConfigError(f"{spell('task')} regression trains one {want} output with mse loss; "
                                      f"got {spell(name)} {settings[name]}: leave it out")
                settings[name] = want
        check_loss_output(settings["loss"], settings["output"], spell)
        data = datasets.DEFAULT if data is None else data
        trainer, record = None, {}
    classes = record.get("classes")
    X, y = load_labelled(data, "train", data_dir, input_dtype=record.get("input_dtype"), progress=progress,
                         task=task, classes=classes)
    if isinstance(y, tuple):
        y, classes = y
    if trainer is not None:
        check_fits(trainer.net, X, None if task == "regression" else y, data,
                   f"the checkpoint's network ({resume})")
    X, y, validation = validation_split(X, y, settings["val_split"], settings["seed"], spell)
    if trainer is None:
        if task == "regression":
            n_out = 1
        else:
            n_out = n_classes(data, y, classes)
            if settings["output"] == "sigmoid" and settings["loss"] == "bce" and n_out == 2:
                n_out = 1  # binary: one sigmoid unit, 1 where its output is > 0.5
        trainer = new_trainer(X.shape[1], n_out, settings, threads)
        if standardize and X.dtype != np.uint8 and not datasets.canonical_name(data):
            trainer.net.input_mean, trainer.net.input_scale = standardization(X)
    saved = record  # a resumed run keeps what else its checkpoint recorded (callbacks' settings...)
    record = {"dataset": dataset_label(data),
              "data_dir": os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None,
              "val_split": settings["val_split"], "epochs": epochs, "threads": trainer.threads,
              "input_dtype": X.dtype.name, "fastmlp_version": __version__}
    record = {**saved, **record}
    if classes is not None:
        record["classes"] = list(classes)
    return Plan(trainer, X, y, validation, epochs, data, data_dir, record, notes)


def standardization(X):
    """(mean, scale) of the features of X (float64): the standard deviation, 1 where it is 0."""
    X64 = np.asarray(X, dtype=np.float64)
    mean = X64.mean(axis=0)
    scale = X64.std(axis=0)
    scale[~(scale > 0)] = 1.0
    return mean, scale


def new_trainer(n_inputs, n_outputs, settings, threads=None):
    """An MLP of n_inputs-hidden...-n_outputs and its Trainer, from the settings of a run."""
    from .model import MLP
    from .training import Trainer
    s = settings
    net = MLP([n_inputs] + list(s["hidden"]) + [n_outputs], activation=s["activation"], output=s["output"],
              dtype=s["dtype"], seed=s["seed"])
    return Trainer(net, optimizer=s["optimizer"], lr=s["lr"], momentum=s["momentum"],
                   weight_decay=s["weight_decay"], loss=s["loss"], batch_size=s["batch_size"], seed=s["seed"],
                   threads=threads)


def check_loss_output(loss, output, spell=str):
    if loss == "bce" and output != "sigmoid":
        raise ConfigError(f"{spell('loss')} bce needs {spell('output')} sigmoid (got {spell('output')} "
                          f"{output})")
    if loss == "ce" and output == "sigmoid":
        raise ConfigError(f"{spell('loss')} ce needs {spell('output')} softmax (got {spell('output')} "
                          f"sigmoid); use {spell('loss')} bce (binary cross-entropy) with {spell('output')} "
                          f"sigmoid")
    if loss == "ce" and output != "softmax":
        raise ConfigError(f"{spell('loss')} ce needs {spell('output')} softmax (got {spell('output')} "
                          f"{output}); use {spell('loss')} mse with {spell('output')} {output}")


def _resolve_threads(threads):
    from .model import resolve_threads
    return resolve_threads(threads)


def _fmt_setting(name, value):
    if name == "hidden":
        return ",".join(map(str, value)) if value else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def resume_trainer(path, settings, given, spell=str):
    """(trainer, run record) of the checkpoint at `path`; settings given that disagree with it are a
    ConfigError."""
    from .training import Trainer
    trainer, meta = Trainer.from_checkpoint(path)
    net = trainer.net
    record = meta_section(meta, "run")
    saved = dict(hidden=net.sizes[1:-1], activation=net.activation, output=net.output,
                 dtype=net.dtype.name, loss=trainer.loss, optimizer=trainer.optimizer, lr=trainer.lr,
                 momentum=trainer.momentum, weight_decay=trainer.weight_decay,
                 batch_size=trainer.batch_size, seed=trainer.seed,
                 val_split=float(record.get("val_split", 0.0)))
    conflicts = [n for n in RESUME_FIXED if n in given and _differs(settings[n], saved[n])]
    if conflicts:
        given_text = ", ".join(f"{spell(n)} {_fmt_setting(n, settings[n])}" for n in conflicts)
        kept = ", ".join(f"{n.replace('_', ' ')} {_fmt_setting(n, saved[n])}" for n in conflicts)
        raise ConfigError(f"{given_text} conflicts with the checkpoint {path} ({kept}): {spell('resume')} keeps "
                          f"the checkpoint's network and hyperparameters; leave "
                          f"{'these options' if len(conflicts) > 1 else 'the option'} out, or "
                          f"start a new run without {spell('resume')}")
    return trainer, record


def _differs(value, saved):
    if isinstance(saved, list):
        return list(value) != saved
    return value != saved


def _resumed_data(record, data, data_dir, threads, spell, notes):
    """The data set, data directory and thread count of a resumed run: the checkpoint's unless given."""
    if data is None:
        data = record.get("dataset") or datasets.DEFAULT
    elif record.get("dataset") and dataset_label(data) != dataset_label(str(record["dataset"])):
        notes.append(f"the checkpoint was trained on {record['dataset']}; continuing on {data}")
    if data_dir is None:
        data_dir = record.get("data_dir")
    saved = record.get("threads")
    if threads is None and isinstance(saved, int):
        import numba
        if saved <= numba.config.NUMBA_NUM_THREADS:
            threads = saved
        else:
            notes.append(f"the checkpoint ran on {saved} threads but at most {numba.config.NUMBA_NUM_THREADS} "
                         f"are available here: the result will not be bit-identical to an uninterrupted run")
    elif threads is not None and isinstance(saved, int) and threads != saved:
        notes.append(f"{spell('threads')} {threads} differs from the checkpoint's {saved}: the result will not "
                     f"be bit-identical to an uninterrupted run")
    return data, data_dir, threads


def _resumed_epochs(trainer, record, epochs, explicit, path, spell):
    """The total epochs of a resumed run: the checkpoint's unless given, and at least those begun."""
    needed = trainer.epoch + (1 if trainer.position else 0)
    if not explicit:
        return max(int(record.get("epochs", epochs)), needed)
    if epochs < needed:
        raise ConfigError(f"{spell('epochs')} {epochs}: the checkpoint {path} has reached epoch {needed} "
                          f"already; {spell('epochs')} is the total number of epochs, give at least {needed}")
    return epochs


def validation_split(X, y, fraction, seed, spell=str):
    """(X_train, y_train, (X_val, y_val)): the last `fraction` of a seeded shuffle held out; with
    fraction 0, (X, y, None)."""
    if fraction <= 0:
        return X, y, None
    n_all = y.shape[0]
    n_val = int(round(n_all * fraction))
    if n_val < 1 or n_val > n_all - 1:
        raise ConfigError(f"{spell('val_split')} {fraction:g} holds out {n_val} of {n_all} samples; expected "
                          f"at least 1 for validation and 1 for training")
    perm = np.random.default_rng([seed, SPLIT_SALT]).permutation(n_all)
    keep, held = perm[:n_all - n_val], perm[n_all - n_val:]
    return X[keep], y[keep], (X[held], y[held])


def n_classes(data, y, classes=None):
    """The labels' class count, at least the data set's own (a split may miss a class)."""
    count = int(y.max()) + 1 if y.size else 0
    if classes is not None:
        count = len(classes)
    name = datasets.canonical_name(data)
    if name:
        count = max(count, datasets.n_classes(name))
    if count < 2:
        raise DataError(f"{data} has labels of {count} class(es); expected at least 2 classes")
    return count


def load_labelled(data, split="train", data_dir=None, *, input_dtype=None, progress=True, source=None,
                  task="classification", classes=None):
    """(X, y) of a data set with y checked as class labels (int64 >= 0), and X in the representation
    a network trained on `input_dtype` data expects (see match_input). For the user's own data y is
    mapped to classes (see map_labels): with `classes` (a trained model's) to those, else y is
    (class indices, the sorted labels). With task="regression", y is the float targets."""
    X, y = datasets.load(data, split, data_dir, progress=progress)
    if task == "regression":
        y = regression_targets(y, source or data)
    elif datasets.canonical_name(data) is None:
        indices, found = map_labels(y, source or data, classes)
        y = indices if classes is not None else (indices, found)
    else:
        y = class_labels(y, source or data)
    if input_dtype:
        X = match_input(X, input_dtype)
    return X, y


def regression_targets(y, source):
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":
        raise DataError(f"targets of {source} have dtype {y.dtype}, expected numbers for --task regression")
    return y.astype(np.float64)


def map_labels(y, source, classes=None):
    """(class indices int64, classes as a list): the distinct labels of y in sorted order become
    classes 0..K-1; with `classes` given (those of a trained model), y is mapped to them and a label
    that is not among them is a DataError."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        bad = y[y != np.round(y)]
        if bad.size:
            raise DataError(f"labels of {source} are not integers ({bad[0].item()!r}): expected class labels "
                            f"(integers or strings); for a numeric target use --task regression")
        y = y.astype(np.int64)
    if classes is None:
        found, indices = np.unique(y, return_inverse=True)
        if found.size > MAX_CLASSES or found.size > max(y.size / 2, 2):
            raise DataError(f"labels of {source}: {found.size:,} distinct values in {y.size:,} samples; expected "
                            f"class labels (at most half the samples and at most {MAX_CLASSES:,} classes); "
                            f"for a numeric target use --task regression")
        return indices.astype(np.int64).reshape(-1), found.tolist()
    lookup = {label: i for i, label in enumerate(classes)}
    out = np.empty(y.shape[0], dtype=np.int64)
    for i, label in enumerate(y.tolist()):
        k = lookup.get(label)
        if k is None:
            raise DataError(f"labels of {source} include {label!r}, which is not one of the model's "
                            f"{len(classes)} classes ({', '.join(map(str, classes[:10]))}"
                            f"{', ...' if len(classes) > 10 else ''}); use data with the model's classes")
        out[i] = k
    return out, list(classes)


def score_test_split(net, data, data_dir, loss, threads, input_dtype, progress=True, classes=None):
    """(loss, accuracy, n) of `net` on the test split of `data`, or None if it has none. For a
    regression network, the accuracy is None (see regression_scores)."""
    if not has_test_split(data):
        return None
    source = f"{data} (test split)"
    task = "regression" if net.is_regression else "classification"
    X, y = load_labelled(data, "test", data_dir, input_dtype=input_dtype, progress=progress, source=source,
                         task=task, classes=classes)
    if isinstance(y, tuple):
        y = y[0]
    check_fits(net, X, None if task == "regression" else y, source, "the network")
    test_loss, test_accuracy = net.evaluate(X, y, loss=loss, threads=threads)
    return test_loss, test_accuracy, y.shape[0]


def regression_scores(net, X, y, threads=None):
    """(RMSE, R^2) of a regression network's predictions of y."""
    pred = net.predict(X, threads=threads).astype(np.float64)
    y = np.asarray(y, dtype=np.float64)
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((pred - y) ** 2)) / total if total > 0 else float("nan")
    return rmse, r2




# -- checks shared by train, evaluate and predict ---------------------------------------------------

def arch(sizes):
    return "-".join(map(str, sizes))


def dataset_label(data):
    """A known name in its canonical spelling, or the absolute path of a file or directory."""
    name = datasets.canonical_name(data)
    return name if name else os.path.abspath(os.path.expanduser(data))


def has_test_split(data):
    """Whether `data` (a known name or a path) has a test split of its own."""
    if datasets.canonical_name(data):
        return True
    p = os.path.expanduser(data)
    if os.path.isdir(p):
        names = os.listdir(p)
        return (any(n.startswith("t10k-images") for n in names)
                and any(n.startswith("t10k-labels") for n in names))
    if p.lower().endswith(".npz") and os.path.isfile(p):
        try:
            with np.load(p, allow_pickle=False) as z:
                files = getattr(z, "files", [])
                return "X_test" in files and "y_test" in files
        except Exception:
            return False
    return False


def class_labels(y, source):
    """y as int64 class indices >= 0, or DataError."""
    y = np.asarray(y)
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.array_equal(y, np.round(y)):
            raise DataError(f"labels of {source} are not integers: expected class indices 0, 1, 2...")
        y = y.astype(np.int64)
    if y.dtype.kind not in "iub":
        raise DataError(f"labels of {source} have dtype {y.dtype}, expected integer class indices")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise DataError(f"labels of {source} include {int(y.min())}: expected class indices >= 0")
    return y


def check_fits(net, X, y, source, model_name):
    """The data's width and labels must fit the network (one-line DataError otherwise)."""
    if X.ndim != 2 or X.shape[1] != net.sizes[0]:
        width = X.shape[1] if X.ndim == 2 else X.shape
        raise DataError(f"{source} has {width} features per sample but {model_name} takes "
                        f"{net.sizes[0]} inputs (layers {arch(net.sizes)}); use data of the same "
                        f"shape as the training data")
    if y is not None and y.size:
        top = int(y.max())
        K = max(net.sizes[-1], 2 if net.output == "sigmoid" else 1)
        if top >= K:
            raise DataError(f"labels of {source} go up to {top} but {model_name} has {K} outputs "
                            f"(classes 0-{K - 1}); use a data set with at most {K} classes, or train "
                            f"a new network on it (without --resume)")


def match_input(X, trained_dtype):
    """Give X the representation the network was trained on: uint8 pixels are scaled by 1/255 in the
    kernels, floats are used as they are. An integer array of pixel values for a network trained on
    uint8 becomes uint8; uint8 data for a network trained on floats becomes float32 (unscaled)."""
    if trained_dtype == "uint8" and X.dtype != np.uint8:
        if X.dtype.kind in "iub" or (X.dtype.kind == "f" and np.array_equal(X, np.round(X))):
            if X.size == 0 or (X.min() >= 0 and X.max() <= 255):
                return X.astype(np.uint8)
    elif trained_dtype in ("float32", "float64") and X.dtype == np.uint8:
        return X.astype(np.float32)
    return X


def meta_section(meta, key):
    """meta[key] if it is a dict (a checkpoint's "run" or "training" record), else {}."""
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def class_names(dataset):
    """The class names of a known data set, when they say more than the class index; else None."""
    name = datasets.canonical_name(dataset) if dataset else None
    if name:
        names = datasets.class_names(name)
        if any(n != str(i) for i, n in enumerate(names)):
            return names
    return None
