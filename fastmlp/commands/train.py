"""`fastmlp train`: train a network on a data set, with progress, checkpoints and a test score."""
import os
import shlex
import time

import click

from .common import (DTYPES, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, OUTPUTS, Progress, append_jsonl,
                     arch, check_writable, data_dir_option, dataset_option, finite_option, handle_errors,
                     json_option, note, parse_hidden, pct, print_json, resolve_threads, threads_option)
from .. import __version__
from ..errors import one_line

HELP = """Train a network on a data set; report the test accuracy at the end.

\b
Examples:
  fastmlp train                                     # 784-100-10, synthetic-digits, 5 epochs
  fastmlp train --data mnist --hidden 256,128 --optimizer adam --lr 0.001 --epochs 10
  fastmlp train --data xor --hidden 8 --activation tanh --epochs 200 --lr 0.5 --batch-size 4
  fastmlp train --data points.npz --val-split 0.1 --save model.npz --metrics run.jsonl
  fastmlp train --resume model.npz --save model.npz   # continue a saved run

DATA is a known data set (`fastmlp datasets list`) or a file: .npz with arrays X and y (and
optionally X_test, y_test), .csv with the label in the first column (or the column named
`label`), or a directory of IDX files.

Progress: a bar on a terminal (stderr) and one line per epoch (stdout); --quiet shows neither
(only the results).
--save writes a checkpoint at the end of every epoch. Ctrl-C stops after the current chunk of
minibatches, saves the checkpoint (with --save) and exits with status 130.

--resume continues a checkpoint with its network and hyperparameters (and its data set, thread
count, validation split and number of epochs, unless given): a run stopped and resumed ends with
exactly the parameters of an uninterrupted run. Options that define the network or the training
(--hidden, --activation, --output, --dtype, --loss, --optimizer, --lr, --momentum, --weight-decay,
--batch-size, --seed, --val-split) must then be left out or agree with the checkpoint; anything
else is a usage error. --epochs is the total number of epochs, counting those already done.
"""

# Options of `train` that define the network or the run; --resume keeps the checkpoint's.
RESUME_FIXED = ("hidden", "activation", "output", "dtype", "loss", "optimizer", "lr", "momentum",
                "weight_decay", "batch_size", "seed", "val_split")


@click.command(name="train", help=HELP)
@click.option("--data", default=None, metavar="NAME|PATH", callback=dataset_option,
              help="Data set name or file  [default: synthetic-digits]")
@data_dir_option()
@click.option("--hidden", default="100", show_default=True, callback=parse_hidden, metavar="N[,N...]",
              help="Hidden layer sizes, comma-separated ('none': no hidden layer).")
@click.option("--activation", type=click.Choice(HIDDEN_ACTIVATIONS), default="relu", show_default=True,
              help="Activation of the hidden layers.")
@click.option("--output", type=click.Choice(OUTPUTS), default="softmax", show_default=True,
              help="Activation of the output layer.")
@click.option("--loss", type=click.Choice(LOSSES), default="ce", show_default=True,
              help="Cross-entropy (needs --output softmax) or mean squared error.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Floating-point type of the parameters.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True,
              help="Total number of epochs (with --resume: counting those done).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              callback=finite_option, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True)
@click.option("--momentum", type=click.FloatRange(min=0, max=1, max_open=True), default=0.9,
              show_default=True, help="Momentum (with --optimizer momentum).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              callback=finite_option, help="L2 penalty coefficient.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the initial weights, the shuffles and the validation split.")
@threads_option()
@click.option("--val-split", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, help="Fraction held out for validation (the last part after a "
                                      "seeded shuffle).")
@click.option("--save", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Checkpoint file (.npz) written after every epoch and at the end.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Continue the run saved in this checkpoint.")
@click.option("--metrics", type=click.Path(dir_okay=False), default=None, metavar="PATH.jsonl",
              help="Append one JSON object per epoch to this file (see `fastmlp plot`).")
@json_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.pass_context
@handle_errors
def command(ctx, **options):
    train(ctx, **options)


def _explicit_options(ctx):
    """The names of the options given on the command line (or in the environment)."""
    source = click.core.ParameterSource
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) in (source.COMMANDLINE, source.ENVIRONMENT)}


def _option_name(name):
    return "--" + name.replace("_", "-")


def _fmt_option_value(name, value):
    if name == "hidden":
        return ",".join(map(str, value)) if value else "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def train(ctx, data, data_dir, hidden, activation, output, loss, dtype, epochs, batch_size, lr, optimizer,
          momentum, weight_decay, seed, threads, val_split, save, resume, metrics, as_json, quiet):
    from .. import datasets, run as policy
    from ..model import MLP
    from ..training import Trainer

    wall0 = time.perf_counter()
    options = dict(hidden=hidden, activation=activation, output=output, dtype=dtype, loss=loss,
                   optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                   batch_size=batch_size, seed=seed, val_split=val_split)
    notes = []

    def say(message):
        notes.append(one_line(message))
        note(message, quiet)

    _check_outputs(save, metrics)
    if not resume and loss == "ce" and output != "softmax":
        raise click.UsageError(f"--loss ce needs --output softmax (got --output {output}); use --loss mse "
                               f"with --output {output}")
    run = {}
    if resume:
        trainer, run = _resume(resume, options, _explicit_options(ctx))
        net = trainer.net
        seed, val_split = trainer.seed, float(run.get("val_split", 0.0))
        data, data_dir, threads = _resumed_data(run, data, data_dir, threads, say)
        trainer.threads = resolve_threads(threads)
        epochs = _resumed_epochs(trainer, run, epochs, "epochs" in _explicit_options(ctx), resume)
    else:
        data = datasets.DEFAULT if data is None else data
        threads = resolve_threads(threads)

    X, y = datasets.load(data, "train", data_dir, progress=not quiet)
    y = policy.class_labels(y, data)
    if resume:
        X = policy.match_input(X, run.get("input_dtype"))
        policy.check_fits(net, X, y, data, f"the checkpoint's network ({resume})")
    X, y, validation = _split(X, y, val_split, seed)
    n, n_val = y.shape[0], (0 if validation is None else validation[1].shape[0])

    if not resume:
        n_classes = _n_classes(data, y)
        net = MLP([X.shape[1]] + hidden + [n_classes], activation=activation, output=output, dtype=dtype,
                  seed=seed)
        trainer = Trainer(net, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          loss=loss, batch_size=batch_size, seed=seed, threads=threads)

    run_meta = {"dataset": policy.dataset_label(data),
                "data_dir": os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None,
                "val_split": val_split, "epochs": epochs, "threads": trainer.threads,
                "input_dtype": X.dtype.name, "fastmlp_version": __version__}
    extra_meta = {"run": run_meta}
    if not quiet:
        _announce(trainer, resume, run_meta["dataset"], n, n_val, epochs)

    epochs_before = trainer.epoch
    _fit(ctx, trainer, X, y, validation, epochs, save, metrics, extra_meta, as_json, resume, quiet)
    test_loss, test_accuracy, n_test = _test_score(trainer, data, data_dir, X.dtype.name, quiet, say)
    if save:
        trainer.save_checkpoint(save, extra_meta=extra_meta)
    result = _result(trainer, run_meta["dataset"], n, n_val, n_test, test_loss, test_accuracy, wall0)
    result.update(checkpoint=save, resumed_from=resume, metrics=metrics, notes=notes)
    if as_json:
        print_json(result)
    else:
        _report(trainer, result, resume and trainer.epoch == epochs_before, save)


def _check_outputs(save, metrics):
    """Output files first: fail before loading anything or training."""
    if save and metrics and os.path.abspath(save) == os.path.abspath(metrics):
        raise click.UsageError("--save and --metrics name the same file; give two different paths")
    if save:
        check_writable(save, "--save")
    if metrics:
        check_writable(metrics, "--metrics", append=True)


def _resume(resume, options, explicit):
    """The checkpoint's trainer and run record; options given that disagree with it are an error."""
    from ..run import meta_section
    from ..training import Trainer
    trainer, meta = Trainer.from_checkpoint(resume)
    net = trainer.net
    run = meta_section(meta, "run")
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
    return trainer, run


def _resumed_data(run, data, data_dir, threads, say):
    """The data set, data directory and thread count of a resumed run: the checkpoint's unless given."""
    from .. import datasets
    from ..run import dataset_label
    if data is None:
        data = run.get("dataset") or datasets.DEFAULT
    elif run.get("dataset") and dataset_label(data) != dataset_label(str(run["dataset"])):
        say(f"the checkpoint was trained on {run['dataset']}; continuing on {data}")
    if data_dir is None:
        data_dir = run.get("data_dir")
    saved_threads = run.get("threads")
    if threads is None and isinstance(saved_threads, int):
        import numba
        if saved_threads <= numba.config.NUMBA_NUM_THREADS:
            threads = saved_threads
        else:
            say(f"the checkpoint ran on {saved_threads} threads but at most "
                f"{numba.config.NUMBA_NUM_THREADS} are available here: the result will not be "
                f"bit-identical to an uninterrupted run")
    elif threads is not None and isinstance(saved_threads, int) and threads != saved_threads:
        say(f"--threads {threads} differs from the checkpoint's {saved_threads}: the result will not "
            f"be bit-identical to an uninterrupted run")
    return data, data_dir, threads


def _resumed_epochs(trainer, run, epochs, explicit, resume):
    needed = trainer.epoch + (1 if trainer.position else 0)
    if not explicit:
        return max(int(run.get("epochs", epochs)), needed)
    if epochs < needed:
        raise click.UsageError(f"--epochs {epochs}: the checkpoint {resume} has reached epoch {needed} "
                               f"already; --epochs is the total number of epochs, give at least {needed}")
    return epochs


def _split(X, y, val_split, seed):
    """(X, y) without the validation part, and the validation pair (or None)."""
    import numpy as np
    if val_split <= 0:
        return X, y, None
    n_all = y.shape[0]
    n_val = int(round(n_all * val_split))
    if n_val < 1 or n_val > n_all - 1:
        raise click.UsageError(f"--val-split {val_split:g} holds out {n_val} of {n_all} samples; expected "
                               f"at least 1 for validation and 1 for training")
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n_all)
    keep, held = perm[:n_all - n_val], perm[n_all - n_val:]
    return X[keep], y[keep], (X[held], y[held])


def _n_classes(data, y):
    """The labels' class count, at least the data set's own (a split may miss a class)."""
    from .. import datasets
    from ..errors import DataError
    n_classes = int(y.max()) + 1 if y.size else 0
    name = datasets.canonical_name(data)
    if name:
        n_classes = max(n_classes, datasets.n_classes(name))
    if n_classes < 2:
        raise DataError(f"{data} has labels of {n_classes} class(es); expected at least 2 classes")
    return n_classes


def _announce(trainer, resume, dataset, n, n_val, epochs):
    net = trainer.net
    what = (f"{arch(net.sizes)} ({net.activation}, {net.output} output, {trainer.loss} loss, "
            f"{trainer.optimizer} lr {trainer.lr:g}, batch {trainer.batch_size})")
    val_text = f" + {n_val:,} for validation" if n_val else ""
    threads_text = f"{trainer.threads} thread{'s' if trainer.threads != 1 else ''}"
    if resume:
        at = (f"epoch {trainer.epoch + 1}, {trainer.position:,}/{n:,} samples" if trainer.position
              else f"epoch {trainer.epoch + 1}")
        click.echo(f"resuming {resume} at {at}: {what} on {dataset}, {n:,} samples"
                   f"{val_text}, {epochs} epochs, {threads_text}")
    else:
        click.echo(f"training {what} on {dataset}: {n:,} samples{val_text}, {epochs} epochs, {threads_text}")


def _fit(ctx, trainer, X, y, validation, epochs, save, metrics, extra_meta, as_json, resume, quiet):
    """Trainer.fit with the progress bar, the --metrics lines and the checkpoint of every epoch."""
    from ..errors import DivergenceError
    from ..training import TrainingInterrupted
    progress = Progress(quiet)
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
            record.update(epochs=info["epochs"], dataset=extra_meta["run"]["dataset"])
            append_jsonl(metrics, record)
        if save:
            trainer.save_checkpoint(save, extra_meta=extra_meta)
            saved_epoch[0] = trainer.epoch

    try:
        trainer.fit(X, y, epochs, validation=validation, verbose=False, callback=callback,
                    handle_interrupt=True)
    except TrainingInterrupted:
        progress.close()
        _interrupted(ctx, trainer, y.shape[0], epochs, save, metrics, extra_meta, as_json)
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


def _interrupted(ctx, trainer, n, epochs, save, metrics, extra_meta, as_json):
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
        print_json({"interrupted": True, "epoch": trainer.epoch + (1 if trainer.position else 0),
                    "position": trainer.position, "samples": n, "epochs": epochs, "checkpoint": save,
                    "resume_command": hint})
    ctx.exit(130)


def _test_score(trainer, data, data_dir, input_dtype, quiet, say):
    """(loss, accuracy, n) on the data set's test split, or (None, None, 0) if it has none."""
    from .. import datasets, run as policy
    if not policy.has_test_split(data):
        say(f"{data} has no test split: no test accuracy (a known data set, a .npz file with X_test and "
            f"y_test, or a directory with t10k-* files has one)")
        return None, None, 0
    net = trainer.net
    Xt, yt = datasets.load(data, "test", data_dir, progress=not quiet)
    yt = policy.class_labels(yt, f"{data} (test split)")
    Xt = policy.match_input(Xt, input_dtype)
    policy.check_fits(net, Xt, yt, f"{data} (test split)", "the network")
    test_loss, test_accuracy = net.evaluate(Xt, yt, loss=trainer.loss, threads=trainer.threads)
    return test_loss, test_accuracy, yt.shape[0]


def _result(trainer, dataset, n, n_val, n_test, test_loss, test_accuracy, wall0):
    net = trainer.net
    h = trainer.history
    last = {key: (h[key][-1] if h[key] else None) for key in h}
    seconds = float(sum(h["seconds"]))
    trained = n * len(h["seconds"])
    return {
        "dataset": dataset, "epochs": trainer.epoch,
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
    }


def _report(trainer, r, nothing_trained, save):
    if nothing_trained:
        click.echo(f"the checkpoint has completed all {trainer.epoch} epochs: nothing to train (give a "
                   f"larger --epochs to continue)")
    if r["train_loss"] is not None:
        speed = f"{r['samples_per_second']:,.0f} samples/s"
        speed += f"; {trainer.compile_seconds:.2f} s compiling or loading the kernels before"
        click.echo(f"trained {trainer.epoch} epochs of {r['n_train']:,} samples: {r['seconds']:.2f} s of "
                   f"training ({speed})")
        text = f"train loss {r['train_loss']:.4f}  accuracy {pct(r['train_accuracy'])}"
        if r["val_loss"] is not None:
            text += f"  |  validation loss {r['val_loss']:.4f}  accuracy {pct(r['val_accuracy'])}"
        click.echo(text)
    if r["test_accuracy"] is not None:
        click.echo(f"test accuracy {pct(r['test_accuracy'])}  (loss {r['test_loss']:.4f}, {r['n_test']:,} samples)")
    if save:
        click.echo(f"checkpoint saved to {save}")
