"""The multilayer perceptron: parameters in one flat buffer, W^l and b^l as views into it."""
import json
import os

import numpy as np

from . import _checks
from ._buffers import (INPUT_CODES, Data, OptimizerState, Results, aligned_empty, aligned_zeros, input_bytes,
                       input_divisor, layout, no_targets, read_only, release_workspace, take_workspace)
from ._plan import phase_plan
from ._threads import resolve_threads, thread_count
from ._files import atomic_savez
from .errors import CheckpointError

FORMAT_VERSION = 1
EVAL_BATCH = 1024
# Below this many multiply-adds (rows x parameters) forward/predict/loss run on the calling thread.
SERIAL_WORK = 1_000_000


_KERNELS = []
# the kernels' code of an input dtype (_buffers.INPUT_CODES) by its character: cheaper than by the dtype
_XCODE = {np.dtype(d).char: c for d, c in INPUT_CODES.items()}


def _kernels():
    """fastmlp._kernels, imported on first use (importing fastmlp imports no Numba)."""
    if not _KERNELS:
        from . import _kernels as k
        _KERNELS.append(k)
    return _KERNELS[0]


def _check_sizes(sizes, dtype="float32"):
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 4
    return _checks.check_sizes(sizes, itemsize)


class MLP:
    """A multilayer perceptron z^l = W^l a^{l-1} + b^l, a^l = sigma(z^l), output a^L.

    MLP([784, 100, 10], activation="relu", output="softmax", dtype="float32", seed=0)

    activation: hidden layers, one of 'relu', 'sigmoid', 'tanh', 'identity'.
    output: 'softmax', 'sigmoid' or 'identity'.
    Weights are drawn from the seed: He normal (std sqrt(2 / N_{l-1})) for layers followed by ReLU,
    Glorot uniform (limit sqrt(6 / (N_{l-1} + N_l))) otherwise; biases start at zero.

    input_mean, input_scale: feature standardisation kept with the network (saved and loaded with
    it): the network computes on (x - input_mean) / input_scale, where x is a raw input row (uint8
    rows divided by 255 first), so that forward, predict and evaluate take raw rows. Both float
    arrays of shape (N_0,), or both None (no standardisation); e.g. X.mean(0) and X.std(0) with 1
    where the std is 0.

    Outputs: one sigmoid unit is a binary classifier (predict: 1 where the output is > 0.5); K
    sigmoid units trained on (n, K) 0/1 targets are multi-label (`multilabel` becomes True and
    predict returns the (n, K) 0/1 matrix); one identity unit is a regressor (predict returns the
    (n,) values); otherwise predict is the argmax.
    """

    def __init__(self, sizes, activation="relu", output="softmax", dtype="float32", seed=0, input_mean=None,
                 input_scale=None):
        sizes = _check_sizes(sizes, dtype)
        self._setup(sizes, activation, output, dtype)
        self.input_mean, self.input_scale = _checks.check_standardization(input_mean, input_scale, sizes[0])
        if seed is not None:
            _checks.check_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        for l in range(1, len(sizes)):
            fan_in, fan_out = sizes[l - 1], sizes[l]
            if activation == "relu" and l < len(sizes) - 1:
                W = rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)
            else:
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                W = rng.uniform(-limit, limit, (fan_out, fan_in))
            self._W[l - 1][...] = W

    def _setup(self, sizes, activation, output, dtype):
        self.activation = _checks.check_choice("activation", activation, _checks.HIDDEN_ACTIVATIONS)
        self.output = _checks.check_choice("output", output, _checks.OUTPUTS)
        self.dtype = _checks.check_dtype(dtype)
        self.sizes = list(sizes)
        self.input_mean = self.input_scale = None
        self.multilabel = False
        self.input_dtype = None  # "uint8" once trained on pixels (scaled by 1/255), for export
        self.w_off, self.b_off, n_params = layout(sizes)
        self.sizes_array = np.array(sizes, dtype=np.int64)
        self.params = aligned_zeros(n_params, self.dtype)
        self._point_views()

    def _point_views(self):
        # W^l and b^l as views of the flat parameters (llm.c's malloc_and_point_parameters)
        sizes, L = self.sizes, len(self.sizes) - 1
        self._W = [self.params[self.w_off[l]:self.w_off[l] + sizes[l] * sizes[l - 1]]
                   .reshape(sizes[l], sizes[l - 1]) for l in range(1, L + 1)]
        self._b = [self.params[self.b_off[l]:self.b_off[l] + sizes[l]] for l in range(1, L + 1)]

    def __getstate__(self):
        # pickle and copy.deepcopy copy each array on its own, so the views would come back as
        # copies that training no longer updates: they are rebuilt from the parameters instead
        state = self.__dict__.copy()
        del state["_W"], state["_b"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        params = self.params
        self.params = aligned_zeros(params.shape, params.dtype)
        self.params[...] = params
        self._point_views()

    @classmethod
    def from_weights(cls, weights, biases, activation="relu", output="softmax", dtype="float64"):
        """A network with the given W^l (N_l, N_{l-1}) and b^l (N_l,), copied into a new buffer."""
        if not isinstance(weights, (list, tuple)) or len(weights) < 1:
            raise ValueError(f"weights: got {type(weights).__name__}, expected a non-empty list of 2-D arrays")
        if not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
            n = len(biases) if isinstance(biases, (list, tuple)) else type(biases).__name__
            raise ValueError(f"biases: got {n}, expected a list of {len(weights)} 1-D arrays, one per layer")
        dt = _checks.check_dtype(dtype if dtype is not None else "float64")
        Ws = [_checks.as_float_array(f"weights[{i}]", W, dt, ndims=(2,)) for i, W in enumerate(weights)]
        bs = [_checks.as_float_array(f"biases[{i}]", b, dt, ndims=(1,)) for i, b in enumerate(biases)]
        sizes = [Ws[0].shape[1]]
        for i, (W, b) in enumerate(zip(Ws, bs)):
            if W.shape[1] != sizes[-1]:
                raise ValueError(f"weights: weights[{i}] has shape {W.shape}, expected "
                                 f"({W.shape[0]}, {sizes[-1]}) to chain with the layer before")
            if b.shape != (W.shape[0],):
                raise ValueError(f"biases: biases[{i}] has shape {b.shape}, expected ({W.shape[0]},)")
            sizes.append(W.shape[0])
        if min(sizes) < 1:
            raise ValueError(f"weights: got layer sizes {sizes}, expected positive sizes")
        net = cls.__new__(cls)
        net._setup(sizes, activation, output, dt)
        for l, (W, b) in enumerate(zip(Ws, bs)):
            net._W[l][...] = W
            net._b[l][...] = b
        return net

    @classmethod
    def from_sklearn(cls, fitted, dtype=None):
        """The network of a fitted scikit-learn MLPClassifier or MLPRegressor: W^l is its coefs_[l-1]
        (n_in, n_out) transposed, b^l its intercepts_[l-1]. forward() gives what predict_proba gives
        (for a binary classifier, its one logistic unit: the probability of classes_[1]) and, for a
        regressor, what predict gives; class indices refer to fitted.classes_ (a multi-label
        classifier's predict gives the same 0/1 matrix). dtype: that of coefs_."""
        # scikit-learn's activation names -> fastmlp's (hidden layers; out_activation_)
        sk_hidden = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
        sk_output = {"softmax": "softmax", "logistic": "sigmoid", "identity": "identity"}
        what = type(fitted).__name__
        if not all(hasattr(fitted, a) for a in ("coefs_", "intercepts_", "activation", "out_activation_")):
            if hasattr(fitted, "hidden_layer_sizes"):
                raise ValueError(f"fitted: this {what} is not fitted (it has no coefs_); call fit first")
            raise ValueError(f"fitted: got {what}, expected a fitted scikit-learn MLPClassifier "
                             "or MLPRegressor")
        act, out = fitted.activation, fitted.out_activation_
        hidden = sk_hidden.get(act) if isinstance(act, str) else None
        output = sk_output.get(out) if isinstance(out, str) else None
        if hidden is None or output is None:
            bad = f"activation {act!r}" if hidden is None else f"out_activation_ {out!r}"
            raise ValueError(f"fitted: {what} has {bad}, which fastmlp cannot represent; expected activation "
                             f"in {sorted(sk_hidden)} and out_activation_ in {sorted(sk_output)}")
        if dtype is None:
            dtype = np.asarray(fitted.coefs_[0]).dtype
            dtype = dtype if dtype.name in _checks.DTYPES else "float64"
        weights = [np.asarray(W).T for W in fitted.coefs_]
        net = cls.from_weights(weights, list(fitted.intercepts_), activation=hidden, output=output,
                               dtype=dtype)
        # scikit-learn's logistic output with several units is its multi-label classifier
        net.multilabel = output == "sigmoid" and net.sizes[-1] > 1
        return net

    # -- parameters -----------------------------------------------------------------------------

    @property
    def weights(self):
        """[W^1, ..., W^L]: views into the parameter buffer; editing them in place changes the net."""
        return list(self._W)

    @property
    def biases(self):
        """[b^1, ..., b^L]: views into the parameter buffer."""
        return list(self._b)

    @property
    def n_params(self):
        return self.params.size

    def __repr__(self):
        return (f"MLP({self.sizes}, activation={self.activation!r}, output={self.output!r}, "
                f"dtype={self.dtype.name!r})")

    # -- evaluation -----------------------------------------------------------------------------

    @property
    def is_regression(self):
        return _checks.is_regression(self.output, self.sizes[-1])

    def inputs(self, Xc):
        """(X as the kernels take it, divisor): X unchanged with 255 (uint8) or 1, or with input_mean
        and input_scale set, the standardised rows ((X [/ 255]) - input_mean) / input_scale in the
        network's dtype (divisor 1). Xc: the checked array from _checks.check_input."""
        if self.input_mean is None:
            return Xc, input_divisor(Xc)
        X64 = Xc / 255.0 if Xc.dtype == np.uint8 else Xc.astype(np.float64)
        return np.ascontiguousarray((X64 - self.input_mean) / self.input_scale, dtype=self.dtype), 1.0

    def _run(self, X, y=None, loss=None, want_grads=False, want_outputs=False, threads=None, sample_weight=None):
        from . import _kernels as k
        Xc, single = _checks.check_input("X", X, self.sizes[0], self.dtype)
        n, K = Xc.shape[0], self.sizes[-1]
        weights, has_weights = _checks.check_sample_weight("sample_weight", sample_weight, n)
        if loss is not None:
            _checks.check_loss_output(loss, self.output)
            labels, targets = _checks.check_targets("y", y, n, K, loss, self.dtype, self.output)
        else:
            labels, targets = np.zeros(1, dtype=np.int64), None
        has_targets = targets is not None
        if targets is None:
            targets = no_targets(K, self.dtype)
        nthreads = resolve_threads(threads)
        if n * self.params.shape[0] < SERIAL_WORK:
            # A few rows: a second thread would save less than waking it costs (and on a busy
            # machine it may not be running at all); the result is the same on any thread count.
            nthreads = 1
        ws = take_workspace(self.sizes, self.dtype, min(n, EVAL_BATCH))
        no_state = np.empty(0, dtype=self.dtype)
        grads = np.zeros_like(self.params) if want_grads else no_state
        losses = np.zeros(n if loss is not None else 0)
        outputs = np.empty((n, K) if want_outputs else (0, K), dtype=self.dtype)
        Xc, divisor = self.inputs(Xc)
        total = weights.sum() if has_weights else n
        if want_grads:
            mode = "gradients"
        elif loss is None:
            mode = "forward"
        else:
            mode = "evaluate+forward" if want_outputs else "evaluate"
        hp = np.zeros(2 * k.HP_SIZE)
        hp[k.HP_GRAD_SCALE] = 1.0 / total  # the gradient of the mean cost over all rows
        stats = np.zeros((-(-n // ws.capacity), 2))
        try:
            with thread_count(nthreads):
                k._drive(phase_plan(self.sizes, mode), k.network(self), ws.buffers(),
                         OptimizerState(grads, no_state, no_state, k.SGD, hp, 1),
                         Data(*input_bytes(Xc), divisor, labels, targets, has_targets, weights, has_weights,
                              k.LOSS_CODES[loss] if loss is not None else -1),
                         np.arange(n), ws.capacity, nthreads, Results(losses, stats, outputs))
        finally:
            release_workspace(ws)
        correct = int(stats[:, 1].sum())
        if has_weights:
            losses *= n / total  # so that their mean is the weighted mean sum w c / sum w
        return single, losses, outputs, grads, correct

    def _forward_few(self, X, threads):
        """forward() of a few rows (rows x parameters < SERIAL_WORK) on the calling thread: no
        parallel region, no thread-count change, one buffer. None when X is not a plain C-contiguous
        uint8/float32/float64 array of such rows, or is not finite: the general path then checks
        it (and reports the problem) and runs it. The same bits as the general path."""
        if type(X) is not np.ndarray or self.input_mean is not None:
            return None
        dt = X.dtype
        if dt.char not in "Bfd" or not dt.isnative:  # uint8, float32, float64 (char: cheaper than ==)
            return None
        single = X.ndim == 1
        n = 1 if single else X.shape[0]
        M = self.sizes[0]
        if (X.ndim > 2 or X.shape[-1] != M or n < 1 or n * self.params.shape[0] >= SERIAL_WORK
                or not X.flags.c_contiguous):
            return None
        if threads is not None:
            resolve_threads(threads)  # a bad value is still an error
        # read-only like the driver's inputs: a read-only X then compiles nothing new
        rows = read_only(X.reshape(1, M) if single else X)
        sizes = self.sizes
        k = _KERNELS[0] if _KERNELS else _kernels()
        work = np.empty(min(n, k.FORWARD_CHUNK) * sum(sizes), dtype=self.dtype)
        outputs = np.empty((n, sizes[-1]), dtype=self.dtype)
        forward_block = k.network_kernels(self.dtype, sizes).forward_block.address()
        status = k._forward_rows(self.params, self.w_off, self.b_off, self.sizes_array,
                                 k.ACTIVATION_CODES[self.activation], k.ACTIVATION_CODES[self.output],
                                 rows.view(np.uint8), _XCODE[dt.char], 255.0 if dt.char == "B" else 1.0, work, outputs,
                                 min(n, EVAL_BATCH), 0, 1, forward_block)
        if status:
            return None
        return outputs[0] if single else outputs

    def forward(self, X, threads=None):
        """Output activations a^L: X (n, N_0) -> (n, N_L); X (N_0,) -> (N_L,). uint8 X means pixels / 255."""
        out = self._forward_few(X, threads)
        if out is None:
            out = self._forward_many(X, threads)
        return out

    def _forward_many(self, X, threads):
        """forward() of any number of rows with the parallel forward kernel. A plain C-contiguous
        uint8/float32/float64 X is checked inside the kernel as it is read (a bad value: the full
        check then reports it); anything else is checked and converted first."""
        k = _KERNELS[0] if _KERNELS else _kernels()
        M = self.sizes[0]
        plain = (type(X) is np.ndarray and X.dtype.char in "Bfd" and X.dtype.isnative and X.ndim in (1, 2)
                 and X.shape[-1] == M and X.size > 0 and X.flags.c_contiguous)
        if plain:
            single = X.ndim == 1
            Xc = X.reshape(1, M) if single else X
        else:
            Xc, single = _checks.check_input("X", X, M, self.dtype)
        nthreads = resolve_threads(threads)
        n = Xc.shape[0]
        if n * self.params.shape[0] < SERIAL_WORK:
            nthreads = 1  # as in _run: the same result on any thread count
        Xk, divisor = self.inputs(Xc)
        work = aligned_empty((nthreads, k.FORWARD_CHUNK * sum(self.sizes)), self.dtype)
        outputs = np.empty((n, self.sizes[-1]), dtype=self.dtype)
        with thread_count(nthreads):
            status = k._forward_parallel(self.params, self.w_off, self.b_off, self.sizes_array,
                                         k.ACTIVATION_CODES[self.activation], k.ACTIVATION_CODES[self.output],
                                         *input_bytes(read_only(Xk)), divisor, work, outputs, min(n, EVAL_BATCH),
                                         nthreads, k.network_kernels(self.dtype, self.sizes).forward_block.address(),
                                         k.forward_rows_kernel(self.dtype))
        if status:
            _checks.check_input("X", X, M, self.dtype)  # raises the one-line error
            # (finite inputs that standardisation made infinite: the general path, as before)
            single, _, outputs, _, _ = self._run(X, want_outputs=True, threads=threads)
        return outputs[0] if single else outputs

    def predict(self, X, threads=None):
        """Class indices: the argmax of the output for each sample; for one sigmoid output, 1 where
        the output is > 0.5, else 0; for a multi-label network the (n, K) 0/1 matrix; for one identity
        output (regression) the output value."""
        out = self.forward(X, threads=threads)
        if self.output == "sigmoid" and (self.sizes[-1] == 1 or self.multilabel):
            pred = (out > 0.5).astype(np.int64)
            return pred[..., 0] if self.sizes[-1] == 1 else pred
        if self.is_regression:
            return out[..., 0]
        return out.argmax(axis=-1)  # the method: np.argmax's wrapper costs more than a small forward

    def loss(self, X, y, loss="ce", threads=None, sample_weight=None):
        """The cost: the mean over samples of c (mse: sum_i (yhat_i - y_i)^2, ce: -log yhat_t,
        bce: -sum_i [y_i log yhat_i + (1 - y_i) log(1 - yhat_i)]); with sample_weight, the weighted
        mean sum_s w_s c_s / sum_s w_s."""
        _, losses, _, _, _ = self._run(X, y, loss, threads=threads, sample_weight=sample_weight)
        return float(losses.mean())

    def evaluate(self, X, y, loss="ce", threads=None, sample_weight=None):
        """(mean loss, accuracy) over the samples (the loss weighted with sample_weight, the accuracy
        not). Accuracy: the share of samples predicted right (see predict; multi-label: the share of
        rows right in every output); None for a regression network (one identity output)."""
        _, losses, _, _, correct = self._run(X, y, loss, threads=threads, sample_weight=sample_weight)
        return float(losses.mean()), (None if self.is_regression else correct / losses.shape[0])

    def gradients(self, X, y, loss="ce", threads=None, sample_weight=None):
        """dC/dW^l and dC/db^l of the mean cost over the samples (weighted with sample_weight), as lists
        shaped like weights, biases."""
        _, _, _, grads, _ = self._run(X, y, loss, want_grads=True, threads=threads, sample_weight=sample_weight)
        L = len(self.sizes) - 1
        s = self.sizes
        dW = [grads[self.w_off[l]:self.w_off[l] + s[l] * s[l - 1]].reshape(s[l], s[l - 1]).copy()
              for l in range(1, L + 1)]
        db = [grads[self.b_off[l]:self.b_off[l] + s[l]].copy() for l in range(1, L + 1)]
        return dW, db

    # -- files ----------------------------------------------------------------------------------

    def metadata(self):
        meta = {"format": "fastmlp", "format_version": FORMAT_VERSION, "sizes": self.sizes,
                "activation": self.activation, "output": self.output, "dtype": self.dtype.name}
        if self.multilabel:
            meta["multilabel"] = True
        if self.input_dtype is not None:
            meta["input_dtype"] = self.input_dtype
        return meta

    def save(self, path, extra_arrays=None, extra_meta=None):
        """Write an .npz (the flat parameters + JSON metadata) atomically: a temporary file in the
        same directory, renamed into place, so a crash never leaves a half-written model."""
        meta = self.metadata()
        if extra_meta:
            meta.update(extra_meta)
        arrays = {"params": self.params, "meta": np.array(json.dumps(meta))}
        if self.input_mean is not None:
            arrays.update(input_mean=self.input_mean, input_scale=self.input_scale)
        arrays.update(extra_arrays or {})
        atomic_savez(path, **arrays)

    @classmethod
    def load(cls, path):
        """A network saved by save() (or a training checkpoint). Never unpickles."""
        net, _, _ = load_npz(path)
        return net


def load_npz(path):
    """(net, metadata dict, the other arrays) from a fastmlp .npz; CheckpointError if it is not one.
    Read by fastmlp._npz (never unpickles, memory bounded by the file's size); every metadata field
    is checked by fastmlp._checkpoint.validate before anything is built from it."""
    from . import _checkpoint, _npz
    path = os.fspath(path)
    names, arrays = _npz.read_npz(path, error=CheckpointError,
                                  expected="a model or checkpoint written by fastmlp (an .npz)")
    if "meta" not in arrays or "params" not in arrays:
        raise CheckpointError(f"{path}: expected arrays 'meta' and 'params' (a file written by fastmlp), "
                              f"found {sorted(names)}")
    raw = arrays.pop("meta")
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise CheckpointError(f"{path}: array 'meta' has dtype {raw.dtype} and shape {raw.shape}, expected "
                              f"one JSON string (a file written by fastmlp)")
    try:
        meta = json.loads(str(raw))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: unreadable metadata ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
    _checkpoint.validate(meta, path)
    sizes = meta["sizes"]
    params = arrays.pop("params")
    dtype = np.dtype(meta["dtype"])
    _, _, n_params = layout(sizes)
    # Compared before anything is allocated: sizes of 1e30 must not become a 1e30-element buffer.
    if params.dtype != dtype or params.shape != (n_params,):
        raise CheckpointError(f"{path}: parameters have shape {params.shape} and dtype {params.dtype}, "
                              f"expected ({n_params},) {dtype.name} for layers {sizes}")
    if not np.isfinite(params).all():
        raise CheckpointError(f"{path}: parameters contain NaN or infinite values")
    net = MLP.__new__(MLP)
    net._setup(sizes, meta["activation"], meta["output"], meta["dtype"])
    net.params[...] = params
    net.multilabel = bool(meta.get("multilabel", False))
    try:
        net.input_mean, net.input_scale = _checks.check_standardization(
            arrays.pop("input_mean", None), arrays.pop("input_scale", None), sizes[0])
    except ValueError as e:
        raise CheckpointError(f"{path}: bad standardisation arrays: {e}") from None
    net.input_dtype = _input_dtype(path, meta)
    return net, meta, arrays


def _input_dtype(path, meta):
    """'uint8' for a network trained on pixels, else None; files written before the attribute
    existed say so in the CLI's run record."""
    value = meta.get("input_dtype")
    run = meta.get("run")
    if value is None and isinstance(run, dict) and run.get("input_dtype") == "uint8":
        value = "uint8"
    if value not in (None, "uint8"):
        raise CheckpointError(f"{path}: bad metadata: input_dtype {value!r}, expected 'uint8' or null")
    return value
