"""`fastmlp bench`: fastmlp's training throughput against NumPy, PyTorch, JAX or scikit-learn
(fastmlp.bench measures)."""
import click

from .common import handle_errors
from ..bench import DATA_CHOICES, DTYPES, OPTIMIZERS, VS_CHOICES, WARMUP_SECONDS


@click.command(name="bench")
@click.option("--hidden", default="100", show_default=True,
              help="Hidden layer sizes, comma-separated (e.g. 512,512).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--threads", default=2, show_default=True, type=click.IntRange(1))
@click.option("--vs", "vs", default="numpy", show_default=True, type=click.Choice(VS_CHOICES),
              help="The peer: numpy (a vectorised NumPy trainer), torch, torch-compile, jax (jit over lax.scan "
                   "of chunks of minibatches), jax-jit (one jitted call per minibatch), sklearn.")
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(OPTIMIZERS),
              help="sgd (lr 0.05) or adam (lr 0.001), the same for both trainers.")
@click.option("--dtype", default="float32", show_default=True, type=click.Choice(DTYPES))
@click.option("--samples", "samples", default=60000, show_default=True, type=click.IntRange(1),
              help="Training samples (MNIST-shaped).")
@click.option("--data", default="synthetic-digits", show_default=True, type=click.Choice(DATA_CHOICES),
              help="synthetic-digits (learnable, MNIST-like), fashion-mnist (found locally) or random "
                   "pixels and labels.")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1))
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1),
              help="Run both trainers this many times, alternately, and compare the medians.")
@click.option("--warmup", "warmup_seconds", default=WARMUP_SECONDS, show_default=True,
              type=click.FloatRange(0), metavar="SECONDS",
              help="Train each trainer on a small subset for at least this long before timing it.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@handle_errors
def command(hidden, batch_size, threads, vs, optimizer, dtype, samples, data, epochs, repeats, warmup_seconds,
            as_json):
    """Compare fastmlp's training throughput with NumPy, PyTorch, JAX or scikit-learn.

    One epoch of SGD (or Adam) with softmax + cross-entropy on MNIST-shaped data, each trainer
    in its own process after a warm-up of --warmup seconds, from the same initial weights in the
    same sample order: samples/s, GFLOP/s, the share of NumPy's float32 matmul rate, the ratio,
    and each trainer's test accuracy.

    \b
    Examples:
      fastmlp bench --hidden 100 --batch-size 32 --threads 2 --vs numpy
      fastmlp bench --hidden 512,512 --batch-size 128 --vs torch --json
      fastmlp bench --batch-size 10 --vs torch --repeats 3
      fastmlp bench --data fashion-mnist --vs jax --optimizer adam
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
                  epochs=epochs, data=data, repeats=repeats, warmup_seconds=warmup_seconds,
                  optimizer=optimizer, dtype=dtype)
    click.echo(json.dumps(r, indent=2) if as_json else bench.format_result(r))
