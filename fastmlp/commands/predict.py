"""`fastmlp predict`: the predicted classes (and probabilities) of the rows of a file."""
import click

from .common import handle_errors, json_option, print_json, resolve_threads, threads_option

HELP = """Predict the classes of the rows of INPUT with a saved model.

\b
Examples:
  fastmlp predict model.npz images.npy
  fastmlp predict model.npz rows.csv --json

INPUT: .npy (one sample per row, or a single sample), .npz (the array X, or its only array), or
.csv (one sample per row, no label column, header line optional). Prints for each row its label,
the probability of that label and the probabilities of all classes (the raw outputs when the
model's output layer is not softmax).
"""


@click.command(name="predict", help=HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("input", type=click.Path(dir_okay=False))
@threads_option()
@json_option()
@handle_errors
def command(**options):
    predict(**options)


def predict(model, input, threads, as_json):
    import numpy as np

    from .. import datasets, run as policy
    from ..model import load_npz

    net, meta, _ = load_npz(model)
    run = policy.meta_section(meta, "run")
    threads = resolve_threads(threads)
    X = datasets.read_features(input)
    width = net.sizes[0]
    if X.ndim == 1:
        X = X.reshape(-1, 1) if width == 1 else X.reshape(1, -1)
    X = policy.match_input(X, run.get("input_dtype"))
    policy.check_fits(net, X, None, input, model)
    outputs = net.forward(X, threads=threads)
    if net.is_regression:
        values = outputs[:, 0].tolist()
        if as_json:
            print_json({"model": model, "input": input, "n": int(X.shape[0]), "predictions": values})
            return
        click.echo("sample  prediction")
        for i, v in enumerate(values):
            click.echo(f"{i:>6}  {v:>10.6g}")
        return
    labels = net.predict(X, threads=threads)
    if labels.ndim == 2:  # multi-label: one 0/1 column per output; label = the first on, for the table
        labels = np.argmax(outputs, axis=1)
    key = "probabilities" if net.output == "softmax" else "outputs"
    classes = run.get("classes")
    names = [str(c) for c in classes] if classes is not None else policy.class_names(run.get("dataset"))
    if as_json:
        result = {"model": model, "input": input, "n": int(X.shape[0]), "labels": labels.tolist(),
                  key: [[float(f"{v:.6g}") for v in row] for row in outputs.tolist()]}
        if classes is not None:
            result["labels"] = [classes[k] for k in labels.tolist()]
        elif names:
            result["class_names"] = [names[k] for k in labels]
        print_json(result)
        return
    K = net.sizes[-1]
    head = "p" if key == "probabilities" else "out"
    click.echo("sample  label  " + f"{head}(label)  " + "  ".join(f"{head}({k})".rjust(7) for k in range(K))
               + ("  name" if names and classes is None else ""))
    for i, (label, row) in enumerate(zip(labels.tolist(), outputs.tolist())):
        p = row[label] if K > 1 else row[0]  # one sigmoid unit: its output is the probability of class 1
        shown = f"{names[label]:>5}" if classes is not None else f"{label:>5}"
        click.echo(f"{i:>6}  {shown}  {p:>8.4f}  " + "  ".join(f"{v:>7.4f}" for v in row)
                   + (f"  {names[label]}" if names and classes is None else ""))
