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
    labels = np.argmax(outputs, axis=1)
    key = "probabilities" if net.output == "softmax" else "outputs"
    names = policy.class_names(run.get("dataset"))
    if as_json:
        result = {"model": model, "input": input, "n": int(X.shape[0]), "labels": labels.tolist(),
                  key: [[float(f"{v:.6g}") for v in row] for row in outputs.tolist()]}
        if names:
            result["class_names"] = [names[k] for k in labels]
        print_json(result)
        return
    K = net.sizes[-1]
    head = "p" if key == "probabilities" else "out"
    click.echo("sample  label  " + f"{head}(label)  " + "  ".join(f"{head}({k})".rjust(7) for k in range(K))
               + ("  name" if names else ""))
    for i, (label, row) in enumerate(zip(labels.tolist(), outputs.tolist())):
        click.echo(f"{i:>6}  {label:>5}  {row[label]:>8.4f}  " + "  ".join(f"{v:>7.4f}" for v in row)
                   + (f"  {names[label]}" if names else ""))
