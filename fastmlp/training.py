"""Minibatch training: the epoch loop in Python, the minibatch steps in Numba.

The epoch's samples run through the kernel in chunks of whole minibatches (a few milliseconds
each), so Python regains control often enough to report progress and to stop cleanly on Ctrl-C,
while the per-step work (forward, output delta, backward, update) never returns to Python.
"""
import signal
import threading
import time

import numpy as np

from . import _checks
from ._pacer import ThreadPacer
from .errors import CheckpointError, DivergenceError
from ._buffers import (Data, OptimizerState, Results, Workspace, aligned_zeros, input_bytes, no_targets,
                       release_workspace, take_workspace, touch_pages)
from ._compile import compile_notice, printer
from ._plan import label_grouped, phase_plan
from ._threads import resolve_threads, thread_count
from .model import MLP, load_npz

# A chunk is about this many floating-point operations (a few ms at the speeds reached here), and
# at least MIN_CHUNK_SAMPLES samples: between chunks fit() backs up the parameters and the optimizer
# state and checks that the parameters are finite, a few passes over them that cost about as much
# as the arithmetic of a few samples (6 flops per weight each), and calls the kernel (its second
# thread wakes up a fraction of a millisecond late). A chunk of a large network sized by its flops
# alone holds one minibatch, and that bookkeeping then took 8-10% of the time; at 2048 samples it
# still cost 784-512-512-10 at batch 128 about 3% (benchmarks/RESULTS.md).
CHUNK_FLOPS = 1.5e9
MIN_CHUNK_SAMPLES = 4096
MAX_CHUNK_SAMPLES = 16384
HISTORY_KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_second")
# Keys of the history that hold one value for the run, not a list per epoch.
HISTORY_RUN_KEYS = ("stopped_epoch", "best_epoch")


def _new_history():
    history = {key: [] for key in HISTORY_KEYS}
    history.update({key: None for key in HISTORY_RUN_KEYS})
    return history


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during fit(handle_interrupt=True): raised after the current chunk of minibatches,
    with the trainer in a consistent state that save_checkpoint() can write and resume from."""

    def __init__(self, trainer):
        super().__init__("training interrupted")
        self.trainer = trainer


def _chunk_cost_per_sample(sizes):
    # A rough cost for sizing chunks (forward, weight gradient and delta: about 2 flops each per
    # weight), not the exact count bench.flops_per_sample reports.
    return 6 * sum(sizes[l] * sizes[l - 1] for l in range(1, len(sizes)))


class Trainer:
    """Optimizer state, data order and progress of a training run; fit() trains, and
    state_dict()/save_checkpoint() capture everything needed to resume bit-identically."""

    def __init__(self, net, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, loss="ce",
                 batch_size=32, seed=0, threads=None, beta1=0.9, beta2=0.999, eps=1e-8, comm=None):
        if not isinstance(net, MLP):
            raise ValueError(f"net: got {type(net).__name__}, expected a fastmlp.MLP")
        self.net = net
        self.optimizer = _checks.check_choice("optimizer", optimizer, _checks.OPTIMIZERS)
        self.lr = _checks.check_float("lr", lr, 0.0, strict=True)
        self.momentum = _checks.check_float("momentum", momentum, 0.0, maximum=1.0, max_strict=True)
        self.weight_decay = _checks.check_float("weight_decay", weight_decay, 0.0)
        self.beta1 = _checks.check_float("beta1", beta1, 0.0, maximum=1.0, max_strict=True)
        self.beta2 = _checks.check_float("beta2", beta2, 0.0, maximum=1.0, max_strict=True)
        self.eps = _checks.check_float("eps", eps, 0.0, strict=True)
        # weight decay on the biases too (PyTorch's default); scikit-learn's alpha spares them
        self.decay_biases = True
        _checks.check_loss_output(loss, net.output)
        self.loss = loss
        self.batch_size = _checks.check_int("batch_size", batch_size, 1)
        self.seed = _checks.check_int("seed", seed, 0)
        self.threads = resolve_threads(threads)
        n_state = net.params.size
        self.m = aligned_zeros(n_state if optimizer == "adam" else 0, net.dtype)
        self.v = aligned_zeros(n_state if optimizer in ("momentum", "nesterov", "adam") else 0, net.dtype)
        self.grads = aligned_zeros(n_state, net.dtype)
        touch_pages(self.m, self.v, self.grads)
        self.rng = np.random.default_rng(self.seed)
        self.steps = 0              # optimizer steps taken (Adam's t is steps + 1 at the next)
        self.epoch = 0              # completed epochs
        self.position = 0           # samples of the current epoch already trained on
        self.epoch_rng_state = None  # generator state before the current epoch's shuffle
        self.partial = {"loss_sum": 0.0, "correct": 0, "seconds": 0.0}
        self.history = _new_history()
        self._stop = False
        self._stop_training = False
        self.callbacks = []
        self.compile_report = None  # fit() reports a cold cache's compile with it (see fastmlp._compile)
        self._callback_states = None  # from a checkpoint, for the callbacks of the next fit()
        # comm (an mpi4py communicator): data-parallel training over its ranks (fastmlp.distributed)
        self.comm = comm
        self._dist = None
        if comm is not None:
            from .distributed import Group
            self._dist = Group(comm)

    # -- hyperparameters as the kernel takes them ------------------------------------------------

    def _hp(self):
        from . import _kernels as k
        hp = np.zeros(2 * k.HP_SIZE)
        hp[k.HP_LR] = self.lr
        hp[k.HP_MOMENTUM] = self.momentum
        hp[k.HP_WEIGHT_DECAY] = self.weight_decay
        hp[k.HP_BETA1] = self.beta1
        hp[k.HP_BETA2] = self.beta2
        hp[k.HP_EPS] = self.eps
        hp[k.HP_SIZE:] = hp[:k.HP_SIZE]  # the biases' group
        if not self.decay_biases:
            hp[k.HP_SIZE + k.HP_WEIGHT_DECAY] = 0.0
        return hp

    def _kernel_args(self):
        from . import _kernels as k
        net = self.net
        return (k.ACTIVATION_CODES[net.activation], k.ACTIVATION_CODES[net.output], k.LOSS_CODES[self.loss],
                k.OPTIMIZER_CODES[self.optimizer])

    def _steps(self, data, order, ws, losses, stats, nthreads=None, hp=None):
        """Run the minibatches of `order` (a multiple of batch_size long, or the epoch's tail) on
        `nthreads` threads (default: self.threads). Returns the number of steps completed (fewer
        when a loss was not finite). hp: the kernel's hyperparameters, one row per minibatch
        (see _kernels._drive), instead of this trainer's for every minibatch."""
        from . import _kernels as k
        net = self.net
        _, _, loss, optimizer = self._kernel_args()
        X, divisor, labels, targets, has_targets, weights, has_weights = data
        if not has_targets and k.forward_gathers(net.sizes, self.batch_size):
            # each minibatch's samples by class: the forward gather tile leaves out more zero inputs
            order = label_grouped(order, labels, self.batch_size)
        if self._dist is not None:
            return self._dist.steps(self, data, order, ws, losses, stats)
        work = ws.buffers()
        done = k._drive(phase_plan(net.sizes, "train"), k.network(net), work,
                        OptimizerState(self.grads, self.m, self.v, optimizer, self._hp() if hp is None else hp,
                                       self.steps + 1),
                        Data(*input_bytes(X), divisor, labels, targets, has_targets, weights, has_weights, loss),
                        order, self.batch_size, nthreads or self.threads,
                        Results(losses, stats, np.empty((0, net.sizes[-1]), dtype=net.dtype)))
        nsteps = -(-len(order) // self.batch_size)
        if len(order) and done == nsteps and net.activation == "relu":
            # the weight gradients of the next chunk leave out more samples (the same results)
            k.group_units(work, net.sizes, len(order) - (nsteps - 1) * self.batch_size)
        return done

    def _prepare(self, X, y, name_x="X", name_y="y", sample_weight=None, class_weight=None):
        Xc, _ = _checks.check_input(name_x, X, self.net.sizes[0], self.net.dtype)
        self.net.input_dtype = "uint8" if Xc.dtype == np.uint8 else self.net.input_dtype  # for export
        labels, targets = _checks.check_targets(name_y, y, Xc.shape[0], self.net.sizes[-1], self.loss,
                                                self.net.dtype, self.net.output)
        weights, has_weights = self._sample_weights(labels, targets, Xc.shape[0], sample_weight, class_weight)
        has_targets = targets is not None
        if targets is None:
            targets = no_targets(self.net.sizes[-1], self.net.dtype)
        Xc, divisor = self.net.inputs(Xc)
        return Xc, divisor, labels, targets, has_targets, weights, has_weights

    def _classes(self, labels, targets):
        """The class count of single-label classification (2 for one sigmoid unit), else None."""
        K, output = self.net.sizes[-1], self.net.output
        if output == "sigmoid" and K == 1:
            return 2
        if _checks.is_regression(output, K) or (targets is not None and output == "sigmoid"):
            return None
        return K

    def _sample_weights(self, labels, targets, n, sample_weight, class_weight):
        """Per-sample weights (sample_weight times the class weight of each sample's label)."""
        weights, has_weights = _checks.check_sample_weight("sample_weight", sample_weight, n)
        if class_weight is None:
            return weights, has_weights
        n_classes = self._classes(labels, targets)
        if n_classes is None:
            raise ValueError("class_weight: expected single-label classification (class labels, or one "
                             "sigmoid output with 0/1 labels), not regression or multi-label targets; use "
                             "sample_weight")
        per_class = np.ones(n_classes)
        if isinstance(class_weight, str):
            _checks.check_choice("class_weight", class_weight, ("balanced",))
            # scikit-learn's 'balanced': n_samples / (n_classes * count), over the classes present
            counts = np.bincount(labels, minlength=n_classes)
            present = counts > 0
            per_class[present] = n / (np.count_nonzero(present) * counts[present])
        elif isinstance(class_weight, dict):
            for c, w in class_weight.items():
                if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < n_classes:
                    raise ValueError(f"class_weight: got class {c!r}, expected class indices in [0, {n_classes})")
                per_class[c] = _checks.check_float(f"class_weight[{c}]", w, 0.0)
        else:
            raise ValueError(f"class_weight: got {type(class_weight).__name__}, expected None, 'balanced' or "
                             "a dict {class: weight}")
        cw = per_class[labels]
        weights = cw * weights if has_weights else cw
        if not weights.any():
            raise ValueError("class_weight: gives every sample weight 0; expected some weight > 0")
        return np.ascontiguousarray(weights, dtype=np.float64), True

    def chunk_samples(self, n):
        batch = min(self.batch_size, max(n, 1))  # a batch larger than the data is all of it
        per = max(int(CHUNK_FLOPS / _chunk_cost_per_sample(self.net.sizes)), MIN_CHUNK_SAMPLES)
        per = max(batch, min(per, MAX_CHUNK_SAMPLES) // batch * batch)
        return min(per, -(-n // batch) * batch)

    def step_batch(self, X, y, sample_weight=None):
        """One optimizer step on the mean cost over all rows of X (one minibatch; the weighted mean
        with sample_weight). Returns that mean loss, measured before the step."""
        data = self._prepare(X, y, sample_weight=sample_weight)
        n = data[0].shape[0]
        saved, self.batch_size = self.batch_size, n
        try:
            ws = Workspace(self.net.sizes, self.net.dtype, n)
            stats = np.zeros((1, 2))
            with thread_count(self.threads):
                done = self._steps(data, np.arange(n), ws, np.zeros(n), stats)
            if done < 1:
                raise DivergenceError(f"the loss is {stats[0, 0]} for this minibatch; nothing was changed",
                                      epoch=None, step=1)
            self.steps += 1
        finally:
            self.batch_size = saved
        return stats[0, 0] / (data[5].sum() if data[6] else n)

    # -- the training loop ----------------------------------------------------------------------

    def request_stop(self):
        """Ask fit() to stop after the current chunk of minibatches (raises TrainingInterrupted).
        With a communicator, every rank stops after the first chunk that ends after any rank asked."""
        if self._dist is not None:
            self._dist.stop_requested = True
        else:
            self._stop = True

    @property
    def stop_requested(self):
        """Whether a stop (Ctrl-C under handle_interrupt) was requested during the last fit(); fit()
        returns normally when it came after the last chunk (e.g. during the last epoch's callback),
        so a caller that must not ignore Ctrl-C checks this."""
        return self._stop

    def stop(self):
        """End training after the current epoch: fit() then returns the history normally (its
        stopped_epoch is that epoch). For callbacks, e.g. EarlyStopping."""
        self._stop_training = True

    def fit(self, X, y, epochs, validation=None, verbose=True, callback=None, handle_interrupt=False,
            validation_split=0.0, callbacks=None, sample_weight=None, class_weight=None):
        """Train until `epochs` epochs are complete (counting those already done); returns history.

        validation: (X_val, y_val), evaluated after each epoch (val_loss, val_accuracy); or
        validation_split=f holds out a fraction f of (X, y) instead: stratified by class for class
        labels, drawn from the seed (the same split on every call with the same seed and data).
        callbacks: fastmlp.callbacks.Callback objects (see that module); on a trainer loaded with
        from_checkpoint, give the same callbacks in the same order and they continue from their
        saved state.
        sample_weight (n,) and class_weight (None, 'balanced' or {class: weight}) weight the training
        cost: each minibatch's cost is sum_s w_s c_s / sum_s w_s, and the history's loss the same
        over the epoch (validation and accuracy are not weighted).

        callback(info) is called after each chunk of minibatches and at the end of each epoch with a
        dict: epoch (1-based), epochs, done, total (samples this epoch), loss, accuracy (running
        means), samples_per_second, end_of_epoch (bool), and at the end of an epoch its history row.
        """
        epochs = _checks.check_int("epochs", epochs, 1)
        callbacks = _check_callbacks(callbacks)
        validation_split = _checks.check_float("validation_split", validation_split, 0.0, maximum=1.0,
                                               max_strict=True)
        if validation_split > 0:
            if validation is not None:
                raise ValueError("validation, validation_split: got both, expected at most one")
            X, y, sample_weight, validation = self._split(X, y, validation_split, sample_weight)
        data = self._prepare(X, y, sample_weight=sample_weight, class_weight=class_weight)
        if self.net.output == "sigmoid" and self.net.sizes[-1] > 1:
            self.net.multilabel = data[4]  # (n, K) target rows: multi-label
        val = self._checked_validation(validation, callbacks)
        n = data[0].shape[0]
        if self.position >= n and self.position > 0:
            raise CheckpointError(f"the checkpoint's position in its epoch, {self.position} samples, is past "
                                  f"the end of the {n} training samples; resume on the data it was "
                                  f"trained on")
        chunk = self.chunk_samples(n)
        ws = take_workspace(self.net.sizes, self.net.dtype, min(self.batch_size, n), x_capacity=chunk)
        losses = np.zeros(min(self.batch_size, n))
        stats = np.zeros((chunk // min(self.batch_size, n) + 1, 2))
        # Each chunk starts by copying the parameters and optimizer state here, and ends by checking
        # that they are finite (into the last buffer): allocated once per fit, since a new copy for
        # each chunk took fresh pages from the system, each zeroed on its first write, which cost
        # more than the copy (benchmarks/RESULTS.md).
        backup = (np.empty_like(self.net.params), np.empty_like(self.m), np.empty_like(self.v),
                  np.empty(self.net.params.shape, dtype=bool))
        self._stop = False
        if self._dist is not None:
            self._dist.start(self, data)
            verbose = verbose and self._dist.rank == 0
        self._start_callbacks(callbacks)
        run = (epochs - self.epoch) * n - self.position
        self._pacer = ThreadPacer(self.threads, self.batch_size,
                                  flops=run * _chunk_cost_per_sample(self.net.sizes))
        # On a cold cache: "compiling the kernels ..." before the pause and "compiled in N s" after
        # (verbose, or compile_report: a say() of fastmlp._compile.compile_notice)
        say = self.compile_report or (printer() if verbose else None)
        with compile_notice(say):
            self.compile_seconds = self._compile(data, ws, losses, stats)
            if val is not None:
                self._compile_evaluation(val[0], val[1])
        if self._dist is not None:
            self.compile_seconds += self._dist.ready_seconds  # the CLI compiles in Group.start
        old_handler = None
        if handle_interrupt and threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        try:
            with thread_count(self.threads):
                while self.epoch < epochs and not self._stop_training:
                    self._run_epoch(data, n, chunk, ws, losses, stats, backup, epochs, val, verbose, callback)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            release_workspace(ws)
        if self._dist is not None:
            self._dist.check_same(self, "at the end of training")
        for cb in callbacks:
            cb.on_train_end()
        return self.history

    def _checked_validation(self, validation, callbacks):
        """The validation pair (X_val checked, y_val) or None, and every callback's monitored key
        checked against the history that fit will keep."""
        val = None
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise ValueError("validation: expected a pair (X_val, y_val)")
            val = (_checks.check_input("validation X", validation[0], self.net.sizes[0], self.net.dtype)[0],
                   validation[1])
            self._prepare(val[0], val[1], "validation X", "validation y")
        regression = self.net.is_regression
        available = [key for key in HISTORY_KEYS if key not in ("epoch", "seconds", "samples_per_second")
                     and (val is not None or not key.startswith("val_"))
                     and not (regression and key.endswith("accuracy"))]
        for cb in callbacks:
            key = cb.monitored()
            if key is not None and key not in available:
                hint = " (val_* keys need validation= or validation_split=)" if key.startswith("val_") else ""
                raise ValueError(f"{type(cb).__name__}: monitor {key!r} is not in the history{hint}; "
                                 f"expected one of {', '.join(map(repr, available))}")
        return val

    def _split(self, X, y, fraction, sample_weight=None):
        """(X_train, y_train, (X_val, y_val)): a fraction of the rows held out, stratified by class
        when y holds class labels (per class, round(fraction * count) rows), from the seed."""
        Xc, _ = _checks.check_input("X", X, self.net.sizes[0])
        labels, targets = _checks.check_targets("y", y, Xc.shape[0], self.net.sizes[-1], self.loss,
                                                self.net.dtype, self.net.output)
        yarr = np.asarray(y)
        n = Xc.shape[0]
        rng = np.random.default_rng([self.seed, 0x5EED])
        if yarr.ndim == 1 and self._classes(labels, targets) is not None:
            held = [rng.permutation(np.flatnonzero(labels == c))
                    for c in np.unique(labels)]
            held = np.concatenate([idx[:int(round(fraction * idx.size))] for idx in held])
        else:
            held = rng.permutation(n)[:int(round(fraction * n))]
        if held.size < 1 or held.size > n - 1:
            raise ValueError(f"validation_split: {fraction:g} holds out {held.size} of {n} samples; expected "
                             "at least 1 for validation and 1 for training")
        mask = np.zeros(n, dtype=bool)
        mask[held] = True
        held = np.flatnonzero(mask)
        keep = np.flatnonzero(~mask)
        sw = None if sample_weight is None else np.asarray(sample_weight)
        if sw is not None and sw.shape != (n,):
            raise ValueError(f"sample_weight: got shape {sw.shape}, expected ({n},), one weight per sample")
        return Xc[keep], yarr[keep], None if sw is None else sw[keep], (Xc[held], yarr[held])

    def _start_callbacks(self, callbacks):
        self._stop_training = False
        states, self._callback_states = self._callback_states, None
        if states is not None:
            # a fresh trainer from a checkpoint: the run stopped there if it had asked to
            self._stop_training = bool(states["stop_training"])
            states = states["callbacks"]
        self.callbacks = callbacks
        for i, cb in enumerate(callbacks):
            cb.set_trainer(self)
            if states is not None and i < len(states) and states[i]["class"] == type(cb).__name__:
                cb.load_state_dict(states[i]["state"])
            else:
                cb.on_train_begin()

    def compile(self, X, y, validation=None):
        """Compile (or load from Numba's cache) the kernels that fit(X, y, validation=...) runs,
        without training (X and y are checked as fit checks them). Returns the seconds it took.
        On a cold cache this is where the time goes; fit() then starts training at once."""
        if self._dist is not None:
            raise ValueError("compile: a trainer with a communicator compiles in fit() (one rank at a time)")
        data = self._prepare(X, y)
        n = min(self.batch_size, data[0].shape[0])
        ws = Workspace(self.net.sizes, self.net.dtype, n, x_capacity=1)
        t0 = time.perf_counter()
        self._compile(data, ws, np.zeros(n), np.zeros((2, 2)))
        if validation is not None:
            if not isinstance(validation, (tuple, list)) or len(validation) != 2:
                raise ValueError("validation: expected a pair (X_val, y_val)")
            self._compile_evaluation(*validation)
        return time.perf_counter() - t0

    def _compile_evaluation(self, X, y):
        """Compile (or load) the evaluation kernel for these validation data, with one of their rows."""
        Xc, _ = _checks.check_input("validation X", X, self.net.sizes[0], self.net.dtype)
        self.net.evaluate(Xc[:1], np.asarray(y)[:1], loss=self.loss, threads=self.threads)

    def _compile(self, data, ws, losses, stats):
        """Compile (or load from Numba's cache) the training kernels with a call that trains on no
        sample, so that the first epoch's time and samples/s measure training alone."""
        t0 = time.perf_counter()
        with thread_count(self.threads):
            self._steps(data, np.zeros(0, dtype=np.int64), ws, losses, stats)
        if self.net.activation == "relu":  # (_steps regroups its units after each chunk)
            from . import _kernels as k
            k.compile_group_units(self.net.dtype)
        return time.perf_counter() - t0

    def _paced_steps(self, pacer, data, order, start, chunk, ws, losses, stats, hp=None):
        """Run the minibatches of order[start:] that the pacer's next chunk holds (at most `chunk`
        samples), on the thread count it picks, whichever is faster now (see _pacer; the results
        are the same on any count), and time them for it. hp: None, or a function of the chunk's
        sample indices that gives the kernel's hyperparameter rows (see _steps). Returns (the end
        of the chunk in order, the minibatches completed, the minibatches in the chunk)."""
        import numba
        threads, size = pacer.plan(chunk)
        if self._dist is not None:
            # every rank must run the same chunks (their ends are collectives): no pacing
            threads, size = self.threads, chunk
        stop = min(start + size, len(order))
        idx = order[start:stop]
        rows = None if hp is None else hp(idx)
        numba.set_num_threads(threads)
        t0 = time.perf_counter()
        done = self._steps(data, idx, ws, losses, stats, threads, hp=rows)
        pacer.record(threads, stop - start, time.perf_counter() - t0)
        return stop, done, -(-(stop - start) // self.batch_size)

    def _run_epoch(self, data, n, chunk, ws, losses, stats, backup, epochs, val, verbose, callback):
        if self.position == 0:
            for cb in self.callbacks:
                cb.on_epoch_begin(self.epoch)
            self.lr = _checks.check_float("lr", self.lr, 0.0, strict=True)
            self.epoch_rng_state = self.rng.bit_generator.state
        else:
            self.rng.bit_generator.state = self.epoch_rng_state
        order = self.rng.permutation(n)
        while self.position < n:
            start = self.position
            t0 = time.perf_counter()
            for saved, now in zip(backup, (self.net.params, self.m, self.v)):
                np.copyto(saved, now)
            stop, done, nsteps = self._paced_steps(self._pacer, data, order, start, chunk, ws, losses, stats)
            # The loss is measured before each update, so an update that overflows the parameters
            # shows up only at the next step: check them too, before the next chunk backs them up.
            if done < nsteps or not np.isfinite(self.net.params, out=backup[3]).all():
                self._diverged(data, order[start:stop], ws, losses, stats, backup, start, done)
            self.partial["seconds"] += time.perf_counter() - t0
            loss_sum = self.partial["loss_sum"]
            for step_loss in stats[:nsteps, 0].tolist():  # step by step: the same sum wherever chunks end
                loss_sum += step_loss
            self.partial["loss_sum"] = loss_sum
            if data[6]:  # for the running mean of the progress reports
                self.partial["weight"] = (self.partial.get("weight", 0.0)
                                          + float(data[5][order[start:stop]].sum()))
            self.partial["correct"] += int(stats[:nsteps, 1].sum())
            self.steps += nsteps
            self.position = stop
            if callback is not None:
                callback(self._progress(n, epochs, False))
            if self._stop and self.position < n:
                raise TrainingInterrupted(self)
        total = float(data[5].sum()) if data[6] else n  # the epoch's weight (every sample once)
        row = {"epoch": self.epoch + 1, "loss": self.partial["loss_sum"] / total,
               "accuracy": None if self.net.is_regression else self.partial["correct"] / n,
               "val_loss": None, "val_accuracy": None,
               "lr": self.lr, "seconds": self.partial["seconds"],
               "samples_per_second": n / self.partial["seconds"] if self.partial["seconds"] > 0 else 0.0}
        if val is not None:
            row["val_loss"], row["val_accuracy"] = self.net.evaluate(val[0], val[1], loss=self.loss,
                                                                     threads=self.threads)
        for key in HISTORY_KEYS:
            self.history[key].append(row[key])
        self.epoch += 1
        self.position = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seconds": 0.0}
        # The callbacks run before the progress callback, which may save a checkpoint: it then
        # holds their new state and learning rate.
        for cb in self.callbacks:
            cb.on_epoch_end(self.epoch - 1, dict(row))
        if self._stop_training and self.epoch < epochs:
            self.history["stopped_epoch"] = self.epoch
        if verbose:
            print(format_epoch(row, epochs), flush=True)
        if callback is not None:
            info = self._progress(n, epochs, True)
            info["row"] = row
            callback(info)
        if self._stop and self.epoch < epochs:
            raise TrainingInterrupted(self)

    def _progress(self, n, epochs, end):
        done = n if end else self.position
        seen = max(done, 1)
        secs = self.partial["seconds"]
        if end:
            row = {k: self.history[k][-1] for k in HISTORY_KEYS}
            return {"epoch": row["epoch"], "epochs": epochs, "done": n, "total": n, "loss": row["loss"],
                    "accuracy": row["accuracy"], "samples_per_second": row["samples_per_second"],
                    "end_of_epoch": True}
        return {"epoch": self.epoch + 1, "epochs": epochs, "done": done, "total": n,
                "loss": self.partial["loss_sum"] / (self.partial.get("weight", seen) or seen),
                "accuracy": None if self.net.is_regression else self.partial["correct"] / seen,
                "samples_per_second": done / secs if secs > 0 else 0.0, "end_of_epoch": False}

    def _diverged(self, data, order, ws, losses, stats, backup, start, done):
        """A minibatch loss, or the parameters after an update, became NaN or inf: put back the last
        finite parameters (replaying the chunk from its backup when needed) and raise."""
        finite = np.isfinite(self.net.params).all()
        if finite:
            what = f"the loss became {stats[done, 0]}"
            step = done + 1
        else:
            # Update number `done` (1-based in this chunk) made the parameters non-finite.
            what = "the parameters became NaN or infinite"
            step = done
            self.net.params[...], self.m[...], self.v[...] = backup[:3]
            if done > 1:
                self._steps(data, order[:(done - 1) * self.batch_size], ws, losses, stats)
            if not np.isfinite(self.net.params).all():
                self.net.params[...], self.m[...], self.v[...] = backup[:3]
        step += start // self.batch_size
        raise DivergenceError(
            f"training diverged: {what} at epoch {self.epoch + 1}, step {step}; the model keeps its last "
            f"finite parameters; {self._divergence_advice(data)}",
            epoch=self.epoch + 1, step=step)

    def _divergence_advice(self, data):
        """What to change: the inputs' scale, the weight decay, or the learning rate."""
        X = data[0]
        top = float(np.abs(X).max()) / data[1] if X.size and X.dtype.kind == "f" else 1.0
        if top > 1e4:
            return (f"the inputs reach {top:.3g}: scale them (e.g. to [0, 1] or unit variance) before "
                    f"training")
        if self.weight_decay * self.lr >= 1.0:
            return (f"lr * weight decay is {self.lr * self.weight_decay:g} (each step multiplies the weights "
                    f"by 1 - lr * weight_decay): use a weight decay below {1.0 / self.lr:g}")
        return f"try a lower learning rate than {self.lr:g}"

    # -- checkpoints ----------------------------------------------------------------------------

    def state_dict(self):
        """(metadata dict, arrays dict): everything, besides the network, needed to resume."""
        meta = {"optimizer": self.optimizer, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "loss": self.loss, "batch_size": self.batch_size, "seed": self.seed, "steps": self.steps,
                "epoch": self.epoch, "position": self.position,
                "epoch_rng_state": self.epoch_rng_state, "rng_state": self.rng.bit_generator.state,
                "partial": self.partial, "history": self.history, "stop_training": self._stop_training}
        arrays = {"optimizer_m": self.m, "optimizer_v": self.v}
        cb_states = []
        for i, cb in enumerate(self.callbacks):
            state = {}
            for key, value in cb.state_dict().items():
                if isinstance(value, np.ndarray):
                    arrays[f"callback{i}_{key}"] = value
                    state[key] = {"array": f"callback{i}_{key}"}
                else:
                    state[key] = value
            cb_states.append({"class": type(cb).__name__, "state": state})
        meta["callbacks"] = cb_states
        return meta, arrays

    def save_checkpoint(self, path, extra_meta=None):
        """The network plus the training state in one .npz, written atomically. With a
        communicator, rank 0 alone writes (the state is the same on every rank)."""
        meta, arrays = self.state_dict()
        if self._dist is not None:
            if self._dist.rank != 0:
                return
            meta["world_size"] = self._dist.size
        full = {"training": meta}
        full.update(extra_meta or {})
        self.net.save(path, extra_arrays=arrays, extra_meta=full)

    @classmethod
    def from_checkpoint(cls, path, threads=None, comm=None):
        """(trainer, metadata): a trainer that continues the run saved in `path` (with any number
        of ranks, whatever world_size wrote it)."""
        net, meta, arrays = load_npz(path)
        state = meta.get("training")
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: holds a model but no training state; expected a checkpoint "
                                  "written by `fastmlp train --save` or Trainer.save_checkpoint")
        try:
            trainer = cls(net, optimizer=state["optimizer"], lr=state["lr"], momentum=state["momentum"],
                          weight_decay=state["weight_decay"], loss=state["loss"],
                          batch_size=state["batch_size"], seed=state["seed"], threads=threads,
                          beta1=state["beta1"], beta2=state["beta2"], eps=state["eps"], comm=comm)
            for name in ("m", "v"):
                arr = arrays.get(f"optimizer_{name}")
                own = getattr(trainer, name)
                if arr is None or arr.shape != own.shape or arr.dtype != own.dtype:
                    got = None if arr is None else (arr.shape, str(arr.dtype))
                    raise CheckpointError(f"{path}: optimizer state {name} is {got}, expected "
                                          f"{(own.shape, str(own.dtype))}")
                own[...] = arr
            trainer.steps = int(state["steps"])
            trainer.epoch = int(state["epoch"])
            trainer.position = int(state["position"])
            trainer.epoch_rng_state = state["epoch_rng_state"]
            trainer.rng.bit_generator.state = state["rng_state"]
            trainer.partial = {"loss_sum": float(state["partial"]["loss_sum"]),
                               "correct": int(state["partial"]["correct"]),
                               "seconds": float(state["partial"]["seconds"])}
            if "weight" in state["partial"]:
                trainer.partial["weight"] = float(state["partial"]["weight"])
            hist = state["history"]
            trainer.history = {key: list(hist[key]) if key in hist else [None] * len(hist["epoch"])
                               for key in HISTORY_KEYS}
            trainer.history.update({key: hist.get(key) for key in HISTORY_RUN_KEYS})
            cb_states = []
            for entry in state.get("callbacks", []):
                cb_state = {}
                for key, value in entry["state"].items():
                    if isinstance(value, dict) and set(value) == {"array"}:
                        if value["array"] not in arrays:
                            raise CheckpointError(f"{path}: callback state array {value['array']} is missing")
                        value = arrays[value["array"]]
                    cb_state[key] = value
                cb_states.append({"class": str(entry["class"]), "state": cb_state})
            trainer._callback_states = {"stop_training": bool(state.get("stop_training", False)),
                                        "callbacks": cb_states}
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad training state in the checkpoint ({type(e).__name__}: {e})") \
                from None
        return trainer, meta


def _check_callbacks(callbacks):
    from .callbacks import Callback
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"callbacks: got {type(callbacks).__name__}, expected a list of "
                         "fastmlp.callbacks.Callback objects")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise ValueError(f"callbacks[{i}]: got {type(cb).__name__}, expected a fastmlp.callbacks.Callback")
    return list(callbacks)


def format_epoch(row, epochs):
    text = f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}"
    if row.get("accuracy") is not None:
        text += f"  accuracy {100 * row['accuracy']:.2f}%"
    if row.get("val_loss") is not None:
        text += f"  val_loss {row['val_loss']:.4f}"
    if row.get("val_accuracy") is not None:
        text += f"  val_accuracy {100 * row['val_accuracy']:.2f}%"
    text += f"  {row['seconds']:.2f} s  {row['samples_per_second']:,.0f} samples/s"
    return text


def train(net, X, y, epochs=10, batch_size=32, lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=0.0,
          loss="ce", seed=0, threads=None, validation=None, verbose=True, callback=None, validation_split=0.0,
          callbacks=None, sample_weight=None, class_weight=None, comm=None):
    """Train `net` in place with minibatch gradient descent; returns the history, a dict of
    per-epoch lists: epoch, loss, accuracy, val_loss, val_accuracy, lr (the learning rate of the
    epoch), seconds, samples_per_second; and stopped_epoch (the epoch after which a callback
    stopped training, None when it ran to the end) and best_epoch (EarlyStopping's best epoch,
    else None), both counted from 1 like history['epoch'].

    validation=(X_val, y_val), or validation_split=f to hold out a fraction of (X, y) (stratified
    by class, from the seed). callbacks: see fastmlp.callbacks (EarlyStopping, ReduceLROnPlateau,
    LearningRateScheduler, ModelCheckpoint, CSVLogger).

    loss: 'ce' (softmax outputs), 'mse', or 'bce' (binary cross-entropy, sigmoid outputs: one unit
    with y (n,) of 0/1 for binary classification, K units with y (n, K) of 0/1 for multi-label).
    One identity output with a 1-D float y is regression (accuracy None). sample_weight (n,) and
    class_weight (None, 'balanced': n / (n_classes * count), or {class: weight}) make the cost the
    weighted mean of the per-sample losses.

    optimizer: 'sgd' (W -= lr (g + weight_decay W); momentum is ignored), 'momentum'
    (v = momentum v + g; W -= lr v), 'nesterov' (v = momentum v + g; W -= lr (g + momentum v))
    or 'adam' (PyTorch's Adam, betas 0.9/0.999, eps 1e-8).
    The data are shuffled every epoch from `seed`; X may be float32, float64 or uint8 (pixels,
    scaled by 1/255). The same seed and thread count give bit-identical results.
    A NaN or infinite loss raises DivergenceError naming the epoch and step; the network keeps its
    last finite parameters.
    With comm (e.g. mpi4py's MPI.COMM_WORLD, every rank calling train alike on the same data), the
    ranks share each minibatch and the result equals one process's (fastmlp.distributed); only
    rank 0 prints.
    """
    trainer = Trainer(net, optimizer=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                      loss=loss, batch_size=batch_size, seed=seed, threads=threads, comm=comm)
    return trainer.fit(X, y, epochs, validation=validation, verbose=verbose, callback=callback,
                       validation_split=validation_split, callbacks=callbacks, sample_weight=sample_weight,
                       class_weight=class_weight)
