"""The work of the `fastmlp` commands (the options are declared in fastmlp.cli).

Imported only when a command runs; NumPy and Numba load here, not when the CLI starts.
"""
import json
import os
import shlex
import shutil
import sys
import tempfile
import time

import click
import numpy as np

from . import __version__
from ._files import atomic_write
from .errors import DataError, DivergenceError

MATPLOTLIB_MISSING = "matplotlib is not installed: pip install 'fastmlp[plot]'"
WORKQUEUE_WARNING = ("Numba's threading layer is 'workqueue': each parallel region costs 45-90 us "
                     "(about 1.5 us with 'omp'), which slows small minibatches; install an OpenMP "
                     "runtime (e.g. apt-get install libgomp1) or TBB (pip install tbb)")
# Options of `train` that define the network or the run; --resume keeps the checkpoint's.
RESUME_FIXED = ("hidden", "activation", "output", "dtype", "loss", "optimizer", "lr", "momentum",
                "weight_decay", "batch_size", "seed", "val_split")


# -- small helpers --------------------------------------------------------------------------------

def one_line(text):
    return " ".join(str(text).split())


def _option_name(name):
    return "--" + name.replace("_", "-")


def _fmt_option_value(name, value):
    if name == "hidden":
        return ",".join(map(str, value)) if value else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _note(message, quiet=False):
    if not quiet:
        click.echo(f"note: {one_line(message)}", err=True)


def _json_safe(obj):
    """obj with NaN and infinities as None (strict JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(value) for value in obj]
    return obj


def _print_json(obj):
    click.echo(json.dumps(_json_safe(obj), allow_nan=False))


def _pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _arch(sizes):
    return "-".join(map(str, sizes))


def resolve_threads(threads):
    from .model import resolve_threads as resolve
    try:
        return resolve(threads)
    except ValueError as e:
        message = one_line(e)
        if message.startswith("threads: "):
            message = message[len("threads: "):]
        raise click.BadParameter(message, param_hint="'--threads'") from None


def check_writable(path, option, append=False):
    """Fail now, before any training, if `path` cannot be written (a file in an existing, writable
    directory). Leaves nothing behind."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        raise click.ClickException(f"cannot write {option} {path}: it is a directory; give a file path")
    directory = os.path.dirname(full)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise click.ClickException(f"cannot write {option} {path}: {directory} is a file, not a directory; "
                                   f"choose another path")
    if not os.path.isdir(directory):
        raise click.ClickException(f"cannot write {option} {path}: directory {directory} does not exist; "
                                   f"create it first or choose another path")
    try:
        if append and os.path.exists(full):
            with open(full, "a", encoding="utf-8"):
                pass
        else:
            fd, tmp = tempfile.mkstemp(prefix=".fastmlp-check-", dir=directory)
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise click.ClickException(f"cannot write {option} {path}: {e.strerror or e}; choose a writable "
                                   f"location") from None
    return full


def _is_known(name):
    from . import datasets
    return isinstance(name, str) and name.strip().lower().replace("_", "-") in datasets.KNOWN


def _canonical(name):
    return name.strip().lower().replace("_", "-")


def _dataset_label(data):
    """A known name in its canonical spelling, or the absolute path of a file or directory."""
    return _canonical(data) if _is_known(data) else os.path.abspath(os.path.expanduser(data))


def has_test_split(data):
    """Whether `data` (a known name or a path) has a test split of its own."""
    if _is_known(data):
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
                        f"{net.sizes[0]} inputs (layers {_arch(net.sizes)}); use data of the same "
                        f"shape as the training data")
    if y is not None and y.size:
        top = int(y.max())
        K = net.sizes[-1]
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


def _meta_dict(meta, key):
    value = meta.get(key)
    return value if isinstance(value, dict) else {}


def _class_names(dataset):
    if dataset and _is_known(dataset):
        from . import datasets
        names = datasets.class_names(_canonical(dataset))
        if any(name != str(i) for i, name in enumerate(names)):
            return names
    return None


def _isatty(stream):
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar on stderr (when it is a terminal), updated from Trainer.fit's callback,
    and one line per epoch on stdout."""

    BAR = 24

    def __init__(self, quiet):
        self.stream = sys.stderr
        self.lines = not quiet
        self.bar = not quiet and _isatty(self.stream)
        self.shown = False
        self.last = 0.0

    def update(self, info):
        if not self.bar:
            return
        now = time.monotonic()
        if self.shown and now - self.last < 0.1:
            return
        self.last = now
        frac = info["done"] / info["total"] if info["total"] else 1.0
        head = f"epoch {info['epoch']}/{info['epochs']} "
        tail = (f" {info['done']:,}/{info['total']:,} loss {info['loss']:.4f} "
                f"acc {100 * info['accuracy']:.2f}% {info['samples_per_second']:,.0f} samples/s")
        width = shutil.get_terminal_size((80, 24)).columns
        bar = max(8, min(self.BAR, width - 1 - len(head) - len(tail) - 2))
        filled = int(frac * bar)
        text = f"{head}[{'#' * filled}{'-' * (bar - filled)}]{tail}"
        self.stream.write("\r" + text[:max(width - 1, 10)] + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def epoch_end(self, row, epochs):
        from .training import format_epoch
        self.close()
        if self.lines:
            click.echo(format_epoch(row, epochs))

    def close(self):
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def _append_jsonl(path, obj):
    line = json.dumps(_json_safe(obj), allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


# -- train ------------------------------------------------------------------------------------------

def train(ctx, data, data_dir, hidden, activation, output, loss, dtype, epochs, batch_size, lr, optimizer,
          momentum, weight_decay, seed, threads, val_split, save, resume, metrics, as_json, quiet):
    from . import datasets
    from .model import MLP
    from .training import Trainer, TrainingInterrupted

    wall0 = time.perf_counter()
    options = dict(hidden=hidden, activation=activation, output=output, dtype=dtype, loss=loss,
                   optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                   batch_size=batch_size, seed=seed, val_split=val_split)
    source = click.core.ParameterSource
    explicit = {name for name in ctx.params
                if ctx.get_parameter_source(name) in (source.COMMANDLINE, source.ENVIRONMENT)}
    notes = []

    def note(message):
        notes.append(one_line(message))
        _note(message, quiet)

    # Output files first: fail before loading anything or training.
    if save and metrics and os.path.abspath(save) == os.path.abspath(metrics):
        raise click.UsageError("--save and --metrics name the same file; give two different paths")
    if save:
        check_writable(save, "--save")
    if metrics:
        check_writable(metrics, "--metrics", append=True)
    if not resume and loss == "ce" and output != "softmax":
        raise click.UsageError(f"--loss ce needs --output softmax (got --output {output}); use --loss mse "
                               f"with --output {output}")

    run = {}
    if resume:
        trainer, meta = Trainer.from_checkpoint(resume)
        net = trainer.net
        run = _meta_dict(meta, "run")
        saved = dict(hidden=net.sizes[1:-1], activation=net.activation, output=net.output,
                     dtype=net.dtype.name, loss=trainer.loss, optimizer=trainer.optimizer, lr=trainer.lr,
                     momentum=trainer.momentum, weight_decay=trainer.weight_decay,
                     batch_size=trainer.batch_size, seed=trainer.seed,
                     val_split=float(run.get("val_split", 0.0)))
        conflicts = [name for name in RESUME_FIXED if name in explicit and options[name] != saved[name]]
        if conflicts:
            given = ", ".join(f"{_option_name(n)} {_fmt_option_value(n, options[n])}" for n in conflicts)
            kept = ", ".join(f"{n.replace('_', ' ')} {_fmt_option_value(n, saved[n])}" for n in conflicts)
            raise click.UsageError(f"{given} conflicts with the checkpoint {resume} ({kept}): --resume keeps "
                                   f"the checkpoint's network and hyperparameters; leave "
                                   f"{'these options' if len(conflicts) > 1 else 'the option'} out, or "
                                   f"start a new run without --resume")
        seed, val_split = trainer.seed, saved["val_split"]
        if data is None:
            data = run.get("dataset") or datasets.DEFAULT
        elif run.get("dataset") and _dataset_label(data) != _dataset_label(str(run["dataset"])):
            note(f"the checkpoint was trained on {run['dataset']}; continuing on {data}")
        if data_dir is None:
            data_dir = run.get("data_dir")
        saved_threads = run.get("threads")
        if threads is None and isinstance(saved_threads, int):
            import numba
            if saved_threads <= numba.config.NUMBA_NUM_THREADS:
                threads = saved_threads
            else:
                note(f"the checkpoint ran on {saved_threads} threads but at most "
                     f"{numba.config.NUMBA_NUM_THREADS} are available here: the result will not be "
                     f"bit-identical to an uninterrupted run")
        elif threads is not None and isinstance(saved_threads, int) and threads != saved_threads:
            note(f"--threads {threads} differs from the checkpoint's {saved_threads}: the result will not "
                 f"be bit-identical to an uninterrupted run")
        trainer.threads = resolve_threads(threads)
        needed = trainer.epoch + (1 if trainer.position else 0)
        if "epochs" not in explicit:
            epochs = max(int(run.get("epochs", epochs)), needed)
        elif epochs < needed:
            raise click.UsageError(f"--epochs {epochs}: the checkpoint {resume} has reached epoch {needed} "
                                   f"already; --epochs is the total number of epochs, give at least {needed}")
    else:
        if data is None:
            data = datasets.DEFAULT
        threads = resolve_threads(threads)

    # The data.
    X, y = datasets.load(data, "train", data_dir, progress=not quiet)
    y = class_labels(y, data)
    if resume:
        X = match_input(X, run.get("input_dtype"))
        check_fits(net, X, y, data, f"the checkpoint's network ({resume})")
    n_all = y.shape[0]
    validation, n_val = None, 0
    if val_split > 0:
        n_val = int(round(n_all * val_split))
        if n_val < 1 or n_val > n_all - 1:
            raise click.UsageError(f"--val-split {val_split:g} holds out {n_val} of {n_all} samples; expected "
                                   f"at least 1 for validation and 1 for training")
        perm = np.random.default_rng([seed, 0x5EED]).permutation(n_all)
        keep, held = perm[:n_all - n_val], perm[n_all - n_val:]
        validation = (X[held], y[held])
        X, y = X[keep], y[keep]
    n = y.shape[0]

    if not resume:
        n_classes = int(y.max()) + 1 if y.size else 0
        if _is_known(data):
            n_classes = max(n_classes, datasets.n_classes(_canonical(data)))
        if n_classes < 2:
            raise DataError(f"{data} has labels of {n_classes} class(es); expected at least 2 classes")
        net = MLP([X.shape[1]] + hidden + [n_classes], activation=activation, output=output, dtype=dtype,
                  seed=seed)
        trainer = Trainer(net, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          loss=loss, batch_size=batch_size, seed=seed, threads=threads)

    run_meta = {"dataset": _dataset_label(data),
                "data_dir": os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None,
                "val_split": val_split, "epochs": epochs, "threads": trainer.threads,
                "input_dtype": X.dtype.name, "fastmlp_version": __version__}
    extra_meta = {"run": run_meta}

    lines = not quiet
    if lines:
        what = (f"{_arch(net.sizes)} ({net.activation}, {net.output} output, {trainer.loss} loss, "
                f"{trainer.optimizer} lr {trainer.lr:g}, batch {trainer.batch_size})")
        val_text = f" + {n_val:,} for validation" if n_val else ""
        threads_text = f"{trainer.threads} thread{'s' if trainer.threads != 1 else ''}"
        if resume:
            at = (f"epoch {trainer.epoch + 1}, {trainer.position:,}/{n:,} samples" if trainer.position
                  else f"epoch {trainer.epoch + 1}")
            click.echo(f"resuming {resume} at {at}: {what} on {run_meta['dataset']}, {n:,} samples"
                       f"{val_text}, {epochs} epochs, {threads_text}")
        else:
            click.echo(f"training {what} on {run_meta['dataset']}: {n:,} samples{val_text}, "
                       f"{epochs} epochs, {threads_text}")

    progress = Progress(quiet)
    epochs_before = trainer.epoch
    saved_epoch = [None]  # the epoch of the last checkpoint written by this run

    def callback(info):
        if not info["end_of_epoch"]:
            progress.update(info)
            return
        row = info["row"]
        progress.epoch_end(row, info["epochs"])
        if metrics:
            record = {key: row[key] for key in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                                "seconds", "samples_per_second")}
            record.update(epochs=info["epochs"], dataset=run_meta["dataset"])
            _append_jsonl(metrics, record)
        if save:
            trainer.save_checkpoint(save, extra_meta=extra_meta)
            saved_epoch[0] = trainer.epoch

    from . import _mpi_cli
    _mpi_cli.attach(trainer)  # under MPI: train with the other ranks
    try:
        trainer.fit(X, y, epochs, validation=validation, verbose=False, callback=callback,
                    handle_interrupt=True)
    except TrainingInterrupted:
        progress.close()
        _interrupted(ctx, trainer, n, epochs, save, metrics, extra_meta, as_json, resume)
    except DivergenceError as e:
        progress.close()
        kept = ""
        if save and saved_epoch[0] is not None:
            kept = f"; {save} holds the checkpoint of epoch {saved_epoch[0]}"
        elif save and os.path.exists(save):
            kept = f"; {save} was left as it was"
        raise click.ClickException(one_line(e) + " (--lr)" + kept) from None
    finally:
        progress.close()

    # The test split.
    test_loss = test_accuracy = None
    n_test = 0
    if has_test_split(data):
        Xt, yt = datasets.load(data, "test", data_dir, progress=not quiet)
        yt = class_labels(yt, f"{data} (test split)")
        Xt = match_input(Xt, X.dtype.name)
        check_fits(net, Xt, yt, f"{data} (test split)", "the network")
        test_loss, test_accuracy = net.evaluate(Xt, yt, loss=trainer.loss, threads=trainer.threads)
        n_test = yt.shape[0]
    else:
        note(f"{data} has no test split: no test accuracy (a known data set, a .npz file with X_test and "
             f"y_test, or a directory with t10k-* files has one)")

    if save:
        trainer.save_checkpoint(save, extra_meta=extra_meta)

    h = trainer.history
    last = {key: (h[key][-1] if h[key] else None) for key in h}
    seconds = float(sum(h["seconds"]))
    trained = n * len(h["seconds"])
    result = {
        "dataset": run_meta["dataset"], "epochs": trainer.epoch,
        "train_loss": last["loss"], "train_accuracy": last["accuracy"],
        "val_loss": last["val_loss"], "val_accuracy": last["val_accuracy"],
        "test_loss": test_loss, "test_accuracy": test_accuracy,
        "seconds": seconds, "samples_per_second": trained / seconds if seconds > 0 else 0.0,
        # compiling (or loading from Numba's cache) the kernels, kept out of the epochs' seconds
        "compile_seconds": trainer.compile_seconds,
        "wall_seconds": time.perf_counter() - wall0,
        "n_train": n, "n_val": n_val, "n_test": n_test,
        "sizes": net.sizes, "activation": net.activation, "output": net.output, "dtype": net.dtype.name,
        "loss": trainer.loss, "optimizer": trainer.optimizer, "lr": trainer.lr,
        "momentum": trainer.momentum, "weight_decay": trainer.weight_decay,
        "batch_size": trainer.batch_size, "seed": trainer.seed, "threads": trainer.threads,
        "checkpoint": save, "resumed_from": resume, "metrics": metrics, "notes": notes,
    }
    if as_json:
        _print_json(result)
        return
    if resume and trainer.epoch == epochs_before:
        click.echo(f"the checkpoint has completed all {trainer.epoch} epochs: nothing to train (give a "
                   f"larger --epochs to continue)")
    if last["loss"] is not None:
        speed = f"{result['samples_per_second']:,.0f} samples/s"
        speed += f"; {trainer.compile_seconds:.2f} s compiling or loading the kernels before"
        click.echo(f"trained {trainer.epoch} epochs of {n:,} samples: {seconds:.2f} s of training ({speed})")
        text = f"train loss {last['loss']:.4f}  accuracy {_pct(last['accuracy'])}"
        if last["val_loss"] is not None:
            text += f"  |  validation loss {last['val_loss']:.4f}  accuracy {_pct(last['val_accuracy'])}"
        click.echo(text)
    if test_accuracy is not None:
        click.echo(f"test accuracy {_pct(test_accuracy)}  (loss {test_loss:.4f}, {n_test:,} samples)")
    if save:
        click.echo(f"checkpoint saved to {save}")


def _interrupted(ctx, trainer, n, epochs, save, metrics, extra_meta, as_json, resume):
    if trainer.position:
        where = f"epoch {trainer.epoch + 1}, {trainer.position:,}/{n:,} samples"
    else:
        where = f"the end of epoch {trainer.epoch}/{epochs}"
    if save:
        trainer.save_checkpoint(save, extra_meta=extra_meta)
        command = ["fastmlp", "train", "--resume", save, "--save", save]
        if metrics:
            command += ["--metrics", metrics]
        hint = " ".join(shlex.quote(part) for part in command)
        message = f"interrupted at {where}; checkpoint saved to {save}; resume with: {hint}"
    else:
        hint = None
        message = (f"interrupted at {where}; no checkpoint was saved (give --save PATH to be able to "
                   f"resume)")
    click.echo(message, err=True)
    if as_json:
        _print_json({"interrupted": True, "epoch": trainer.epoch + (1 if trainer.position else 0),
                     "position": trainer.position, "samples": n, "epochs": epochs, "checkpoint": save,
                     "resume_command": hint})
    ctx.exit(130)


# -- evaluate -------------------------------------------------------------------------------------

def _load_model(path):
    from .model import load_npz
    return load_npz(path)


def evaluate(model, data, data_dir, split, loss, threads, as_json):
    from . import datasets

    net, meta, _ = _load_model(model)
    run, training = _meta_dict(meta, "run"), _meta_dict(meta, "training")
    if data is None:
        data = run.get("dataset")
        if not data:
            raise click.UsageError(f"give --data: {model} does not record the data set it was trained on")
    if data_dir is None:
        data_dir = run.get("data_dir")
    if loss is None:
        loss = training.get("loss") if training.get("loss") in ("ce", "mse") else None
        loss = loss or ("ce" if net.output == "softmax" else "mse")
    if loss == "ce" and net.output != "softmax":
        raise click.UsageError(f"--loss ce needs a softmax output; {model} has a {net.output} output: use "
                               f"--loss mse")
    threads = resolve_threads(threads)
    X, y = datasets.load(data, split, data_dir)
    if not has_test_split(data) and split == "test":
        _note(f"{data} has no separate test split: evaluating on all of its samples")
    source = f"{data} ({split})" if _is_known(data) else data
    y = class_labels(y, source)
    X = match_input(X, run.get("input_dtype"))
    check_fits(net, X, y, source, model)
    outputs = net.forward(X, threads=threads)
    pred = np.argmax(outputs, axis=1)
    loss_value, accuracy = net.evaluate(X, y, loss=loss, threads=threads)
    K = net.sizes[-1]
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    counts = confusion.sum(axis=1)
    per_class = [float(confusion[k, k] / counts[k]) if counts[k] else None for k in range(K)]
    names = _class_names(data)
    if as_json:
        _print_json({"model": model, "dataset": data, "split": split, "n": int(y.shape[0]), "loss_function": loss,
                     "loss": loss_value, "accuracy": accuracy, "per_class_accuracy": per_class,
                     "class_counts": counts.tolist(), "class_names": names,
                     "confusion_matrix": confusion.tolist()})
        return
    click.echo(f"{model}: {_arch(net.sizes)} on {data}, {split} split, {y.shape[0]:,} samples")
    click.echo(f"loss {loss_value:.4f} ({loss})  accuracy {_pct(accuracy)}")
    click.echo("")
    click.echo("class  samples  accuracy" + ("  name" if names else ""))
    for k in range(K):
        line = f"{k:>5}  {counts[k]:>7,}  {_pct(per_class[k]):>8}"
        click.echo(line + (f"  {names[k]}" if names else ""))
    click.echo("")
    click.echo("confusion matrix (rows: true class, columns: predicted class)")
    width = max(len(str(int(confusion.max()))), len(str(K - 1))) + 1
    click.echo(" " * 6 + "".join(f"{k:>{width}}" for k in range(K)))
    for k in range(K):
        click.echo(f"{k:>5} " + "".join(f"{v:>{width}}" for v in confusion[k]))


# -- predict --------------------------------------------------------------------------------------

def read_input(path):
    """The rows of an .npy, .npz (X, or its only array) or .csv (header optional) file, as an array."""
    import zipfile
    p = os.fspath(path)
    ext = os.path.splitext(p)[1].lower()
    if not os.path.isfile(p):
        raise DataError(f"missing input file {p}: no such file; give an .npy, .npz or .csv file")
    if ext in (".npy", ".npz"):
        try:
            loaded = np.load(p, allow_pickle=False)
        except ValueError as e:
            if "pickle" in str(e).lower() or "object" in str(e).lower():
                raise DataError(f"{p} holds an object array, which fastmlp never loads (allow_pickle=False); "
                                f"save a plain numeric array") from None
            raise DataError(f"cannot read {p}: {one_line(e)}; expected a file written by numpy.save or "
                            f"numpy.savez") from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read {p}: {one_line(e)}; expected a file written by numpy.save or "
                            f"numpy.savez") from None
        if isinstance(loaded, np.ndarray):
            arr = loaded
        else:
            with loaded:
                files = list(loaded.files)
                if "X" in files:
                    key = "X"
                elif len(files) == 1:
                    key = files[0]
                else:
                    raise DataError(f"{p} holds arrays {', '.join(files) or '(none)'}: expected an array "
                                    f"named X, or a single array")
                try:
                    arr = loaded[key]
                except ValueError:
                    raise DataError(f"array {key!r} in {p} is an object array, which fastmlp never loads "
                                    f"(allow_pickle=False); save a plain numeric array") from None
                except (OSError, EOFError, zipfile.BadZipFile) as e:
                    raise DataError(f"cannot read array {key!r} in {p}: {one_line(e)}; the file is "
                                    f"damaged") from None
    elif ext == ".csv":
        arr = _read_csv_rows(p)
    else:
        raise DataError(f"unsupported input file type {ext or '(none)'!r} for {p}: expected .npy, .npz "
                        f"or .csv")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{p} holds an array of dtype {arr.dtype}, expected numbers")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float32)
    if arr.ndim == 0:
        raise DataError(f"{p} holds a single number, expected rows of features")
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.size == 0:
        raise DataError(f"{p} holds no samples (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise DataError(f"{p} holds NaN or infinite values, expected finite numbers")
    return arr


def _read_csv_rows(p):
    try:
        with open(p, "r", encoding="utf-8-sig", newline="") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {p} as CSV text: {one_line(e)}") from None
    rows = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if rows:
        try:
            [float(cell) for cell in rows[0][1].split(",")]
        except ValueError:
            rows = rows[1:]  # a header line
    if not rows:
        raise DataError(f"no data rows in CSV file {p}: expected one sample per line, numbers separated "
                        f"by commas")
    width = None
    values = []
    for lineno, line in rows:
        cells = line.split(",")
        if width is None:
            width = len(cells)
        elif len(cells) != width:
            raise DataError(f"ragged CSV file {p}: line {lineno} has {len(cells)} fields, expected {width} "
                            f"like the first row")
        try:
            values.append([float(cell) for cell in cells])
        except ValueError:
            bad = next(c for c in cells if not _is_number(c))
            raise DataError(f"non-numeric value {bad.strip()!r} in CSV file {p} at line {lineno}: expected "
                            f"numbers only (a header is allowed on the first line only)") from None
    return np.array(values, dtype=np.float32)


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def predict(model, input, threads, as_json):
    net, meta, _ = _load_model(model)
    run = _meta_dict(meta, "run")
    threads = resolve_threads(threads)
    X = read_input(input)
    width = net.sizes[0]
    if X.ndim == 1:
        X = X.reshape(-1, 1) if width == 1 else X.reshape(1, -1)
    X = match_input(X, run.get("input_dtype"))
    check_fits(net, X, None, input, model)
    outputs = net.forward(X, threads=threads)
    labels = np.argmax(outputs, axis=1)
    key = "probabilities" if net.output == "softmax" else "outputs"
    names = _class_names(run.get("dataset"))
    if as_json:
        result = {"model": model, "input": input, "n": int(X.shape[0]), "labels": labels.tolist(),
                  key: [[float(f"{v:.6g}") for v in row] for row in outputs.tolist()]}
        if names:
            result["class_names"] = [names[k] for k in labels]
        _print_json(result)
        return
    K = net.sizes[-1]
    head = "p" if key == "probabilities" else "out"
    click.echo("sample  label  " + f"{head}(label)  " + "  ".join(f"{head}({k})".rjust(7) for k in range(K))
               + ("  name" if names else ""))
    for i, (label, row) in enumerate(zip(labels.tolist(), outputs.tolist())):
        click.echo(f"{i:>6}  {label:>5}  {row[label]:>8.4f}  " + "  ".join(f"{v:>7.4f}" for v in row)
                   + (f"  {names[label]}" if names else ""))


# -- datasets -------------------------------------------------------------------------------------

def datasets_list(as_json):
    from . import datasets
    items = datasets.list_datasets()
    if as_json:
        _print_json(items)
        return
    click.echo(f"{'name':<17} {'features':>8} {'classes':>7} {'train':>7} {'test':>7}  description")
    for d in items:
        click.echo(f"{d['name']:<17} {d['n_features']:>8} {d['n_classes']:>7} {d['n_train']:>7,} "
                   f"{d['n_test']:>7,}  {d['description']}")
    click.echo(f"\ndefault: {datasets.DEFAULT}; files are kept in {datasets.cache_dir()} (or $FASTMLP_DATA, "
               f"--data-dir)")


def datasets_download(name, data_dir, quiet):
    from . import datasets
    name = _canonical(name)
    where = datasets.download(name, data_dir, progress=not quiet)
    if where is None:
        click.echo(f"{name} is built in: nothing to download")
    else:
        click.echo(f"{name}: files in {where}")


def datasets_verify(name, data_dir, as_json):
    from . import datasets
    name = _canonical(name)
    results = datasets.verify(name, data_dir)
    if as_json:
        _print_json({"dataset": name, "files": [{"file": f, "status": s} for f, s in results]})
        return
    for filename, status in results:
        click.echo(f"{filename}: {status}")


def datasets_path(name, data_dir):
    from . import datasets
    name = _canonical(name)
    where = datasets.path(name, data_dir)
    if where is None:
        click.echo(f"note: {name} is built in: it has no files", err=True)
    else:
        click.echo(str(where))


# -- plot -----------------------------------------------------------------------------------------

def read_metrics(path):
    """The rows of a --metrics file, split into runs (a new run starts when the epoch goes back)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"missing metrics file {path}: write one with `fastmlp train --metrics {path}`") \
            from None
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read {path} as text: {one_line(e)}") from None
    runs, previous = [], None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path} line {lineno} is not JSON ({one_line(e)}): expected one JSON object per "
                            f"line, as written by `fastmlp train --metrics`") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int) \
                or not isinstance(row.get("loss"), (int, float)):
            raise DataError(f"{path} line {lineno} has no epoch and loss: expected the objects written by "
                            f"`fastmlp train --metrics`")
        if previous is None or row["epoch"] <= previous:
            runs.append([])
        runs[-1].append(row)
        previous = row["epoch"]
    if not runs:
        raise DataError(f"{path} holds no epochs: expected one JSON object per line, as written by "
                        f"`fastmlp train --metrics`")
    return runs


def plot(metrics, out):
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise click.ClickException(MATPLOTLIB_MISSING) from None
    if out is None:
        out = os.path.splitext(metrics)[0] + ".png"
    fig = Figure(figsize=(10, 4), layout="constrained")
    fmt = os.path.splitext(out)[1].lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise click.BadParameter(f"{out}: unknown image type {fmt or '(none)'!r}, expected one of "
                                 f"{', '.join(sorted(supported))}", param_hint="'--out'")
    runs = read_metrics(metrics)
    rows = runs[-1]
    if len(runs) > 1:
        _note(f"{metrics} holds {len(runs)} runs; plotting the last one ({len(rows)} epochs)")
    full_out = check_writable(out, "--out")
    epochs = [r["epoch"] for r in rows]
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, title, scale in ((ax_loss, "loss", "loss", 1), (ax_acc, "accuracy", "accuracy (%)", 100)):
        train = [r.get(key) for r in rows]
        val = [r.get("val_" + key) for r in rows]
        if any(v is not None for v in train):
            ax.plot(epochs, [v * scale if v is not None else float("nan") for v in train], "o-", ms=3,
                    label="train")
        if any(v is not None for v in val):
            ax.plot(epochs, [v * scale if v is not None else float("nan") for v in val], "s-", ms=3,
                    label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    dataset = rows[-1].get("dataset")
    if dataset:
        fig.suptitle(os.path.basename(str(dataset)))
    atomic_write(full_out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=100))
    click.echo(f"wrote {out} ({len(rows)} epochs)")


# -- info -----------------------------------------------------------------------------------------

_PARALLEL_PROBE = None


def _threading_layer():
    """Run a trivial parallel kernel so that Numba starts its thread pool, then name the layer."""
    global _PARALLEL_PROBE
    import numba
    if _PARALLEL_PROBE is None:
        @numba.njit(parallel=True)
        def probe(a):
            total = 0.0
            for i in numba.prange(a.shape[0]):
                total += a[i]
            return total

        _PARALLEL_PROBE = probe
    _PARALLEL_PROBE(np.ones(64))
    return numba.threading_layer()


def _numba_cache_dir():
    """Where Numba caches fastmlp's compiled kernels, and why there."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    in_tree = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    try:
        from . import _kernels
        path = str(_kernels._train_steps._cache._cache_path)  # Numba's own choice (a private attribute)
    except Exception:
        path = env or in_tree
    if env:
        origin = "NUMBA_CACHE_DIR"
    elif os.path.abspath(path) == in_tree:
        origin = "next to the package"
    else:
        origin = "user-wide: the package directory is not writable"
    return path, origin


def info(as_json):
    import importlib.metadata
    import platform

    import llvmlite
    import llvmlite.binding as llvm
    import numba

    from . import datasets

    def version(dist, module=None):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return getattr(module, "__version__", None)

    warnings_list = []
    layer = _threading_layer()
    if layer == "workqueue":
        warnings_list.append(WORKQUEUE_WARNING)
    features = llvm.get_host_cpu_features()

    def has(flag):
        try:
            return bool(features[flag])
        except KeyError:
            return False

    avx512, avx2 = has("avx512f"), has("avx2")
    simd = "AVX-512" if avx512 else "AVX2" if avx2 else "below AVX2"
    cache, cache_origin = _numba_cache_dir()
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    result = {
        "fastmlp": __version__, "numpy": np.__version__, "numba": numba.__version__,
        "llvmlite": llvmlite.__version__, "click": version("click", click),
        "python": platform.python_version(), "python_executable": sys.executable,
        "platform": platform.platform(),
        "numba_num_threads": numba.config.NUMBA_NUM_THREADS, "threads": numba.get_num_threads(),
        "cpus": cpus, "threading_layer": layer,
        "cpu_name": llvm.get_host_cpu_name(), "avx512f": avx512, "avx2": avx2, "simd": simd,
        "numba_cache_dir": cache, "numba_cache_origin": cache_origin,
        "data_cache_dir": str(datasets.cache_dir()), "fastmlp_data": os.environ.get("FASTMLP_DATA"),
        "warnings": warnings_list,
    }
    if as_json:
        _print_json(result)
    else:
        rows = [
            ("fastmlp", result["fastmlp"]), ("python", f"{result['python']} ({sys.executable})"),
            ("numpy", result["numpy"]), ("numba", result["numba"]), ("llvmlite", result["llvmlite"]),
            ("click", result["click"]), ("platform", result["platform"]),
            ("threads", f"{result['threads']} (NUMBA_NUM_THREADS {result['numba_num_threads']}, "
                        f"{cpus} CPUs available)"),
            ("threading layer", layer),
            ("cpu", f"{result['cpu_name']}: SIMD {simd} (avx512f {'yes' if avx512 else 'no'}, "
                    f"avx2 {'yes' if avx2 else 'no'})"),
            ("numba cache", f"{cache} ({cache_origin})"),
            ("data cache", str(result["data_cache_dir"])
             + (f" (FASTMLP_DATA={result['fastmlp_data']} is searched first)" if result["fastmlp_data"]
                else "")),
        ]
        for key, value in rows:
            click.echo(f"{key + ':':<17}{value}")
    for w in warnings_list:
        click.echo(f"warning: {w}", err=True)
