"""Compiling the kernels: saying so when it happens, and doing it ahead of use.

The kernels are compiled by Numba on their first call for each combination of argument types and
cached on disk (cache=True): a first run on a cold cache spends seconds compiling, every later run
loads the machine code in milliseconds. compile_notice tells the user when the slow case happens;
warm_up compiles (or loads) every kernel a configuration uses, without data (`fastmlp compile`);
prefetch compiles the driver's kernels in another process while this one does other work.
"""
import os
import subprocess
import sys
import time

COMPILING = "compiling the kernels (once; cached for later runs) ..."


def compiled_in(seconds):
    return f"compiled in {seconds:.1f} s"


class compile_notice:
    """Context manager around work that may call kernels for the first time.

    When Numba starts compiling anything inside the block, say(None) is called at that moment
    (once), and say(seconds) when the block ends, seconds being its wall time. Code Numba loads
    from its cache does not count: nothing is said on a warm cache. The detection is Numba's
    "numba:compile" event, which Numba sends when it compiles and not when it loads from the cache.
    say=None: say nothing. After the block, `compiled` tells whether anything compiled and
    `seconds` how long the block took.
    """

    def __init__(self, say=None):
        self.say = say
        self.compiled = False
        self.seconds = 0.0
        self._listener = None

    def __enter__(self):
        self._t0 = time.perf_counter()
        try:
            from numba.core import event
        except ImportError:  # pragma: no cover - a Numba without the event API: just no notice
            return self
        notice = self

        class _Listener(event.Listener):
            def on_start(self, ev):
                if not notice.compiled:
                    notice.compiled = True
                    if notice.say is not None:
                        notice.say(None)

            def on_end(self, ev):
                pass

        self._listener = _Listener()
        event.register("numba:compile", self._listener)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.seconds = time.perf_counter() - self._t0
        if self._listener is not None:
            from numba.core import event
            event.unregister("numba:compile", self._listener)
            self._listener = None
        if self.compiled and exc_type is None and self.say is not None:
            self.say(self.seconds)
        return False


def printer(stream=None):
    """A say() for compile_notice that prints the two lines to `stream` (default: stdout)."""
    import sys

    def say(seconds):
        print(COMPILING if seconds is None else compiled_in(seconds), file=stream or sys.stdout, flush=True)

    return say


def warm_up(sizes, activation="relu", output="softmax", loss="ce", optimizer="sgd", dtype="float32",
            input_dtype="uint8", threads=None):
    """Compile (or load from the cache) the kernels that training, evaluating and predicting with
    this configuration use: a training call on no sample, an evaluation of one row, a forward of
    one row (the few-rows path) and of a few hundred rows (the general path). The data are zeros of
    input_dtype; y class labels (ce) or 0/1 target rows (mse, bce). Returns (compiled: bool, seconds)."""
    import numpy as np

    from .model import MLP
    from .training import Trainer
    net = MLP(sizes, activation=activation, output=output, dtype=dtype, seed=0)
    trainer = Trainer(net, optimizer=optimizer, loss=loss, threads=threads)
    X = np.zeros((2, sizes[0]), dtype=input_dtype)
    K = sizes[-1]
    if loss == "ce":
        y = np.zeros(2, dtype=np.int64)
    elif output == "sigmoid" and K == 1:
        y = np.zeros(2, dtype=np.int64)
    elif output == "identity" and K == 1:
        y = np.zeros(2)
    else:
        y = np.zeros((2, K))
    with compile_notice() as notice:
        proc = prefetch(dtype)  # the kernels in a second process while this one compiles the driver
        trainer.compile(X, y)
        net.evaluate(X[:1], y[:1], loss=loss, threads=threads)
        net.forward(X[:1], threads=threads)
        net.forward(np.zeros((_general_rows(net), sizes[0]), dtype=input_dtype), threads=threads)
        if proc is not None:
            proc.wait()
            notice.compiled = True  # (what that process compiled is not seen here)
    return notice.compiled, notice.seconds


def _general_rows(net):
    """Enough rows for forward() to take the general (parallel) path."""
    from .model import SERIAL_WORK
    return max(2, -(-SERIAL_WORK // net.params.shape[0]))


def prefetch(dtype="float32"):
    """On a cold cache, start compiling the kernels that the driver calls (fastmlp._kernels.kernels)
    for a network of `dtype` in a new process, into the same Numba cache, and return that process
    (None when they are all cached already, or the process could not be started).

    Numba compiles on the calling thread and holds a lock while it does, so one process compiles on
    one core. The driver and the kernels it calls are compiled apart (it calls them through their
    addresses), so this process can meanwhile load or generate its data and compile the driver, and
    then load the kernels from the cache: the first call of a kernel here waits for that process
    first. So does any other compilation of a function of fastmlp._kernels here, other than the
    driver's own (Numba's cache gives each function one index file, and two processes adding
    different signatures to the same index at once could pair one's entry with the other's code).
    """
    from . import _kernels as k

    refs = k.kernels(dtype)
    if all(ref.cached() for ref in refs):
        return None
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from fastmlp._compile import _compile_kernels; _compile_kernels(sys.argv[1])"
    try:
        proc = subprocess.Popen([sys.executable, "-c", code, str(dtype)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:  # pragma: no cover - no process to start: compile here, as without prefetch
        return None
    _wait_before_compiling(proc)
    return proc


def _compile_kernels(dtype):
    """The prefetch process: compile the driver's kernels for dtype into the cache."""
    from . import _kernels as k
    for ref in k.kernels(dtype):
        ref.compile()


def _wait_before_compiling(proc):
    """Until proc ends, make this process wait for it before it compiles a kernel (see prefetch)."""
    from numba.core import event

    from . import _kernels as k

    def wait(unregister=True):
        if proc.returncode is None:
            proc.wait()
        if unregister and wait in k._before_kernels:
            # (not from inside the listener: Numba is then iterating over the listeners)
            k._before_kernels.remove(wait)
            event.unregister("numba:compile", listener)

    class _Listener(event.Listener):
        # a compilation here that is not the driver's own (the driver and the functions it calls
        # directly, compiled inside it) waits for the prefetch process
        depth = 0
        driver = False

        def on_start(self, ev):
            f = ev.data["dispatcher"].py_func
            if self.depth == 0:
                self.driver = f is k._drive_plan.py_func
            self.depth += 1
            if not self.driver and f.__module__ == k.__name__:
                wait(unregister=False)

        def on_end(self, ev):
            self.depth -= 1

    listener = _Listener()
    event.register("numba:compile", listener)
    k._before_kernels.append(wait)
