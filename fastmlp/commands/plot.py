"""`fastmlp plot`: the loss and accuracy curves of a --metrics file, as an image (needs matplotlib)."""
import json
import os

import click

from .common import check_writable, handle_errors, note
from ..errors import DataError, one_line

MATPLOTLIB_MISSING = "matplotlib is not installed: pip install 'fastmlp[plot]'"


@click.command(name="plot")
@click.argument("metrics", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Image file (.png, .pdf, .svg...)  [default: METRICS with .png]")
@handle_errors
def command(metrics, out):
    """Plot loss and accuracy per epoch (train and validation) from a --metrics file.

    \b
    Example:
      fastmlp train --val-split 0.1 --metrics run.jsonl
      fastmlp plot run.jsonl --out curves.png

    Needs matplotlib: pip install 'fastmlp[plot]'.
    """
    plot(metrics, out)


def read_metrics(path):
    """The rows of a --metrics file, split into runs (a new run starts when the epoch goes back)."""
    try:
        with open(path, encoding="utf-8") as f:
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
    from .._files import atomic_write
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
        note(f"{metrics} holds {len(runs)} runs; plotting the last one ({len(rows)} epochs)")
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
