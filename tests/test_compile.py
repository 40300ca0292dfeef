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
import json, sys
from numba.core import event
from numba.core.registry import CPUDispatcher
from fastmlp import cli, _kernels, _synthetic
here = set()
stack, inside = [], {}  # inside: the fastmlp functions compiled within each top-level compilation
class Compiled(event.Listener):
    def on_start(self, ev):
        f = ev.data["dispatcher"].py_func
        here.add(f.__name__)
        name = f"{f.__module__}.{f.__qualname__}"
        if stack and name.startswith("fastmlp."):
            inside[stack[0]].add(name)
        stack.append(name)
        inside.setdefault(stack[0], {stack[0]})
    def on_end(self, ev):
        stack.pop()
event.register("numba:compile", Compiled())
try:
    cli.main(sys.argv[1:], prog_name="fastmlp", standalone_mode=False)
except SystemExit as e:
    assert not e.code, e.code
literal = [f"{mod.__name__}.{name}: {sig}" for mod in (_kernels, _synthetic) for name, d in vars(mod).items()
           if isinstance(d, CPUDispatcher) for sig in d.signatures if "Literal" in str(sig)]
print("LITERAL", literal)
# (the kernels of this network: xor, 2 inputs, 4 hidden units, 2 classes; the prefetch process,
# which knows only the hidden layers, picks the same ones)
micro = _kernels.micro_layers((2, 4, 2))
assert micro == _kernels.micro_layers((0, 4, 0))
refs = _kernels.kernels("float32", *micro)
from fastmlp._compile import kernel_groups
groups = [[r.dispatcher.py_func.__name__ for r in g.refs] for g in kernel_groups("float32", micro)]
print("GROUPS", json.dumps(groups))
# what compiling a group's kernels here compiled is in the group's functions (the static analysis)
for g in kernel_groups("float32", micro):
    for r in g.refs:
        f = r.dispatcher.py_func
        assert inside.get(f"{f.__module__}.{f.__qualname__}", set()) <= g.functions, (g, inside)
from fastmlp._compile import cached_functions
assert inside["fastmlp._kernels._drive_plan"] <= cached_functions(_kernels._drive_plan), inside
print("KERNELS", json.dumps(sorted(here & {r.dispatcher.py_func.__name__ for r in refs}), separators=(",", ":")),
      all(r.cached() for r in refs), "_drive_plan" in here)
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
    assert out[-3] == "LITERAL []"                          # nothing compiled for a literal argument
    # the driver was compiled here, its kernels into the cache by the second process (_compile.prefetch)
    # from the front of the list of groups and by this one, once its driver was compiled, from the back:
    # whole groups, and those compiled here are the last ones
    *_, kernels, cached, driver = out[-1].split()
    assert out[-1].startswith("KERNELS ") and cached == "True" and driver == "True"
    groups = json.loads(out[-2][len("GROUPS "):])
    here = set(json.loads(kernels))
    taken = [g for g in groups if here & set(g)]
    assert all(set(g) <= here for g in taken) and groups[len(groups) - len(taken):] == taken
    result = json.loads(out[-4])
    assert result["compile_seconds"] > 0 and "compil" not in out[-4].replace("compile_seconds", "")
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


# ------------------------------------------------------------------------- sharing the kernels between processes
def test_kernel_groups_share_no_cached_function_with_each_other_or_the_driver():
    from fastmlp import _kernels
    for dtype in ("float32", "float64"):
        groups = _compile.kernel_groups(dtype)
        refs = list(_kernels.kernels(dtype))
        flat = [r for g in groups for r in g.refs]
        assert len(flat) == len(refs) and sorted(flat, key=refs.index) == refs          # each kernel once
        names = [[r.dispatcher.py_func.__name__ for r in g.refs] for g in groups]
        # _dense_forward_block, _output_samples and _output_activation all call the cached _activate;
        # _delta_backward_cols and _sum_partials the cached sigma' of each activation
        assert names == [["_gather_range"], ["_dense_forward_block", "_output_samples", "_output_activation"],
                         ["_weight_grad_block"], ["_delta_backward_cols", "_sum_partials"], ["_update_range"]]
        # the kernels of a network that takes no micro-kernel (_kernels.micro_layers)
        without = _compile.kernel_groups(dtype, (False, False))
        assert [[r.dispatcher.py_func.__name__ for r in g.refs] for g in without] == [
            ["_gather_range"], ["_dense_forward_loops", "_output_samples", "_output_activation"],
            ["_weight_grad_block"], ["_delta_backward_tiles", "_sum_partials"], ["_update_range"]]
        # (the full kernels call the ones without the micro-kernel, in their own groups)
        assert {"fastmlp._kernels._dense_forward_loops"} <= groups[1].functions
        assert {"fastmlp._kernels._delta_backward_tiles"} <= groups[3].functions
        driver = _compile.cached_functions(_kernels._drive_plan)
        for i, g in enumerate(groups):
            assert not g.functions & driver
            assert all(not g.functions & other.functions for other in groups[i + 1:])
        assert len({g.lock for g in groups}) == len(groups)
    out = _compile.cached_functions(_kernels._output_samples)
    assert {"fastmlp._kernels._activate", "fastmlp._kernels._softmax_row",
            "fastmlp._kernels._output_activation"} <= out and "fastmlp._kernels._dense_forward_block" not in out
    assert "fastmlp._kernels._argmax" not in out  # (inlined into _output_samples, through _is_correct)
    # inlined helpers (no cache of their own) are followed, not listed; the kernels the driver calls
    # through their addresses are not compiled with it
    assert "fastmlp._kernels._rows" in driver and "fastmlp._kernels._layer_forward" not in driver
    assert "fastmlp._kernels._update_range" not in driver


class FakeKernel:
    def __init__(self, name, log, on_build=None):
        self.name, self.log, self.on_build, self.done = name, log, on_build, False

    def cached(self):
        return self.done

    def build(self):
        self.log.append(self.name)
        if self.on_build:
            self.on_build()
        self.done = True


def fake_groups(tmp_path, log, hooks=None):
    hooks = hooks or {}
    return [_compile.KernelGroup(f"g{i}", (FakeKernel(f"g{i}", log, hooks.get(i)),), frozenset(),
                                 str(tmp_path / "locks" / f"g{i}.lock")) for i in range(5)]


def test_compile_groups_two_workers_from_both_ends_build_each_group_once(tmp_path):
    import threading
    log = []
    started = threading.Event()
    # the second worker starts once the first is in its first group, and the first stays there until
    # the second has built its own first one
    inside = threading.Event()
    groups = fake_groups(tmp_path, log, {0: lambda: inside.set() or started.wait(60), 4: started.set})
    results = {}
    front = threading.Thread(target=lambda: results.update(front=_compile.compile_groups(groups)))
    front.start()
    assert inside.wait(60)
    back = _compile.compile_groups(groups, reverse=True)
    front.join()
    assert sorted(log) == [f"g{i}" for i in range(5)]                    # each group built once
    assert all(k.done for g in groups for k in g.refs)
    mine, theirs = [g.name for g in back], [g.name for g in results["front"]]
    assert mine and theirs and not set(mine) & set(theirs)
    assert theirs[0] == "g0" and mine[0] == "g4"


def test_compile_groups_waits_for_a_held_group_and_builds_it_if_its_holder_left_it_undone(tmp_path):
    import fcntl
    log = []
    holder = None

    def release():  # the holder ends (without building g2) while this process builds its last group
        fcntl.flock(holder, fcntl.LOCK_UN)

    groups = fake_groups(tmp_path, log, {0: release})
    os.makedirs(tmp_path / "locks")
    holder = os.open(groups[2].lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        built = _compile.compile_groups(groups, reverse=True)
    finally:
        os.close(holder)
    assert log == ["g4", "g3", "g1", "g0", "g2"]                          # g2 passed over, then waited for
    assert [g.name for g in built] == log
    # all in the cache: nothing to build, nothing waited for
    assert _compile.compile_groups(groups) == [] and len(log) == 5


def test_compile_groups_without_a_lock_directory_builds_nothing(tmp_path):
    log = []
    (tmp_path / "locks").write_text("a file, not a directory")
    with pytest.raises(OSError):
        _compile.compile_groups(fake_groups(tmp_path, log))
    assert log == []
