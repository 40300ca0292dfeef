"""Compiling the kernels: the notice on a cold cache (fastmlp._compile.compile_notice, `fastmlp train`
and Trainer.fit), `fastmlp compile`, and that nothing is compiled twice (no Literal[...]
re-specialisations). A few tests run in a subprocess with an empty NUMBA_CACHE_DIR (a cold cache)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fastmlp import _compile, cli
from fastmlp.model import MLP
from fastmlp.training import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FASTMLP_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("FASTMLP_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)


def invoke(*args, code=0):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result


# ------------------------------------------------------------------------- compile_notice
def test_notice_speaks_when_numba_compiles_and_not_when_the_code_exists():
    import numba

    @numba.njit  # a new function: not compiled yet, not in any cache
    def twice(x):
        return 2 * x

    said = []
    with _compile.compile_notice(said.append) as notice:
        said.append("before")
        assert twice(3) == 6
        said.append("after")
    assert said[:3] == ["before", None, "after"]     # the notice comes when the compile starts
    assert len(said) == 4 and isinstance(said[3], float) and said[3] >= 0
    assert notice.compiled and notice.seconds == said[3]
    said.clear()
    with _compile.compile_notice(said.append) as notice:
        assert twice(4) == 8                          # compiled already: nothing to say
    assert said == [] and not notice.compiled
    with _compile.compile_notice(said.append):
        assert twice(2.5) == 5.0                      # a new signature compiles
    assert said[0] is None and len(said) == 2


def test_notice_text_and_printer(capsys):
    say = _compile.printer()
    say(None)
    say(12.34)
    assert capsys.readouterr().out == "compiling the kernels (once; cached for later runs) ...\ncompiled in 12.3 s\n"


def test_notice_says_nothing_after_an_error():
    import numba

    @numba.njit
    def fails(x):
        return x + 1

    said = []
    with pytest.raises(ZeroDivisionError):
        with _compile.compile_notice(said.append):
            fails(1)
            raise ZeroDivisionError
    assert said == [None]


# ------------------------------------------------------------------------- `fastmlp compile`
def test_compile_command_compiles_what_training_evaluation_and_prediction_use():
    result = invoke("compile", "--dtype", "float64", "--input-dtype", "float32", "--inputs", "7", "--hidden", "5",
                    "--outputs", "3", "--json", "--threads", "1")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["sizes"] == [7, 5, 3] and [(d["dtype"], d["input_dtype"]) for d in out["compiled"]] == [
        ("float64", "float32")]
    assert result.stdout.startswith("compiling training, evaluation and prediction for 7-5-3 (relu, softmax")
    assert "float64 network, float32 inputs: " in result.stdout
    # What it compiled is what a real run of that configuration uses: nothing compiles any more.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 7)).astype(np.float32), rng.integers(0, 3, 40)
    net = MLP([7, 5, 3], dtype="float64")
    with _compile.compile_notice() as notice:
        Trainer(net, threads=1).fit(X, y, 1, verbose=False, validation=(X[:5], y[:5]))
        net.evaluate(X, y)
        net.predict(X[:2])
        net.forward(X[0])
    assert not notice.compiled


def test_compile_command_default_is_every_input_dtype_of_a_float32_network():
    result = invoke("compile", "--inputs", "4", "--hidden", "3", "--outputs", "2", "--json", "--threads", "1")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(d["dtype"], d["input_dtype"]) for d in out["compiled"]] == [
        ("float32", "uint8"), ("float32", "float32"), ("float32", "float64")]
    assert all(isinstance(d["compiled"], bool) and d["seconds"] >= 0 for d in out["compiled"])
    quiet = invoke("compile", "--inputs", "4", "--hidden", "3", "--outputs", "2", "--quiet", "--threads", "1")
    assert quiet.stdout == "" and quiet.stderr == ""


@pytest.mark.parametrize("args,fragment", [
    (["--loss", "bce"], "--loss bce needs --output sigmoid"),
    (["--dtype", "float16"], "'float16' is not one of"),
    (["--input-dtype", "int8"], "'int8' is not one of"),
    (["--hidden", "x"], "--hidden"),
    (["--inputs", "0"], "--inputs"),
    (["--threads", "0"], "--threads"),
    (["--nonsense"], "No such option"),
])
def test_compile_command_usage_errors_are_one_line_exit_2(args, fragment):
    result = CliRunner().invoke(cli.main, ["compile", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_compile_is_listed_in_help():
    result = invoke("--help")
    assert "compile" in result.stdout
    assert "Docker" in invoke("compile", "--help").stdout


def test_train_quiet_never_prints_the_notice(monkeypatch):
    def no_printer(*args):
        raise AssertionError("--quiet must not print the compile notice")

    monkeypatch.setattr(_compile, "printer", no_printer)
    result = invoke("train", "--data", "xor", "--hidden", "4", "--epochs", "1", "--batch-size", "4", "--threads",
                    "1", "--quiet")
    assert result.stderr == ""
    said = []
    monkeypatch.setattr(_compile, "printer", lambda stream=None: said.append(stream is sys.stderr) or print)
    invoke("train", "--data", "xor", "--hidden", "4", "--epochs", "1", "--batch-size", "4", "--threads", "1")
    assert said == [True]                                   # on stderr: not in stdout, nor in --json output


# ------------------------------------------------------------------------- cold cache, in a subprocess
COLD_RUN = """
import sys
from numba.core import event
from numba.core.registry import CPUDispatcher
from fastmlp import cli, _kernels, _synthetic
here = set()
class Compiled(event.Listener):
    def on_start(self, ev):
        here.add(ev.data["dispatcher"].py_func.__name__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Compiled())
try:
    cli.main(sys.argv[1:], prog_name="fastmlp", standalone_mode=False)
except SystemExit as e:
    assert not e.code, e.code
literal = [f"{mod.__name__}.{name}: {sig}" for mod in (_kernels, _synthetic) for name, d in vars(mod).items()
           if isinstance(d, CPUDispatcher) for sig in d.signatures if "Literal" in str(sig)]
print("LITERAL", literal)
refs = _kernels.kernels("float32")
print("KERNELS", sorted(here & {r.dispatcher.py_func.__name__ for r in refs}), all(r.cached() for r in refs),
      "_drive_plan" in here)
"""


def _run(args, cache, code=None):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=ROOT)
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "fastmlp.cli", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return out


def test_cold_cache_train_says_it_compiles_then_a_warm_run_is_silent_and_compile_fills_the_cache(tmp_path):
    cache = tmp_path / "numba"
    train = ["train", "--data", "xor", "--hidden", "4", "--epochs", "2", "--batch-size", "4", "--threads", "1",
             "--json"]
    cold = _run(train, cache, COLD_RUN)
    err = cold.stderr.splitlines()
    assert "compiling the kernels (once; cached for later runs) ..." in err, cold.stderr
    done = [line for line in err if line.startswith("compiled in ")]
    assert len(done) == 1 and err.index(done[0]) > err.index("compiling the kernels (once; cached for later runs) ...")
    out = cold.stdout.splitlines()
    assert out[-2] == "LITERAL []"                          # nothing compiled for a literal argument
    # the driver was compiled here, its kernels in the second process (_compile.prefetch), into the cache
    assert out[-1] == "KERNELS [] True True"
    result = json.loads(out[-3])
    assert result["compile_seconds"] > 0 and "compil" not in out[-3].replace("compile_seconds", "")
    warm = _run(train, cache)
    assert "compiling" not in warm.stderr and "compiled in" not in warm.stderr
    assert json.loads(warm.stdout.splitlines()[-1])["test_accuracy"] == result["test_accuracy"]
    # `fastmlp compile` adds the few-rows prediction kernel; then it finds everything in the cache
    first = json.loads(_run(["compile", "--input-dtype", "float32", "--inputs", "2", "--hidden", "4",
                             "--outputs", "2", "--json"], cache).stdout.splitlines()[-1])
    again = json.loads(_run(["compile", "--input-dtype", "float32", "--inputs", "2", "--hidden", "4",
                             "--outputs", "2", "--json"], cache).stdout.splitlines()[-1])
    assert first["compiled"][0]["compiled"] is True and again["compiled"][0]["compiled"] is False
    assert again["cache"] and os.path.realpath(again["cache"]).startswith(os.path.realpath(cache))


def _fresh_compile_in_trainer(monkeypatch):
    """Trainer._compile also compiles a new Numba function: a cold cache, as far as the notice can tell."""
    import numba

    @numba.njit
    def fresh(x):
        return x * 3

    original = Trainer._compile

    def compiling(self, *args):
        fresh(1)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_compile", compiling)


def test_fit_verbose_prints_the_notice_before_the_first_epoch(monkeypatch, capsys):
    _fresh_compile_in_trainer(monkeypatch)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 2, 20)
    Trainer(MLP([4, 3, 2]), threads=1).fit(X, y, 1, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "compiling the kernels (once; cached for later runs) ..."
    assert lines[1].startswith("compiled in ") and lines[1].endswith(" s")
    assert lines[2].startswith("epoch 1/1")


def test_fit_quiet_or_with_its_own_report(monkeypatch, capsys):
    _fresh_compile_in_trainer(monkeypatch)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 2, 20)
    Trainer(MLP([4, 3, 2]), threads=1).fit(X, y, 1, verbose=False)
    assert capsys.readouterr().out == ""
    _fresh_compile_in_trainer(monkeypatch)
    trainer = Trainer(MLP([4, 3, 2]), threads=1)
    said = []
    trainer.compile_report = said.append
    trainer.fit(X, y, 1, verbose=False)
    assert said[0] is None and said[1] >= 0 and len(said) == 2
    assert trainer.compile_seconds >= 0


def test_trainer_compile_checks_its_arguments_and_trains_nothing():
    net = MLP([4, 3, 2])
    before = net.params.copy()
    trainer = Trainer(net, threads=1)
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 4)).astype(np.float32), rng.integers(0, 2, 20)
    assert trainer.compile(X, y, validation=(X[:4], y[:4])) >= 0
    np.testing.assert_array_equal(net.params, before)
    assert trainer.steps == 0 and trainer.epoch == 0
    with pytest.raises(ValueError, match="X"):
        trainer.compile(X[:, :3], y)
    with pytest.raises(ValueError, match="validation"):
        trainer.compile(X, y, validation=X)
