"""`fastmlp evaluate`: loss, accuracy, per-class accuracy and confusion matrix of a saved model."""
import click

from .common import (LOSSES, arch, data_dir_option, dataset_option, handle_errors, json_option, note, pct,
                     print_json, resolve_threads, threads_option)

HELP = """Evaluate a saved model: loss, accuracy, per-class accuracy, confusion matrix.

\b
Examples:
  fastmlp evaluate model.npz                       # on the test split of its data set
  fastmlp evaluate model.npz --data mnist --split train
  fastmlp evaluate model.npz --data points.npz --json

MODEL is a model or checkpoint written by `fastmlp train --save` or MLP.save. Without --data the
data set recorded in the checkpoint is used.
"""


@click.command(name="evaluate", help=HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", default=None, metavar="NAME|PATH", callback=dataset_option,
              help="Data set name or file  [default: the model's data set]")
@data_dir_option()
@click.option("--split", type=click.Choice(("train", "test")), default="test", show_default=True)
@click.option("--loss", type=click.Choice(LOSSES), default=None,
              help="Loss to report  [default: the training loss]")
@threads_option()
@json_option()
@handle_errors
def command(**options):
    evaluate(**options)


def evaluate(model, data, data_dir, split, loss, threads, as_json):
    import numpy as np

    from .. import datasets, run as policy
    from ..model import load_npz

    net, meta, _ = load_npz(model)
    run, training = policy.meta_section(meta, "run"), policy.meta_section(meta, "training")
    if data is None:
        data = run.get("dataset")
        if not data:
            raise click.UsageError(f"give --data: {model} does not record the data set it was trained on")
    if data_dir is None:
        data_dir = run.get("data_dir")
    if loss is None:
        loss = training.get("loss") if training.get("loss") in LOSSES else None
        loss = loss or ("ce" if net.output == "softmax" else "mse")
    if loss == "ce" and net.output != "softmax":
        raise click.UsageError(f"--loss ce needs a softmax output; {model} has a {net.output} output: use "
                               f"--loss mse")
    threads = resolve_threads(threads)
    X, y = datasets.load(data, split, data_dir)
    if not policy.has_test_split(data) and split == "test":
        note(f"{data} has no separate test split: evaluating on all of its samples")
    source = f"{data} ({split})" if datasets.canonical_name(data) else data
    classes = run.get("classes")
    X = policy.match_input(X, run.get("input_dtype"))
    if net.is_regression:
        y = policy.regression_targets(y, source)
        policy.check_fits(net, X, None, source, model)
        loss_value, _ = net.evaluate(X, y, loss=loss, threads=threads)
        rmse, r2 = policy.regression_scores(net, X, y, threads=threads)
        if as_json:
            print_json({"model": model, "dataset": data, "split": split, "n": int(y.shape[0]),
                        "loss_function": loss, "loss": loss_value, "rmse": rmse, "r2": r2})
            return
        click.echo(f"{model}: {arch(net.sizes)} on {data}, {split} split, {y.shape[0]:,} samples")
        click.echo(f"loss {loss_value:.4f} ({loss})  RMSE {rmse:.4g}  R^2 {r2:.4f}")
        return
    if classes is not None:
        y, _ = policy.map_labels(y, source, classes)
    else:
        y = policy.class_labels(y, source)
    policy.check_fits(net, X, y, source, model)
    pred = net.predict(X, threads=threads)
    loss_value, accuracy = net.evaluate(X, y, loss=loss, threads=threads)
    K = max(net.sizes[-1], 2 if net.output == "sigmoid" else 1)
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    counts = confusion.sum(axis=1)
    per_class = [float(confusion[k, k] / counts[k]) if counts[k] else None for k in range(K)]
    names = [str(c) for c in classes] if classes is not None else policy.class_names(data)
    if as_json:
        print_json({"model": model, "dataset": data, "split": split, "n": int(y.shape[0]), "loss_function": loss,
                    "loss": loss_value, "accuracy": accuracy, "per_class_accuracy": per_class,
                    "class_counts": counts.tolist(), "class_names": names,
                    "confusion_matrix": confusion.tolist()})
        return
    click.echo(f"{model}: {arch(net.sizes)} on {data}, {split} split, {y.shape[0]:,} samples")
    click.echo(f"loss {loss_value:.4f} ({loss})  accuracy {pct(accuracy)}")
    click.echo("")
    _print_table(confusion, counts, per_class, names)


def _print_table(confusion, counts, per_class, names):
    K = confusion.shape[0]
    click.echo("class  samples  accuracy" + ("  name" if names else ""))
    for k in range(K):
        line = f"{k:>5}  {counts[k]:>7,}  {pct(per_class[k]):>8}"
        click.echo(line + (f"  {names[k]}" if names else ""))
    click.echo("")
    click.echo("confusion matrix (rows: true class, columns: predicted class)")
    width = max(len(str(int(confusion.max()))), len(str(K - 1))) + 1
    click.echo(" " * 6 + "".join(f"{k:>{width}}" for k in range(K)))
    for k in range(K):
        click.echo(f"{k:>5} " + "".join(f"{v:>{width}}" for v in confusion[k]))
