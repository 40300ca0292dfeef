"""What every `fastmlp` command uses: one-line errors, shared options, output formatting, progress.

Imports only click and fastmlp's light modules, so that `fastmlp COMMAND --help` stays instant.

Errors: one line on stderr, `Error: <what is wrong and what to do>`, never a traceback (set
FASTMLP_DEBUG=1 to get one); exit status 2 for usage errors (bad options or arguments), 1 for the
rest (missing or corrupt files, no network, divergence...), 130 after Ctrl-C.
"""
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings

import click

from .._choices import DTYPES, HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS, OUTPUTS  # noqa: F401 (for the commands)
from ..errors import ConfigError, FastMLPError, one_line

# -- errors ---------------------------------------------------------------------------------------

def error(message):
    """Print `Error: message` on stderr (quietly give up if stderr is gone)."""
    try:
        click.echo(f"Error: {message}", err=True)
    except OSError:
        pass


def note(message, quiet=False):
    if not quiet:
        click.echo(f"note: {one_line(message)}", err=True)


def handle_errors(f):
    """Turn fastmlp's errors (and ValueError, OSError) into one-line click errors (exit 1; 2 for a
    ConfigError), and a Ctrl-C outside training into exit 130. FASTMLP_DEBUG=1 lets them through with a traceback."""

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
            error("interrupted")
            sys.exit(130)
        except BrokenPipeError:
            raise
        except ConfigError as e:  # settings that contradict each other: a usage error, exit 2
            raise click.UsageError(one_line(e)) from None
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


def finite_option(ctx, param, value):
    """A click callback: the option's number must be finite."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"got {value}, expected a finite number")
    return value


def dataset_option(ctx, param, value):
    """A click callback: a value that is neither a known data set nor looks like a path is a usage
    error."""
    if value is None:
        return None
    from .. import datasets
    if datasets.canonical_name(value):
        return value
    looks_like_path = (os.path.exists(value) or os.sep in value or (os.altsep and os.altsep in value)
                       or value.lower().endswith((".npz", ".csv")))
    if param.name == "name" or not looks_like_path:
        known = ", ".join(datasets.KNOWN)
        extra = "" if param.name == "name" else ", or the path of a .npz/.csv file or a directory of IDX files"
        raise click.BadParameter(f"unknown dataset {value!r}: expected one of {known}{extra} "
                                 f"(see `fastmlp datasets list`)")
    return value


def json_option(help_text="Print the result as one JSON object (the last line of stdout)."):
    return click.option("--json", "as_json", is_flag=True, help=help_text)


def threads_option():
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="T",
                        help="Numba threads (default: all, NUMBA_NUM_THREADS).")


def data_dir_option():
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
                        help="Directory searched first for data files (and downloaded into).")


def resolve_threads(threads):
    """The thread count to use (None: all), or a usage error naming --threads."""
    from ..model import resolve_threads as resolve
    try:
        return resolve(threads)
    except ValueError as e:
        message = one_line(e)
        if message.startswith("threads: "):
            message = message[len("threads: "):]
        raise click.BadParameter(message, param_hint="'--threads'") from None


def check_writable(path, option, append=False):
    """Fail now, before any training, if `path` cannot be written (a file in an existing, writable
    directory). Leaves nothing behind."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        raise click.ClickException(f"cannot write {option} {path}: it is a directory; give a file path")
    directory = os.path.dirname(full)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise click.ClickException(f"cannot write {option} {path}: {directory} is a file, not a directory; "
                                   f"choose another path")
    if not os.path.isdir(directory):
        raise click.ClickException(f"cannot write {option} {path}: directory {directory} does not exist; "
                                   f"create it first or choose another path")
    try:
        if append and os.path.exists(full):
            with open(full, "a", encoding="utf-8"):
                pass
        else:
            fd, tmp = tempfile.mkstemp(prefix=".fastmlp-check-", dir=directory)
            os.close(fd)
            os.unlink(tmp)
    except OSError as e:
        raise click.ClickException(f"cannot write {option} {path}: {e.strerror or e}; choose a writable "
                                   f"location") from None
    return full


# -- output ---------------------------------------------------------------------------------------

def json_safe(obj):
    """obj with NaN and infinities as None (strict JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def print_json(obj):
    click.echo(json.dumps(json_safe(obj), allow_nan=False))


def append_jsonl(path, obj):
    line = json.dumps(json_safe(obj), allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)


def pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def arch(sizes):
    return "-".join(map(str, sizes))


def _isatty(stream):
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress bar on stderr (when it is a terminal), updated from Trainer.fit's callback,
    and one line per epoch on stdout."""

    BAR = 24

    def __init__(self, quiet):
        self.stream = sys.stderr
        self.lines = not quiet
        self.bar = not quiet and _isatty(self.stream)
        self.shown = False
        self.last = 0.0

    def update(self, info):
        if not self.bar:
            return
        now = time.monotonic()
        if self.shown and now - self.last < 0.1:
            return
        self.last = now
        frac = info["done"] / info["total"] if info["total"] else 1.0
        head = f"epoch {info['epoch']}/{info['epochs']} "
        acc = "" if info["accuracy"] is None else f"acc {100 * info['accuracy']:.2f}% "
        tail = (f" {info['done']:,}/{info['total']:,} loss {info['loss']:.4f} "
                f"{acc}{info['samples_per_second']:,.0f} samples/s")
        width = shutil.get_terminal_size((80, 24)).columns
        bar = max(8, min(self.BAR, width - 1 - len(head) - len(tail) - 2))
        filled = int(frac * bar)
        text = f"{head}[{'#' * filled}{'-' * (bar - filled)}]{tail}"
        self.stream.write("\r" + text[:max(width - 1, 10)] + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def epoch_end(self, row, epochs):
        from ..training import format_epoch
        self.close()
        if self.lines:
            click.echo(format_epoch(row, epochs))

    def close(self):
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False
