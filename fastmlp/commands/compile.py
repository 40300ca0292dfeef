"""`fastmlp compile`: fill Numba's cache ahead of the first run (Docker images, CI, job prologues)."""
import click

from .common import (DTYPES, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, OUTPUTS, arch, handle_errors, json_option,
                     parse_hidden, print_json, threads_option)

INPUT_DTYPES = ("uint8", "float32", "float64")

HELP = """Compile the kernels once, ahead of the first run, and keep them in Numba's cache.

\b
Examples:
  fastmlp compile                                   # float32 networks, uint8/float32/float64 inputs
  fastmlp compile --input-dtype uint8               # what `fastmlp train` on MNIST-like data needs
  fastmlp compile --dtype float32 --dtype float64 --hidden 256,128 --optimizer adam

The kernels are compiled on their first use for each network dtype (--dtype) and input dtype
(--input-dtype: uint8 pixels, float32 or float64 features) and cached on disk; a first run on an
empty cache spends seconds compiling, every later run starts at once. This command compiles (or
loads) what training, evaluation and prediction need for each pair of the given dtypes: run it when
building a Docker image, in a CI step before the tests, or in a cluster job's prologue, with the
same NUMBA_CACHE_DIR (if set) as the runs that follow. The other options name the configuration to
compile for (they are checked as `fastmlp train` checks them).

Prints one line per pair of dtypes: compiled, or found in the cache, and the seconds it took.
"""


@click.command(name="compile", help=HELP)
@click.option("--dtype", "dtypes", type=click.Choice(DTYPES), multiple=True, metavar="DTYPE",
              help="Network dtype (repeatable): float32, float64  [default: float32]")
@click.option("--input-dtype", "input_dtypes", type=click.Choice(INPUT_DTYPES), multiple=True, metavar="DTYPE",
              help="Input dtype (repeatable): uint8, float32, float64  [default: all three]")
@click.option("--inputs", "n_inputs", type=click.IntRange(min=1, max=1 << 20), default=784, show_default=True,
              help="Input features.")
@click.option("--hidden", default="100", show_default=True, callback=parse_hidden, metavar="N[,N...]",
              help="Hidden layer sizes, comma-separated ('none': no hidden layer).")
@click.option("--outputs", "n_outputs", type=click.IntRange(min=1, max=1 << 20), default=10, show_default=True,
              help="Output units.")
@click.option("--activation", type=click.Choice(HIDDEN_ACTIVATIONS), default="relu", show_default=True)
@click.option("--output", type=click.Choice(OUTPUTS), default="softmax", show_default=True)
@click.option("--loss", type=click.Choice(LOSSES), default="ce", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True)
@threads_option()
@json_option("Print the result as one JSON object (the last line of stdout).")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors (and --json).")
@handle_errors
def command(dtypes, input_dtypes, n_inputs, hidden, n_outputs, activation, output, loss, optimizer, threads,
            as_json, quiet):
    from .. import run as policy
    from .._compile import warm_up
    from .common import resolve_threads

    policy.check_loss_output(loss, output, spell=lambda name: "--" + name)
    threads = resolve_threads(threads)
    sizes = [n_inputs, *hidden, n_outputs]
    from .. import _checks
    try:
        for dtype in dtypes or ("float32",):
            _checks.check_sizes(sizes, 4 if dtype == "float32" else 8)
    except ValueError as e:
        raise click.UsageError(f"--inputs, --hidden, --outputs: {e}") from None
    dtypes = dtypes or ("float32",)
    input_dtypes = input_dtypes or INPUT_DTYPES
    what = f"{arch(sizes)} ({activation}, {output} output, {loss} loss, {optimizer})"
    if not quiet:
        click.echo(f"compiling training, evaluation and prediction for {what}")
    done = []
    for dtype in dict.fromkeys(dtypes):
        for input_dtype in dict.fromkeys(input_dtypes):
            compiled, seconds = warm_up(sizes, activation, output, loss, optimizer, dtype, input_dtype, threads)
            done.append({"dtype": dtype, "input_dtype": input_dtype, "compiled": compiled, "seconds": seconds})
            if not quiet:
                state = "compiled" if compiled else "found in the cache"
                click.echo(f"  {dtype} network, {input_dtype} inputs: {state} ({seconds:.1f} s)")
    total = sum(d["seconds"] for d in done)
    cache = _cache_dir()
    if not quiet:
        click.echo(f"done in {total:.1f} s; cache: {cache}")
    if as_json:
        print_json({"sizes": sizes, "activation": activation, "output": output, "loss": loss,
                    "optimizer": optimizer, "compiled": done, "seconds": total, "cache": cache})


def _cache_dir():
    """Where Numba keeps the compiled kernels (NUMBA_CACHE_DIR, or next to fastmlp's source)."""
    from .. import _kernels
    try:
        return _kernels._forward_rows._cache.cache_path
    except AttributeError:  # a future Numba: the directory is not essential
        return None
