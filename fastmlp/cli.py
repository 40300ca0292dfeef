"""The `fastmlp` command line: the group, its error handling, and the table of commands.

Each command lives in its own module of fastmlp.commands (options, help and body together) and is
imported only when it runs or shows its help, so `fastmlp --help` imports neither NumPy nor Numba.
Shared pieces (one-line errors, common options, output formatting, the progress bar) are in
fastmlp.commands.common.
"""
import importlib
import importlib.util
import os
import sys

import click

from . import __version__
from .commands.common import error
from .errors import one_line

# name -> (module defining a click command named `command`, short help shown by `fastmlp --help`)
COMMANDS = {
    "train": ("fastmlp.commands.train", "Train a network (progress, checkpoints, test accuracy)."),
    "evaluate": ("fastmlp.commands.evaluate", "Loss, accuracy and confusion matrix of a saved model."),
    "predict": ("fastmlp.commands.predict", "Predict the classes of the rows of a file."),
    "datasets": ("fastmlp.commands.datasets", "List, download, verify and locate data sets."),
    "plot": ("fastmlp.commands.plot", "Plot the loss and accuracy curves of a metrics file."),
    "info": ("fastmlp.commands.info", "Versions, threads, threading layer, SIMD level, cache directories."),
    "bench": ("fastmlp.commands.bench", "Measure training throughput against NumPy, PyTorch, JAX, scikit-learn."),
    "export": ("fastmlp.commands.export", "Export a saved model to ONNX or safetensors (PyTorch)."),
    "compile": ("fastmlp.commands.compile", "Compile the kernels ahead of the first run (Docker, CI, job prologues)."),
}


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class FastMLPGroup(click.Group):
    """A click group that loads its commands lazily and prints every error as one line."""

    def list_commands(self, ctx):
        names = list(self.commands)
        names += [n for n, (module, _) in COMMANDS.items() if n not in self.commands and _module_exists(module)]
        return names

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMANDS and _module_exists(COMMANDS[name][0]):
            self._load(name)
        return self.commands.get(name)

    def _load(self, name):
        module_name, short_help = COMMANDS[name]
        try:
            command = getattr(importlib.import_module(module_name), "command", None)
            if not isinstance(command, click.Command):
                raise ImportError(f"{module_name} has no registered command (a click command named `command`)")
            if command.short_help is None:
                command.short_help = short_help
            self.add_command(command, name)
        except Exception as e:  # keep the rest of the CLI working; say why when the command is used
            problem = one_line(f"{type(e).__name__}: {e}")

            @click.command(name=name, help=f"(unavailable: {problem})",
                           context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def unavailable(args):
                raise click.ClickException(f"`fastmlp {name}` cannot be loaded ({problem})")

            self.add_command(unavailable)

    def format_commands(self, ctx, formatter):
        # Like click's, but a command not loaded yet shows its short help from COMMANDS (no import).
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            cmd = self.commands.get(name)
            if cmd is None:
                rows.append((name, COMMANDS[name][1]))
            elif not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
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
            error(one_line(e.format_message()) + hint)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            error(one_line(e.format_message()))
            sys.exit(e.exit_code)
        except click.Abort as e:
            if isinstance(e.__cause__, KeyboardInterrupt):
                error("interrupted")
                sys.exit(130)
            error("aborted")
            sys.exit(1)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _silence_stdout():
    """After a broken pipe (`fastmlp predict ... | head`), keep Python's exit flush quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


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
      fastmlp compile                               # fill the kernel cache ahead of the first run

    Run `fastmlp COMMAND --help` for the options of a command.
    """


if __name__ == "__main__":
    main()
