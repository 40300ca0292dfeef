"""`fastmlp bench`: fastmlp's training throughput against NumPy or PyTorch (fastmlp.bench measures)."""
import click

from .common import handle_errors
from ..bench import DATA_CHOICES, VS_CHOICES, WARMUP_SECONDS


@click.command(name="bench")
@click.option("--hidden", default="100", show_default=True,
              help="Hidden layer sizes, comma-separated (e.g. 512,512).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1))
@click.option("--vs", "vs", default="numpy", show_default=True, type=click.Choice(VS_CHOICES))
@click.option("--samples", "samples", default=60000, show_default=True, type=click.IntRange(1),
              help="Training samples (MNIST-shaped).")
@click.option("--data", default="synthetic-digits", show_default=True, type=click.Choice(DATA_CHOICES),
              help="synthetic-digits (learnable, MNIST-like) or random pixels and labels.")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1))
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1),
              help="Run both trainers this many times, alternately, and compare the medians.")
@click.option("--warmup", "warmup_seconds", default=WARMUP_SECONDS, show_default=True,
              type=click.FloatRange(0), metavar="SECONDS",
              help="Train each trainer on a small subset for at least this long before timing it.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@handle_errors
def command(hidden, batch_size, threads, vs, samples, data, epochs, repeats, warmup_seconds, as_json):
    """Compare fastmlp's training throughput with NumPy or PyTorch.

    One epoch of plain SGD with softmax + cross-entropy on MNIST-shaped data, each trainer
    after a warm-up of --warmup seconds: samples/s, GFLOP/s, the share of NumPy's float32
    matmul rate, the ratio.

    \b
    Examples:
      fastmlp bench --hidden 100 --batch-size 32 --threads 2 --vs numpy
      fastmlp bench --hidden 512,512 --batch-size 128 --vs torch --json
      fastmlp bench --batch-size 10 --vs torch --repeats 3
    """
    import json

    import numba

    from .. import bench
    try:
        layers = tuple(int(h) for h in str(hidden).replace(" ", "").split(",") if h)
        if not layers or min(layers) < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"got {hidden!r}, expected positive integers like 100 or 512,512",
                                 param_hint="--hidden") from None
    if threads > numba.config.NUMBA_NUM_THREADS:
        raise click.BadParameter(f"got {threads}, at most {numba.config.NUMBA_NUM_THREADS} "
                                 "(NUMBA_NUM_THREADS)", param_hint="--threads")
    r = bench.run(hidden=layers, batch_size=batch_size, threads=threads, vs=vs, n_samples=samples,
                  epochs=epochs, data=data, repeats=repeats, warmup_seconds=warmup_seconds)
    click.echo(json.dumps(r, indent=2) if as_json else bench.format_result(r))
