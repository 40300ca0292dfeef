"""`fastmlp train`: train a network on a data set, with progress, checkpoints and a test score."""
import os
import shlex
import time

import click

from .common import (DTYPES, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, OUTPUTS, Progress, append_jsonl,
                     arch, bounded_int, check_outputs, check_writable, data_dir_option, dataset_option,
                     finite_option, handle_errors,
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
  fastmlp train --data fashion-mnist --epochs 50 --early-stopping 3 --lr-schedule plateau --csv log.csv
  fastmlp train --data houses.csv --task regression --hidden 32 --lr 0.01

DATA is a known data set (`fastmlp datasets list`) or a file: .npz with arrays X and y (and
optionally X_test, y_test), .csv with the label in the first column (or the column named
`label`), or a directory of IDX files. The labels of your own files can be anything (integers with
gaps, negative numbers, strings in a CSV): they become classes in sorted order, kept in the model,
and `evaluate`/`predict` print them back. Their float features are standardised (the mean and
standard deviation of the training split, kept in the model) unless --no-standardize; uint8 pixels
are divided by 255.

--task regression trains one identity output with mse loss on a numeric target and reports RMSE
and R^2. --output sigmoid --loss bce on two classes trains one sigmoid unit (binary).

--early-stopping PATIENCE stops when the validation loss has not improved for PATIENCE epochs and
keeps the best epoch's parameters (a 10% validation split unless --val-split is given).
--lr-schedule plateau divides the learning rate by 10 after 2 epochs without improvement of the
validation loss (the training loss without validation); cosine anneals it to 0 over --epochs.
--csv writes the history, one row per epoch.

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
              help="Cross-entropy (needs --output softmax), mean squared error, or binary cross-entropy "
                   "(needs --output sigmoid).")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Floating-point type of the parameters.")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True, callback=bounded_int,
              help="Total number of epochs (with --resume: counting those done).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, callback=bounded_int)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              callback=finite_option, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True)
@click.option("--momentum", type=click.FloatRange(min=0, max=1, max_open=True), default=0.9,
              show_default=True, callback=finite_option, help="Momentum (with --optimizer momentum).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              callback=finite_option, help="L2 penalty coefficient.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, callback=bounded_int,
              help="Seed of the initial weights, the shuffles and the validation split.")
@threads_option()
@click.option("--val-split", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, callback=finite_option, help="Fraction held out for validation (the last part after a "
                                      "seeded shuffle).")
@click.option("--save", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Checkpoint file (.npz) written after every epoch and at the end.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Continue the run saved in this checkpoint.")
@click.option("--metrics", type=click.Path(dir_okay=False), default=None, metavar="PATH.jsonl",
              help="Append one JSON object per epoch to this file (see `fastmlp plot`).")
@click.option("--task", type=click.Choice(("classification", "regression")), default="classification",
              show_default=True, help="regression: one identity output, mse, a numeric target.")
@click.option("--no-standardize", "no_standardize", is_flag=True,
              help="Keep your own float features as they are (no standardisation).")
@click.option("--early-stopping", "early_stopping", type=click.IntRange(min=1), default=None, metavar="PATIENCE",
              help="Stop after PATIENCE epochs without a lower validation loss; keep the best epoch.")
@click.option("--lr-schedule", "lr_schedule", type=click.Choice(("plateau", "cosine")), default=None,
              help="Reduce the learning rate on a plateau (/10), or anneal it (cosine).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, metavar="PATH.csv",
              help="Write the history (one row per epoch) to this CSV file.")
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


def train(ctx, data, data_dir, epochs, threads, save, resume, metrics, as_json, quiet, task, no_standardize,
          early_stopping, lr_schedule, csv_path, **settings):
    from .. import run as policy

    wall0 = time.perf_counter()
    _check_outputs(save, metrics, data, resume, csv_path)
    if csv_path:
        check_writable(csv_path, "--csv")
    if threads is not None:
        resolve_threads(threads)
    given = _explicit_options(ctx)
    if early_stopping and "val_split" not in given and not resume:
        settings["val_split"] = 0.1
    _prefetch_kernels(ctx, settings["dtype"], settings["hidden"], resume)
    plan = policy.prepare(data, resume=resume, epochs=epochs, threads=threads, data_dir=data_dir,
                          given=given, progress=not quiet, spell=option_name, task=task,
                          standardize=not no_standardize, **settings)
    if data is None and resume:  # the checkpoint's data set: it must not be an output either
        _check_outputs(save, metrics, plan.data, resume, csv_path)
    for message in plan.notes:
        note(message, quiet)
    trainer, epochs, record = plan.trainer, plan.epochs, plan.record
    n, n_val = plan.y.shape[0], (0 if plan.validation is None else plan.validation[1].shape[0])
    if not quiet:
        _announce(trainer, resume, record["dataset"], n, n_val, epochs)

    epochs_before = trainer.epoch
    extra_meta = {"run": record}
    callbacks = _callbacks(trainer, record, resume, given, early_stopping, lr_schedule, csv_path, epochs,
                           plan.validation is not None)
    # Every input is checked before the first epoch, the test split too.
    test = (None if trainer.net.is_regression else
            policy.test_split(trainer.net, plan.data, plan.data_dir, record["input_dtype"], progress=not quiet,
                              classes=record.get("classes")))
    from . import mpi
    precompile = _compile_kernels(trainer, plan, test, quiet) if mpi.Session.current is None else 0.0
    mpi.attach(trainer)  # under MPI: train together with the other ranks (which compile one at a time)
    _fit(ctx, trainer, plan.X, plan.y, plan.validation, epochs, save, metrics, extra_meta, as_json, quiet,
         callbacks)
    score = policy.score_test_split(trainer.net, plan.data, plan.data_dir, trainer.loss, trainer.threads,
                                    record["input_dtype"], progress=not quiet, classes=record.get("classes"),
                                    test=test)
    if score is None:
        plan.notes.append(f"{plan.data} has no test split: no test accuracy (a known data set, a .npz file "
                          f"with X_test and y_test, or a directory with t10k-* files has one)")
        note(plan.notes[-1], quiet)
        score = (None, None, 0)
    if save:
        trainer.save_checkpoint(save, extra_meta=extra_meta)
    trainer.compile_seconds += precompile
    result = _result(trainer, record["dataset"], n, n_val, *score, wall0)
    result.update(checkpoint=save, resumed_from=resume, metrics=metrics, notes=[one_line(m) for m in plan.notes],
                  csv=csv_path, stopped_epoch=trainer.history["stopped_epoch"],
                  best_epoch=trainer.history["best_epoch"], classes=record.get("classes"))
    if trainer.net.is_regression:
        result.update(_regression_result(trainer, plan, record))
    if trainer._dist is not None:
        # the parameters' hash, checked equal on every rank at the end of training
        result.update(ranks=trainer._dist.size, parameter_hash=trainer._dist.parameter_hash(trainer))
    if as_json:
        print_json(result)
    else:
        _report(trainer, result, resume and trainer.epoch == epochs_before, save)


def _prefetch_kernels(ctx, dtype, hidden, resume):
    """On a cold Numba cache, compile the kernels in a second process while this one loads (or
    generates) the data and compiles the driver (fastmlp._compile.prefetch), for the hidden layers
    given (the data's input and output sizes are not known yet); stopped if this command ends
    first (an error). Not with --resume (the checkpoint names the dtype) nor under MPI
    (whose ranks compile one at a time)."""
    from . import mpi
    if resume or mpi.Session.current is not None:
        return
    from .._compile import prefetch
    proc = prefetch(dtype, (0, *hidden, 0))
    if proc is not None:
        def stop():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        ctx.call_on_close(stop)


def _compile_kernels(trainer, plan, test, quiet):
    """Compile (or load from Numba's cache) every kernel of the run before the first epoch: the
    training step and the evaluation of the validation and test splits. On a cold cache it says so
    on stderr (unless quiet): "compiling the kernels (once; cached for later runs) ..." and then
    "compiled in N s". Returns the seconds it took."""
    import sys

    from .._compile import compile_notice, printer
    with compile_notice(None if quiet else printer(sys.stderr)) as notice:
        trainer.compile(plan.X, plan.y, plan.validation)
        if test is not None:
            trainer.net.evaluate(test[0][:1], test[1][:1], loss=trainer.loss, threads=trainer.threads)
    return notice.seconds


def _callbacks(trainer, record, resume, given, early_stopping, lr_schedule, csv_path, epochs, has_validation):
    """The callbacks of --early-stopping, --lr-schedule and --csv, recorded in the run record so
    that --resume continues with the same ones (in the same order, with their saved state)."""
    from ..callbacks import CSVLogger, EarlyStopping, LearningRateScheduler, ReduceLROnPlateau, cosine_schedule
    if resume:
        for name, value in (("early_stopping", early_stopping), ("lr_schedule", lr_schedule)):
            if name in given and value != record.get(name):
                raise click.UsageError(f"{option_name(name)} {value} conflicts with the checkpoint {resume} "
                                       f"({record.get(name) or 'none'}): leave it out to continue the run")
        early_stopping, lr_schedule = record.get("early_stopping"), record.get("lr_schedule")
        lr0 = record.get("lr0", trainer.lr)
    else:
        lr0 = trainer.lr
    record.update(early_stopping=early_stopping, lr_schedule=lr_schedule, lr0=lr0)
    monitor = "val_loss" if has_validation else "loss"
    callbacks = []
    if early_stopping:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=early_stopping))
    if lr_schedule == "plateau":
        callbacks.append(ReduceLROnPlateau(monitor=monitor, factor=0.1, patience=2))
    elif lr_schedule == "cosine":
        callbacks.append(LearningRateScheduler(cosine_schedule(record["epochs"], lr0)))
    if csv_path:
        callbacks.append(CSVLogger(csv_path))
    return callbacks


def _regression_result(trainer, plan, record):
    """RMSE and R^2 on the training split, the validation split and the test split (if any)."""
    from .. import run as policy
    net = trainer.net
    out = {}
    parts = [("train", plan.X, plan.y)]
    if plan.validation is not None:
        parts.append(("val", *plan.validation))
    if policy.has_test_split(plan.data):
        Xt, yt = policy.load_labelled(plan.data, "test", plan.data_dir, input_dtype=record["input_dtype"],
                                      progress=False, task="regression")
        parts.append(("test", Xt, yt))
    for name, X, y in parts:
        out[f"{name}_rmse"], out[f"{name}_r2"] = policy.regression_scores(net, X, y, threads=trainer.threads)
    return out


def _check_outputs(save, metrics, data, resume, csv_path=None):
    """Output files first: fail before loading anything or training. An output that is an input
    (--data, a file of a --data directory, --resume) or another output is a usage error; resuming
    from and saving to one checkpoint is allowed."""
    from .. import run as policy
    inputs = [("--resume", resume)] + [("--data", f) for f in policy.data_files(data)]
    check_outputs([("--save", save), ("--metrics", metrics), ("--csv", csv_path)], inputs,
                  allowed={("--save", "--resume")})
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


def _fit(ctx, trainer, X, y, validation, epochs, save, metrics, extra_meta, as_json, quiet, callbacks=()):
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
                                                "lr", "seconds", "samples_per_second")}
            record.update(epochs=info["epochs"], dataset=extra_meta["run"]["dataset"])
            append_jsonl(metrics, record)
        if save:
            trainer.save_checkpoint(save, extra_meta=extra_meta)
            saved_epoch[0] = trainer.epoch

    try:
        trainer.fit(X, y, epochs, validation=validation, verbose=False, callback=callback,
                    handle_interrupt=True, callbacks=list(callbacks))
        if trainer.stop_requested:  # Ctrl-C after the last chunk (e.g. during the last save)
            raise TrainingInterrupted(trainer)
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
        text = one_line(e)
        option = (" (--lr)" if "learning rate" in text else " (--weight-decay)" if "weight decay" in text
                  else "")
        raise click.ClickException(text + option + kept) from None
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
    from ..training import HISTORY_KEYS
    # the epoch whose parameters the network has: the best one when EarlyStopping restored it
    at = h["best_epoch"] - 1 if h.get("best_epoch") and trainer.net is not None else -1
    last = {key: (h[key][at] if h[key] else None) for key in HISTORY_KEYS}
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
        if r.get("stopped_epoch"):
            best = r.get("best_epoch")
            click.echo(f"early stopping after epoch {r['stopped_epoch']}" +
                       (f"; the parameters of epoch {best} (the lowest validation loss) were kept" if best else ""))
        if "train_rmse" in r:
            text = f"train RMSE {r['train_rmse']:.4g}  R^2 {r['train_r2']:.4f}"
            if "val_rmse" in r:
                text += f"  |  validation RMSE {r['val_rmse']:.4g}  R^2 {r['val_r2']:.4f}"
        else:
            text = f"train loss {r['train_loss']:.4f}  accuracy {pct(r['train_accuracy'])}"
            if r["val_loss"] is not None:
                text += f"  |  validation loss {r['val_loss']:.4f}  accuracy {pct(r['val_accuracy'])}"
        click.echo(text)
    if "test_rmse" in r:
        click.echo(f"test RMSE {r['test_rmse']:.4g}  R^2 {r['test_r2']:.4f}  ({r['n_test']:,} samples)")
    elif r["test_accuracy"] is not None:
        click.echo(f"test accuracy {pct(r['test_accuracy'])}  (loss {r['test_loss']:.4f}, {r['n_test']:,} samples)")
    if save:
        click.echo(f"checkpoint saved to {save}")
