"""`fastmlp train`: train a network on a data set, with progress, checkpoints and a test score."""
import os
import shlex
import time

import click

from .common import (DTYPES, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, OUTPUTS, Progress, append_jsonl,
                     arch, check_writable, data_dir_option, dataset_option, finite_option, handle_errors,
                     json_option, note, parse_hidden, pct, print_json, resolve_threads, threads_option)
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

Under an MPI launcher (`mpiexec -n N fastmlp train ...`, `srun --mpi=pmix fastmlp train ...`) the
ranks train together on each minibatch, equal to one process; rank 0 prints and saves (README:
Several machines). SIGTERM and SIGUSR1 then stop like Ctrl-C.

--resume continues a checkpoint with its network and hyperparameters (and its data set, thread
count, validation split and number of epochs, unless given): a run stopped and resumed ends with
exactly the parameters of an uninterrupted run. Options that define the network or the training
(--hidden, --activation, --output, --dtype, --loss, --optimizer, --lr, --momentum, --weight-decay,
--batch-size, --seed, --val-split) must then be left out or agree with the checkpoint; anything
else is a usage error. --epochs is the total number of epochs, counting those already done.
"""

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
@click.option("--distributed", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: under an MPI launcher (mpiexec, srun) train on all its ranks together; "
                   "off: every process trains alone.")
@click.pass_context
@handle_errors
def command(ctx, distributed, **options):
    from . import mpi
    session = mpi.start(distributed)
    if session is None:
        return train(ctx, **options)
    with mpi.running(session):
        return train(ctx, **mpi.rank_options(session, options))


def _explicit_options(ctx):
    """The names of the options given on the command line (or in the environment)."""
    source = click.core.ParameterSource
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) in (source.COMMANDLINE, source.ENVIRONMENT)}


def option_name(name):
    """How a setting of fastmlp.run is spelled on the command line: val_split -> --val-split."""
    return "--" + name.replace("_", "-")


def train(ctx, data, data_dir, epochs, threads, save, resume, metrics, as_json, quiet, **settings):
    from .. import run as policy

    wall0 = time.perf_counter()
    _check_outputs(save, metrics)
    if threads is not None:
        resolve_threads(threads)
    plan = policy.prepare(data, resume=resume, epochs=epochs, threads=threads, data_dir=data_dir,
                          given=_explicit_options(ctx), progress=not quiet, spell=option_name, **settings)
    for message in plan.notes:
        note(message, quiet)
    trainer, epochs, record = plan.trainer, plan.epochs, plan.record
    n, n_val = plan.y.shape[0], (0 if plan.validation is None else plan.validation[1].shape[0])
    if not quiet:
        _announce(trainer, resume, record["dataset"], n, n_val, epochs)

    epochs_before = trainer.epoch
    extra_meta = {"run": record}
    from . import mpi
    mpi.attach(trainer)  # under MPI: train together with the other ranks
    _fit(ctx, trainer, plan.X, plan.y, plan.validation, epochs, save, metrics, extra_meta, as_json, quiet)
    score = policy.score_test_split(trainer.net, plan.data, plan.data_dir, trainer.loss, trainer.threads,
                                    record["input_dtype"], progress=not quiet)
    if score is None:
        plan.notes.append(f"{plan.data} has no test split: no test accuracy (a known data set, a .npz file "
                          f"with X_test and y_test, or a directory with t10k-* files has one)")
        note(plan.notes[-1], quiet)
        score = (None, None, 0)
    if save:
        trainer.save_checkpoint(save, extra_meta=extra_meta)
    result = _result(trainer, record["dataset"], n, n_val, *score, wall0)
    result.update(checkpoint=save, resumed_from=resume, metrics=metrics, notes=[one_line(m) for m in plan.notes])
    if trainer._dist is not None:
        # the parameters' hash, checked equal on every rank at the end of training
        result.update(ranks=trainer._dist.size, parameter_hash=trainer._dist.parameter_hash(trainer))
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


def _announce(trainer, resume, dataset, n, n_val, epochs):
    net = trainer.net
    what = (f"{arch(net.sizes)} ({net.activation}, {net.output} output, {trainer.loss} loss, "
            f"{trainer.optimizer} lr {trainer.lr:g}, batch {trainer.batch_size})")
    val_text = f" + {n_val:,} for validation" if n_val else ""
    threads_text = f"{trainer.threads} thread{'s' if trainer.threads != 1 else ''}"
    from . import mpi
    if mpi.Session.current is not None:
        threads_text = f"{mpi.Session.current.size} MPI ranks x {threads_text}"
    if resume:
        at = (f"epoch {trainer.epoch + 1}, {trainer.position:,}/{n:,} samples" if trainer.position
              else f"epoch {trainer.epoch + 1}")
        click.echo(f"resuming {resume} at {at}: {what} on {dataset}, {n:,} samples"
                   f"{val_text}, {epochs} epochs, {threads_text}")
    else:
        click.echo(f"training {what} on {dataset}: {n:,} samples{val_text}, {epochs} epochs, {threads_text}")


def _fit(ctx, trainer, X, y, validation, epochs, save, metrics, extra_meta, as_json, quiet):
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


def _result(trainer, dataset, n, n_val, test_loss, test_accuracy, n_test, wall0):
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
