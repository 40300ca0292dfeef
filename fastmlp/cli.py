"""The `fastmlp` command line: train, evaluate, predict, datasets, plot, info (and bench).

Importing this module imports only click (and fastmlp's own light modules): NumPy, Numba and the
kernels load inside the commands, so `fastmlp --help` answers at once. The work of each command is
in fastmlp._cli_commands.

Errors: one line on stderr, `Error: <what is wrong and what to do>`, never a traceback (set
FASTMLP_DEBUG=1 to get one); exit status 2 for usage errors (bad options or arguments), 1 for the
rest (missing or corrupt files, no network, divergence...), 130 after Ctrl-C.
"""
import functools
import importlib.util
import math
import os
import sys
import warnings

import click

from . import __version__
from .errors import FastMLPError

HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")  # same as fastmlp._checks
OUTPUTS = ("softmax", "sigmoid", "identity")
LOSSES = ("ce", "mse")
OPTIMIZERS = ("sgd", "momentum", "adam")
DTYPES = ("float32", "float64")

# Commands provided by other modules, loaded only when used: name -> (module, short help).
LAZY_COMMANDS = {
    "bench": ("fastmlp.bench", "Measure training throughput against NumPy or PyTorch."),
}


def one_line(text):
    return " ".join(str(text).split())


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class FastMLPGroup(click.Group):
    """A click group that prints every error as one line and loads optional commands lazily."""

    def list_commands(self, ctx):
        names = list(self.commands)
        names += [n for n, (module, _) in LAZY_COMMANDS.items()
                  if n not in self.commands and _module_exists(module)]
        return names

    def get_command(self, ctx, name):
        if name not in self.commands and name in LAZY_COMMANDS and _module_exists(LAZY_COMMANDS[name][0]):
            self._load_lazy(name)
        return self.commands.get(name)

    def _load_lazy(self, name):
        module_name, _ = LAZY_COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
            register = getattr(module, "register", None)
            if not callable(register):
                raise ImportError(f"{module_name} has no register(cli_group) function")
            register(self)
        except Exception as e:  # keep the rest of the CLI working; say why when the command is used
            problem = one_line(f"{type(e).__name__}: {e}")

            @click.command(name=name, help=f"(unavailable: {problem})",
                           context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args):
                raise click.ClickException(f"`fastmlp {name}` cannot be loaded ({problem})")

            self.add_command(unavailable)

    def format_commands(self, ctx, formatter):
        # Like click's, but a lazy command not loaded yet shows its static help (no import).
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name)
            if cmd is None:
                rows.append((name, LAZY_COMMANDS[name][1]))
            elif not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - max(len(n) for n in
                                                                                   self.list_commands(ctx)))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        prog_name = prog_name or "fastmlp"
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        no_args_is_help = getattr(click.exceptions, "NoArgsIsHelpError", ())
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except no_args_is_help as e:  # `fastmlp` or `fastmlp datasets` alone: the help, as click shows it
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:
            hint = ""
            if e.ctx is not None and "see `" not in e.format_message():
                hint = f" (see '{e.ctx.command_path} --help')"
            _error(one_line(e.format_message()) + hint)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            _error(one_line(e.format_message()))
            sys.exit(e.exit_code)
        except click.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                _error("interrupted")
                sys.exit(130)
            _error("aborted")
            sys.exit(1)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _error(message):
    try:
        click.echo(f"Error: {message}", err=True)
    except OSError:
        pass


def _silence_stdout():
    """After a broken pipe (`fastmlp predict ... | head`), keep Python's exit flush quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def handle_errors(f):
    """Turn fastmlp's errors (and ValueError, OSError) into one-line click errors (exit 1), and a
    Ctrl-C outside training into exit 130. FASTMLP_DEBUG=1 lets them through with a traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        debug = os.environ.get("FASTMLP_DEBUG", "") not in ("", "0")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = _show_warning
                return f(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            if debug:
                raise
            _error("interrupted")
            sys.exit(130)
        except BrokenPipeError:
            raise
        except (FastMLPError, ValueError, OSError, MemoryError) as e:
            if debug:
                raise
            raise click.ClickException(describe_exception(e)) from None

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line on stderr, without the source line."""
    try:
        click.echo(f"warning: {one_line(message)}", err=True)
    except OSError:
        pass


def describe_exception(e):
    if isinstance(e, MemoryError):
        return "out of memory; use a smaller data set, network or --batch-size"
    if isinstance(e, OSError) and not isinstance(e, FastMLPError) and e.strerror:
        where = f"{e.filename}: " if e.filename else ""
        return one_line(f"{where}{e.strerror}")
    return one_line(e) or type(e).__name__


# -- option checks (run at parse time, before anything heavy) -------------------------------------

def parse_hidden(ctx, param, value):
    """'100' -> [100], '256,128' -> [256, 128], 'none' or '' -> [] (no hidden layer)."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("", "none", "0"):
        return []
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise click.BadParameter(f"got {value!r}, expected positive integers separated by commas, "
                                     f"e.g. 100 or 256,128 (or 'none' for no hidden layer)")
        sizes.append(int(part))
    return sizes


def check_finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"got {value}, expected a finite number")
    return value


def check_dataset_name(ctx, param, value):
    """A value that is neither a known data set nor looks like a path is a usage error."""
    if value is None:
        return None
    from . import datasets
    key = value.strip().lower().replace("_", "-")
    if key in datasets.KNOWN:
        return value
    looks_like_path = (os.path.exists(value) or os.sep in value or (os.altsep and os.altsep in value)
                       or value.lower().endswith((".npz", ".csv")))
    if param.name == "name" or not looks_like_path:
        known = ", ".join(datasets.KNOWN)
        extra = "" if param.name == "name" else ", or the path of a .npz/.csv file or a directory of IDX files"
        raise click.BadParameter(f"unknown dataset {value!r}: expected one of {known}{extra} "
                                 f"(see `fastmlp datasets list`)")
    return value


def _json_option(help_text="Print the result as one JSON object (the last line of stdout)."):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def _threads_option():
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="T",
                        help="Numba threads (default: all, NUMBA_NUM_THREADS).")


def _data_dir_option():
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
                        help="Directory searched first for data files (and downloaded into).")


# -- the commands -----------------------------------------------------------------------------------

@click.group(name="fastmlp", cls=FastMLPGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fastmlp", message="%(prog)s %(version)s")
def main():
    """fastmlp: train multilayer perceptrons on the CPU with Numba kernels.

    \b
    Examples:
      fastmlp train --epochs 5                      # 784-100-10 on synthetic-digits
      fastmlp train --data xor --hidden 8 --activation tanh --epochs 200 --lr 0.5 --batch-size 4
      fastmlp train --save model.npz --metrics run.jsonl
      fastmlp evaluate model.npz
      fastmlp predict model.npz images.npy
      fastmlp datasets list
      fastmlp info

    Run `fastmlp COMMAND --help` for the options of a command.
    """


TRAIN_HELP = """Train a network on a data set; report the test accuracy at the end.

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


@main.command(help=TRAIN_HELP, short_help="Train a network (progress, checkpoints, test accuracy).")
@click.option("--data", default=None, metavar="NAME|PATH", callback=check_dataset_name,
              help="Data set name or file  [default: synthetic-digits]")
@_data_dir_option()
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
              callback=check_finite, help="Learning rate.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True)
@click.option("--momentum", type=click.FloatRange(min=0, max=1, max_open=True), default=0.9,
              show_default=True, help="Momentum (with --optimizer momentum).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              callback=check_finite, help="L2 penalty coefficient.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the initial weights, the shuffles and the validation split.")
@_threads_option()
@click.option("--val-split", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0,
              show_default=True, help="Fraction held out for validation (the last part after a "
                                      "seeded shuffle).")
@click.option("--save", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Checkpoint file (.npz) written after every epoch and at the end.")
@click.option("--resume", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Continue the run saved in this checkpoint.")
@click.option("--metrics", type=click.Path(dir_okay=False), default=None, metavar="PATH.jsonl",
              help="Append one JSON object per epoch to this file (see `fastmlp plot`).")
@_json_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--distributed", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: under an MPI launcher (mpiexec, srun) train on all its ranks together; "
                   "off: each process alone.")
@click.pass_context
@handle_errors
def train(ctx, distributed, **options):
    from . import _cli_commands, _mpi_cli
    session = _mpi_cli.start(distributed)
    if session is None:
        return _cli_commands.train(ctx, **options)
    with _mpi_cli.running(session):
        _cli_commands.train(ctx, **_mpi_cli.rank_options(session, options))


EVALUATE_HELP = """Evaluate a saved model: loss, accuracy, per-class accuracy, confusion matrix.

\b
Examples:
  fastmlp evaluate model.npz                       # on the test split of its data set
  fastmlp evaluate model.npz --data mnist --split train
  fastmlp evaluate model.npz --data points.npz --json

MODEL is a model or checkpoint written by `fastmlp train --save` or MLP.save. Without --data the
data set recorded in the checkpoint is used.
"""


@main.command(help=EVALUATE_HELP, short_help="Loss, accuracy and confusion matrix of a saved model.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", default=None, metavar="NAME|PATH", callback=check_dataset_name,
              help="Data set name or file  [default: the model's data set]")
@_data_dir_option()
@click.option("--split", type=click.Choice(("train", "test")), default="test", show_default=True)
@click.option("--loss", type=click.Choice(LOSSES), default=None,
              help="Loss to report  [default: the training loss]")
@_threads_option()
@_json_option()
@handle_errors
def evaluate(**options):
    from . import _cli_commands
    _cli_commands.evaluate(**options)


PREDICT_HELP = """Predict the classes of the rows of INPUT with a saved model.

\b
Examples:
  fastmlp predict model.npz images.npy
  fastmlp predict model.npz rows.csv --json

INPUT: .npy (one sample per row, or a single sample), .npz (the array X, or its only array), or
.csv (one sample per row, no label column, header line optional). Prints for each row its label,
the probability of that label and the probabilities of all classes (the raw outputs when the
model's output layer is not softmax).
"""


@main.command(help=PREDICT_HELP, short_help="Predict the classes of the rows of a file.")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("input", type=click.Path(dir_okay=False))
@_threads_option()
@_json_option()
@handle_errors
def predict(**options):
    from . import _cli_commands
    _cli_commands.predict(**options)


@main.group(short_help="List, download, verify and locate data sets.")
def datasets():
    """List, download, verify and locate the known data sets.

    \b
    Examples:
      fastmlp datasets list
      fastmlp datasets download mnist
      fastmlp datasets verify mnist
      fastmlp datasets path fashion-mnist

    Files are looked for in --data-dir, $FASTMLP_DATA and $XDG_CACHE_HOME/fastmlp (default
    ~/.cache/fastmlp); $FASTMLP_MIRROR replaces the download mirrors.
    """


@datasets.command(name="list")
@_json_option("Print the list as JSON.")
@handle_errors
def datasets_list(as_json):
    """List the known data sets.

    \b
    Example:
      fastmlp datasets list --json
    """
    from . import _cli_commands
    _cli_commands.datasets_list(as_json)


@datasets.command(name="download")
@click.argument("name", callback=check_dataset_name)
@_data_dir_option()
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@handle_errors
def datasets_download(name, data_dir, quiet):
    """Download (or generate) a data set; print where its files are.

    \b
    Example:
      fastmlp datasets download fashion-mnist --data-dir ./data
    """
    from . import _cli_commands
    _cli_commands.datasets_download(name, data_dir, quiet)


@datasets.command(name="verify")
@click.argument("name", callback=check_dataset_name)
@_data_dir_option()
@_json_option("Print the file statuses as JSON.")
@handle_errors
def datasets_verify(name, data_dir, as_json):
    """Check the local files of a data set (sizes and checksums).

    \b
    Example:
      fastmlp datasets verify mnist
    """
    from . import _cli_commands
    _cli_commands.datasets_verify(name, data_dir, as_json)


@datasets.command(name="path")
@click.argument("name", callback=check_dataset_name)
@_data_dir_option()
@handle_errors
def datasets_path(name, data_dir):
    """Print the directory holding a data set's files (or where they would go).

    \b
    Example:
      fastmlp datasets path mnist
    """
    from . import _cli_commands
    _cli_commands.datasets_path(name, data_dir)


@main.command(short_help="Plot the loss and accuracy curves of a metrics file.")
@click.argument("metrics", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Image file (.png, .pdf, .svg...)  [default: METRICS with .png]")
@handle_errors
def plot(metrics, out):
    """Plot loss and accuracy per epoch (train and validation) from a --metrics file.

    \b
    Example:
      fastmlp train --val-split 0.1 --metrics run.jsonl
      fastmlp plot run.jsonl --out curves.png

    Needs matplotlib: pip install 'fastmlp[plot]'.
    """
    from . import _cli_commands
    _cli_commands.plot(metrics, out)


@main.command(short_help="Versions, threads, threading layer, SIMD level, cache directories.")
@_json_option("Print the information as JSON.")
@handle_errors
def info(as_json):
    """Show versions, thread settings, Numba's threading layer, the CPU's SIMD level and the
    cache directories.

    \b
    Example:
      fastmlp info
      NUMBA_NUM_THREADS=4 fastmlp info --json
    """
    from . import _cli_commands
    _cli_commands.info(as_json)


if __name__ == "__main__":
    main()
