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
from collections import namedtuple

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
        proc = prefetch(dtype, sizes)  # the kernels in a second process while this one compiles the driver
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


def prefetch(dtype="float32", sizes=None):
    """On a cold cache, start compiling the kernels that the driver calls for a network of `dtype`
    and layer `sizes` (fastmlp._kernels.network_kernels; a size not known yet may be 0; None: the
    kernels of any network) in a new process, into the same Numba cache, and return that process
    (None when they are all cached already, or the process could not be started).

    Numba compiles on the calling thread and holds a lock while it does, so one process compiles on
    one core. The driver and the kernels it calls are compiled apart (it calls them through their
    addresses), so this process can meanwhile load or generate its data and compile the driver.
    Then, at the first call of a kernel here, it compiles its share of the kernels the other process
    has not started yet: the two take the kernel groups (kernel_groups) from opposite ends of the
    list, each group under a lock (compile_groups), and this one waits for the group the other is
    compiling and loads it from the cache. Any other compilation of a function of fastmlp._kernels
    here, other than the driver's own, waits for that as well (Numba's cache gives each function one
    index file, and two processes adding entries to the same index at once could pair one's entry
    with the other's code).
    """
    from . import _kernels as k

    micro = (True, True) if sizes is None else k.micro_layers(tuple(sizes))
    refs = k.kernels(dtype, *micro)
    if all(ref.cached() for ref in refs):
        return None
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from fastmlp._compile import _compile_kernels; _compile_kernels(*sys.argv[1:])"
    try:
        flags = [str(int(m)) for m in micro]
        proc = subprocess.Popen([sys.executable, "-c", code, str(dtype), *flags], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:  # pragma: no cover - no process to start: compile here, as without prefetch
        return None
    _wait_before_compiling(proc, dtype, micro)
    return proc


def _compile_kernels(dtype, forward_micro="1", delta_micro="1"):
    """The prefetch process: compile the driver's kernels for dtype (with the micro-kernels named
    "1") into the cache, from the front of the list of groups (the process that started it takes
    them from the back)."""
    from . import _kernels as k
    micro = (forward_micro == "1", delta_micro == "1")
    try:
        compile_groups(kernel_groups(dtype, micro))
    except _NO_LOCKS:  # no lock files: all of them (the other process then waits for this one)
        for ref in k.kernels(dtype, *micro):
            ref.build()


# ------------------------------------------------------------------------- sharing the kernels
# What two processes may compile at once: functions whose cache=True indexes they cannot both write.

KernelGroup = namedtuple("KernelGroup", "name refs functions lock")

# compile_groups cannot lock: no flock (not POSIX), or no lock file in the cache directory
_NO_LOCKS = (ImportError, OSError)


def cached_functions(dispatcher):
    """The names ("module.qualname") of the functions with an on-disk cache (Numba's cache=True)
    that compiling `dispatcher` may compile: itself and, transitively, the Numba functions its code
    names as globals (inlined helpers are followed but have no cache of their own). A superset:
    a function named on a path never taken counts too. (Kernels handed over as first-class
    functions, e.g. the driver's `kern.update`, are attributes, not globals: not compiled there.)"""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    found, seen, todo = set(), set(), [dispatcher]
    while todo:
        d = todo.pop()
        if id(d) in seen:
            continue
        seen.add(id(d))
        f = d.py_func
        if not isinstance(d._cache, NullCache):
            found.add(f"{f.__module__}.{f.__qualname__}")
        values = [f.__globals__.get(name) for name in _code_names(f.__code__)]
        values += [cell.cell_contents for cell in f.__closure__ or ()]
        todo.extend(v for v in values if isinstance(v, Dispatcher))
    return found


def _code_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def kernel_groups(dtype, micro=(True, True)):
    """The driver's kernels (fastmlp._kernels.kernels(dtype, *micro)) as KernelGroups that two processes may
    compile at the same time, one group each: kernels whose cached_functions meet (e.g. two that
    call the same cached helper) share a group. In the order of their first kernel in the list;
    each group's lock is a file beside the cache of its first kernel's function."""
    from . import _kernels as k

    refs = list(k.kernels(dtype, *micro))
    groups = []  # [refs, functions]
    for ref in refs:
        group = [[ref], cached_functions(ref.dispatcher)]
        for other in [g for g in groups if g[1] & group[1]]:
            groups.remove(other)
            group = [other[0] + group[0], other[1] | group[1]]
        groups.append(group)
    out = []
    for members, functions in sorted(groups, key=lambda g: min(refs.index(r) for r in g[0])):
        members = sorted(members, key=refs.index)
        first = members[0].dispatcher
        name = first.py_func.__qualname__
        lock = os.path.join(first._cache._cache_path, f"fastmlp-compile-{first.py_func.__module__}.{name}.lock")
        out.append(KernelGroup(name, tuple(members), frozenset(functions), lock))
    return out


def compile_groups(groups, reverse=False):
    """Compile into Numba's cache the kernels of `groups` (KernelGroups) that it lacks, while another
    process may do the same, from the same or the other end of the list (reverse=True: from the
    back). A process compiles a group's kernels only while it holds the group's lock (flock on its
    lock file: released however its holder ends, even killed): a group another process holds is
    passed over and, when every other group is done, waited for (then found in the cache, or
    compiled here if that process ended first). So no function of two groups, and no group, is ever
    compiled by two processes at once. Returns the KernelGroups compiled (in part) here.
    Raises ImportError or OSError (_NO_LOCKS) when it cannot lock: no flock, no lock file (then
    before compiling anything), or a file system that refuses flock."""
    import fcntl

    order = list(groups)[::-1] if reverse else list(groups)
    fds = []
    try:
        for group in order:
            os.makedirs(os.path.dirname(group.lock), exist_ok=True)
            fds.append(os.open(group.lock, os.O_RDWR | os.O_CREAT, 0o666))
        built, later = [], []
        for group, fd in zip(order, fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process compiles it: see to it at the end
                later.append((group, fd))
                continue
            if _build(group):
                built.append(group)
            fcntl.flock(fd, fcntl.LOCK_UN)
        for group, fd in later:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _build(group):
                built.append(group)
            fcntl.flock(fd, fcntl.LOCK_UN)
        return built
    finally:
        for fd in fds:
            os.close(fd)


def _build(group):
    """Compile the group's kernels that the cache lacks (the caller holds its lock); whether any."""
    missing = [ref for ref in group.refs if not ref.cached()]
    for ref in missing:
        ref.build()
    return bool(missing)


def _wait_before_compiling(proc, dtype, micro):
    """Until proc ends, make this process take its share of the kernels (compile_groups from the
    back), then wait for proc, before it compiles or loads a kernel (see prefetch)."""
    from numba.core import event

    from . import _kernels as k

    state = {"shared": False, "sharing": False}  # sharing: while this process compiles its share

    def wait(unregister=True):
        if proc.poll() is None and not state["shared"]:
            state.update(shared=True, sharing=True)
            try:
                compile_groups(kernel_groups(dtype, micro), reverse=True)
            except _NO_LOCKS:  # then the other process compiles them all
                pass
            finally:
                state["sharing"] = False
        if proc.returncode is None:
            proc.wait()
        if unregister and wait in k._before_kernels:
            # (not from inside the listener: Numba is then iterating over the listeners)
            k._before_kernels.remove(wait)
            event.unregister("numba:compile", listener)

    class _Listener(event.Listener):
        # a compilation here that is not the driver's own (the driver and the functions it calls
        # directly, compiled inside it) nor this process's share of the kernels waits for the
        # prefetch process
        depth = 0
        driver = False

        def on_start(self, ev):
            f = ev.data["dispatcher"].py_func
            if self.depth == 0:
                self.driver = f is k._drive_plan.py_func
            self.depth += 1
            if not self.driver and not state["sharing"] and f.__module__ == k.__name__:
                wait(unregister=False)

        def on_end(self, ev):
            self.depth -= 1

    listener = _Listener()
    event.register("numba:compile", listener)
    k._before_kernels.append(wait)
