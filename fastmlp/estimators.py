"""scikit-learn's MLPClassifier and MLPRegressor, trained by fastmlp's kernels.

    from fastmlp import MLPClassifier     # instead of: from sklearn.neural_network import MLPClassifier

The constructor parameters, their defaults and meanings are scikit-learn's (1.7-1.9), and so is the
training procedure, step by step: the initial weights and the shuffles are drawn from
`random_state` exactly as scikit-learn draws them; each minibatch costs scikit-learn's loss
(log-loss, or half the squared error) plus alpha / 2 ||W||^2 / n_batch (biases not penalised);
SGD with scikit-learn's momentum and Nesterov momentum, its Adam (its epsilon placement), its
'invscaling' and 'adaptive' learning rates, its stopping rule on tol / n_iter_no_change and
early_stopping with validation_fraction. Only each minibatch's forward pass, backward pass and
update run in fastmlp's kernel instead of NumPy, a chunk of minibatches per call, each with its own
step's hyperparameters. solver='lbfgs' minimises the same full-batch loss with scipy's L-BFGS-B on
fastmlp's loss and gradient kernel.

fastmlp's own parameters: n_jobs (threads: None or -1 for all the cores Numba may use in this
process, -2 for all but one, ...) and dtype ('float32', the default and the fast one; 'float64';
or None for scikit-learn's choice: float32 for float32 X, else float64).

Needs the extra `fastmlp[sklearn]` (scikit-learn, scipy).
"""
import math
import numbers
import os
import warnings

try:
    import scipy.optimize
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, shuffle
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError as e:  # pragma: no cover - exercised in a subprocess without scikit-learn
    raise ImportError(f"fastmlp.MLPClassifier and fastmlp.MLPRegressor need scikit-learn (>= 1.6) and scipy "
                      f"({e}); install the extra: pip install 'fastmlp[sklearn]'") from None

import numpy as np

from .errors import DivergenceError

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
# scikit-learn's activation names -> fastmlp's
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


def n_threads(n_jobs):
    """The thread count for n_jobs: None or -1 all the cores Numba may use here (at most
    NUMBA_NUM_THREADS, which joblib lowers in its workers, and the CPUs this process may run on),
    -2 all but one, ...; a positive count is clipped to that limit."""
    import numba
    limit = numba.config.NUMBA_NUM_THREADS
    try:
        limit = min(limit, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - no affinity on this platform
        pass
    limit = max(limit, 1)
    if n_jobs is None:
        return limit
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or n_jobs == 0:
        raise ValueError(f"n_jobs: got {n_jobs!r}, expected None, a positive thread count, or -1 for all cores "
                         "(-2 all but one, ...)")
    if n_jobs < 0:
        return max(1, limit + 1 + int(n_jobs))
    return min(int(n_jobs), limit)


def _check_param(name, value, kind, low=None, high=None, low_open=False, high_open=False, options=None):
    ok = True
    if options is not None:
        ok = isinstance(value, str) and value in options
    elif kind == "int":
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif kind == "real":
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not np.isnan(value)
    elif kind == "bool":
        ok = isinstance(value, (bool, np.bool_))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if options is not None:
            expected = "one of " + ", ".join(map(repr, sorted(options)))
        else:
            expected = {"int": "an integer", "real": "a number", "bool": "a bool"}[kind]
            if low is not None:
                expected += f" {'>' if low_open else '>='} {low}"
            if high is not None:
                expected += f"{' and' if low is not None else ''} {'<' if high_open else '<='} {high}"
        raise ValueError(f"{name}: got {value!r}, expected {expected}")


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share (see the module's docstring)."""

    # -- parameters ------------------------------------------------------------------------------

    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0:
                raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    def _check_params(self):
        _check_param("activation", self.activation, None, options=set(_ACTIVATIONS))
        _check_param("solver", self.solver, None, options={"lbfgs", "sgd", "adam"})
        _check_param("alpha", self.alpha, "real", 0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _check_param("batch_size", self.batch_size, "int", 1)
        _check_param("learning_rate", self.learning_rate, None, options={"constant", "invscaling", "adaptive"})
        _check_param("learning_rate_init", self.learning_rate_init, "real", 0, low_open=True)
        _check_param("power_t", self.power_t, "real", 0)
        _check_param("max_iter", self.max_iter, "int", 1)
        _check_param("shuffle", self.shuffle, "bool")
        _check_param("tol", self.tol, "real", 0)
        _check_param("warm_start", self.warm_start, "bool")
        _check_param("momentum", self.momentum, "real", 0, 1)
        _check_param("nesterovs_momentum", self.nesterovs_momentum, "bool")
        _check_param("early_stopping", self.early_stopping, "bool")
        _check_param("validation_fraction", self.validation_fraction, "real", 0, 1, high_open=True)
        _check_param("beta_1", self.beta_1, "real", 0, 1, high_open=True)
        _check_param("beta_2", self.beta_2, "real", 0, 1, high_open=True)
        _check_param("epsilon", self.epsilon, "real", 0, low_open=True)
        if not (isinstance(self.n_iter_no_change, float) and self.n_iter_no_change == np.inf):
            _check_param("n_iter_no_change", self.n_iter_no_change, "int", 1)
        _check_param("max_fun", self.max_fun, "int", 1)
        if self.dtype is not None and (not isinstance(self.dtype, (str, type, np.dtype))
                                       or np.dtype(self.dtype).name not in ("float32", "float64")):
            raise ValueError(f"dtype: got {self.dtype!r}, expected 'float32', 'float64' or None "
                             "(float32 for float32 X, else float64)")
        n_threads(self.n_jobs)

    def _compute_dtype(self, X):
        if self.dtype is None:
            return np.dtype(np.float32) if X.dtype == np.float32 else np.dtype(np.float64)
        return np.dtype(self.dtype)

    # -- the network -----------------------------------------------------------------------------

    def _dense(self, X, dtype):
        if hasattr(X, "toarray"):  # scipy.sparse: the kernels take dense rows
            X = X.toarray()
        if not (isinstance(X, np.ndarray) and X.dtype in (np.float32, np.float64) and X.flags.c_contiguous):
            X = np.ascontiguousarray(X, dtype=dtype)
        # A C-contiguous float32 or float64 X is kept as it is, whatever the network's dtype: the
        # kernels read every input dtype and round each value to the network's as they gather it
        # (the same values as a converted copy), and a copy of a large X costs more than the reads
        # (its pages are new memory: on a virtual machine each first touch of a page is slow).
        # (Kernels take every array through one compiled signature: a read-only array, e.g. a
        # joblib memmap, would compile them again, for its own type, so it is copied.)
        return X if X.flags.writeable else X.copy()

    def _net(self):
        """A fastmlp.MLP holding coefs_ (transposed into fastmlp's W^l (N_l, N_{l-1})) and intercepts_."""
        from .model import MLP
        dtype = self.coefs_[0].dtype if self.coefs_[0].dtype in (np.float32, np.float64) else np.float64
        return MLP.from_weights([np.asarray(c).T for c in self.coefs_], list(self.intercepts_),
                                activation=_ACTIVATIONS[self.activation],
                                output="sigmoid" if self.out_activation_ == "logistic" else self.out_activation_,
                                dtype=dtype)

    def _store(self, net):
        self.coefs_ = [np.ascontiguousarray(W.T) for W in net.weights]
        self.intercepts_ = [b.copy() for b in net.biases]

    def _forward_pass_fast(self, X, check_input=True):
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False, dtype=(np.float64, np.float32))
        net = self._net()
        return net.forward(self._dense(X, net.dtype), threads=n_threads(self.n_jobs))

    def _init_coef(self, fan_in, fan_out, dtype):
        # scikit-learn's initialisation, from the same random draws
        factor = 2.0 if self.activation == "logistic" else 6.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = self._random_state.uniform(-init_bound, init_bound, (fan_in, fan_out))
        intercept_init = self._random_state.uniform(-init_bound, init_bound, fan_out)
        return coef_init.astype(dtype, copy=False), intercept_init.astype(dtype, copy=False)

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not isinstance(self, ClassifierMixin):
            self.out_activation_ = "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        self.coefs_ = []
        self.intercepts_ = []
        for i in range(self.n_layers_ - 1):
            coef, intercept = self._init_coef(layer_units[i], layer_units[i + 1], dtype)
            self.coefs_.append(coef)
            self.intercepts_.append(intercept)
        self._best_params = self._net().params.copy()
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _targets(self, y):
        """(fastmlp loss, y as fastmlp's trainer takes it) from the 2-D y of _validate_input."""
        if self.out_activation_ == "identity":
            return "mse", np.ascontiguousarray(y[:, 0] if y.shape[1] == 1 else y, dtype=np.float64)
        if self.out_activation_ == "softmax":
            return "ce", np.ascontiguousarray(np.argmax(y, axis=1), dtype=np.int64)
        if y.shape[1] == 1:
            return "bce", np.ascontiguousarray(y[:, 0], dtype=np.int64)
        return "bce", np.ascontiguousarray(y, dtype=np.float64)

    # -- fit -------------------------------------------------------------------------------------

    def _fit(self, X, y, sample_weight=None, incremental=False):
        self._check_params()
        hidden = self._hidden_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        dtype = self._compute_dtype(X)
        X = self._dense(X, dtype)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            from sklearn.utils.validation import _check_sample_weight
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        self.n_outputs_ = y.shape[1]
        layer_units = [n_features] + hidden + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, dtype)
        else:
            self.coefs_ = [np.asarray(c, dtype=dtype) for c in self.coefs_]
            self.intercepts_ = [np.asarray(b, dtype=dtype) for b in self.intercepts_]
        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(X, y, sample_weight, incremental)
        else:
            self._fit_lbfgs(X, y, sample_weight)
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data may contain large "
                             "values and need to be preprocessed.")
        return self

    def _score_val(self, net, X, y, sample_weight):
        out = net.forward(X, threads=self._threads)
        y_pred = self._predict_from_output(out)
        if np.issubdtype(np.asarray(y_pred).dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y, y_pred, sample_weight=sample_weight)

    def _fit_stochastic(self, X, y, sample_weight, incremental):
        from .model import thread_count
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = {"learning_rate": float(self.learning_rate_init), "t": 0, "m": None, "v": None}
        state = self._optimizer
        X_train, y_train, sw_train, val = self._split_validation(X, y, sample_weight)
        run = self._stochastic_run(X_train, y_train, sw_train, state)
        try:
            self.n_iter_ = 0
            with thread_count(self._threads):
                for _ in range(self.max_iter):
                    self.loss_ = self._stochastic_epoch(run, state) / run.n_samples
                    if self._end_epoch(run, state, val, incremental):
                        break
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        except DivergenceError as e:
            self._store(run.net)
            raise ValueError(f"training diverged: {e} at iteration {self.n_iter_ + 1}; the input data may contain "
                             "large values and need to be preprocessed, or learning_rate_init "
                             f"({self.learning_rate_init:g}) is too high") from None
        state["m"], state["v"] = run.trainer.m, run.trainer.v
        if self.early_stopping:
            # restore the best parameters (from an earlier fit when this one never beat its score)
            best = getattr(self, "_best_params", None)
            if best is not None and best.shape == run.net.params.shape:
                run.net.params[...] = best
        self._store(run.net)

    def _split_validation(self, X, y, sample_weight):
        """(X_train, y_train, sw_train, (X_val, y_val, sw_val)): scikit-learn's early-stopping split,
        or all the data for training and a validation set of Nones."""
        if not self.early_stopping:
            return X, y, sample_weight, (None, None, None)
        should_stratify = isinstance(self, ClassifierMixin) and self.n_outputs_ == 1
        stratify = y if should_stratify else None
        if sample_weight is None:
            X_train, X_val, y_train, y_val = train_test_split(
                X, y, random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify)
            sw_train = sw_val = None
        else:
            X_train, X_val, y_train, y_val, sw_train, sw_val = train_test_split(
                X, y, sample_weight, random_state=self._random_state, test_size=self.validation_fraction,
                stratify=stratify)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                             "your dataset.")
        if isinstance(self, ClassifierMixin):
            y_val = self._label_binarizer.inverse_transform(y_val)
        elif y_val.shape[1] == 1:
            y_val = y_val[:, 0]
        return X_train, y_train, sw_train, (X_val, y_val, sw_val)

    def _stochastic_batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            # stacklevel: the user's fit / partial_fit call
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                          stacklevel=5)
        return int(np.clip(self.batch_size, 1, n_samples))

    def _stochastic_run(self, X_train, y_train, sw_train, state):
        """Everything one stochastic fit keeps across its minibatches: the net, a fastmlp Trainer set
        up as scikit-learn's optimizer (its saved moments restored), the prepared data and buffers."""
        from types import SimpleNamespace

        from ._pacer import ThreadPacer
        from ._buffers import Workspace
        from .training import Trainer
        regression = self.out_activation_ == "identity"
        sgd = self.solver == "sgd"
        n_samples = X_train.shape[0]
        batch_size = self._stochastic_batch_size(n_samples)
        net = self._net()
        loss, targets = self._targets(y_train)
        if sgd:
            kind = "sgd" if self.momentum == 0 else ("nesterov" if self.nesterovs_momentum else "momentum")
        else:
            kind = "adam"
        self._threads = n_threads(self.n_jobs)
        trainer = Trainer(net, optimizer=kind, loss=loss, batch_size=batch_size, threads=self._threads,
                          momentum=min(float(self.momentum), 0.999999) if sgd else 0.9,
                          beta1=float(self.beta_1), beta2=float(self.beta_2), eps=float(self.epsilon))
        trainer.decay_biases = False
        for name in ("m", "v"):
            saved = state[name]
            if saved is not None and saved.shape == getattr(trainer, name).shape:
                getattr(trainer, name)[...] = saved
        data = trainer._prepare(X_train, targets, sample_weight=sw_train)
        chunk = trainer.chunk_samples(n_samples)
        run = SimpleNamespace(
            net=net, trainer=trainer, data=data, sgd=sgd, n_samples=n_samples, batch_size=batch_size,
            # fastmlp's squared error has no factor 1/2, so its gradients are twice scikit-learn's: halve
            # the SGD step and double the decay and Adam's epsilon (all exact in binary floating point).
            scale=2.0 if regression else 1.0,
            data_scale=1.0 / (2 * self.n_outputs_) if regression else 1.0,
            weights=data[5] if data[6] else None,
            chunk=chunk,
            # (the driver gathers a chunk's rows at its first minibatch)
            ws=Workspace(net.sizes, net.dtype, batch_size, x_capacity=chunk),
            # per minibatch: the loss sum, the correct count and (for the L2 penalty) the squared norm
            # of the weights
            losses=np.zeros(batch_size), stats=np.zeros((chunk // batch_size + 1, 3 if self.alpha > 0 else 2)),
            sample_idx=np.arange(n_samples, dtype=np.int64),
            pacer=ThreadPacer(self._threads, batch_size))
        # Compile (or load from the cache) before the pacer times anything: a first step that includes
        # the compile looks like a slow thread count, and the pacer would avoid it for a long time.
        trainer._compile(data, run.ws, run.losses, run.stats)
        return run

    def _stochastic_epoch(self, run, state):
        """One pass over the (shuffled) training set in minibatches; returns the summed loss
        (scikit-learn's: batch loss plus the L2 penalty, times the batch size)."""
        if self.shuffle:
            run.sample_idx = shuffle(run.sample_idx, random_state=self._random_state)
        order = np.ascontiguousarray(run.sample_idx, dtype=np.int64)
        accumulated_loss = 0.0
        n, B = run.n_samples, run.batch_size
        wsums = []

        def hyperparameters(idx):
            # the batch weight of each minibatch of the chunk (kept for its loss below)
            wsums[:] = ([float(run.weights[idx[s0:s0 + B]].sum()) for s0 in range(0, len(idx), B)]
                        if run.weights is not None else [float(min(B, len(idx) - s0)) for s0 in range(0, len(idx), B)])
            return self._step_hyperparameters(run, state, wsums)

        start = 0
        while start < n:
            # a chunk of minibatches per kernel call, paced like Trainer.fit's
            stop, done, nsteps = run.trainer._paced_steps(run.pacer, run.data, order, start, run.chunk, run.ws,
                                                          run.losses, run.stats, hp=hyperparameters)
            state["t"] += done
            stats = run.stats[:done].tolist()
            for k in range(done):
                # scikit-learn's loss of the minibatch: the (weighted) mean loss plus
                # alpha / 2 ||W||^2 / (batch weight), ||W||^2 of the weights before its update
                wsum = wsums[k]
                batch_loss = stats[k][0] / wsum if wsum > 0 else 0.0
                penalty = 0.5 * self.alpha * stats[k][2] / wsum if self.alpha > 0 and wsum > 0 else 0.0
                accumulated_loss += (batch_loss * run.data_scale + penalty) * min(B, stop - start - k * B)
            if done < nsteps:
                raise DivergenceError(f"the loss became {stats[done][0]}")
            self._check_finite_params(run)
            start = stop
        return accumulated_loss

    def _step_hyperparameters(self, run, state, wsums):
        """The kernel's hyperparameters for the next minibatches, one row each (see
        fastmlp._kernels._drive), as scikit-learn's would be: the decay alpha / (batch weight),
        the step, and Adam's epsilon, which depends on the step number."""
        trainer = run.trainer
        trainer.steps = state["t"]
        if run.sgd:
            trainer.lr = state["learning_rate"] / run.scale
        else:
            trainer.lr = float(self.learning_rate_init)
        base = trainer._hp()
        hp = np.tile(base, len(wsums)).reshape(len(wsums), base.size)
        from . import _kernels as k
        hp[:, k.HP_WEIGHT_DECAY] = [run.scale * self.alpha / wsum if wsum > 0 else 0.0 for wsum in wsums]
        if not run.sgd:
            # scikit-learn adds epsilon to sqrt(v), PyTorch (the kernel) to
            # sqrt(v / (1 - beta_2^t)): the same update with this epsilon
            eps = [run.scale * self.epsilon / math.sqrt(1.0 - self.beta_2 ** t)
                   for t in range(state["t"] + 1, state["t"] + 1 + len(wsums))]
            hp[:, k.HP_EPS] = eps
            hp[:, k.HP_SIZE + k.HP_EPS] = eps
        return hp.ravel()

    @staticmethod
    def _check_finite_params(run):
        # Once per chunk of minibatches and at the end of each epoch, not per minibatch (a pass over
        # every parameter): parameters that overflowed give a non-finite loss at the next minibatch,
        # which the kernel reports at once.
        if not np.isfinite(run.net.params).all():
            raise DivergenceError("the parameters became NaN or infinite")

    def _end_epoch(self, run, state, val, incremental):
        """scikit-learn's end-of-epoch bookkeeping: the loss curve, the no-improvement count and the
        best parameters, the learning-rate schedule, the stopping rule. Returns True to stop."""
        self.n_iter_ += 1
        self.t_ += run.n_samples
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
        improved = self._update_no_improvement_count(self.early_stopping, run.net, *val)
        if improved:  # scikit-learn's _best_coefs, kept across warm-started fits
            self._best_params = run.net.params.copy()
        old_lr = state["learning_rate"]
        if run.sgd and self.learning_rate == "invscaling":
            state["learning_rate"] = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
        if self._no_improvement_count > self.n_iter_no_change:
            measure = "Validation score" if self.early_stopping else "Training loss"
            msg = (f"{measure} did not improve more than tol={self.tol:f} for "
                   f"{self.n_iter_no_change} consecutive epochs.")
            if self._trigger_stopping(msg, state):
                return True
            self._no_improvement_count = 0
        trainer = run.trainer
        if run.sgd and trainer.v.size and state["learning_rate"] != old_lr:
            # scikit-learn's velocity holds -lr * (fastmlp's v): keep it when lr changes
            trainer.v *= trainer.v.dtype.type(old_lr / state["learning_rate"])
        if incremental:
            return True
        if self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                          "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=4)
        return False

    def _trigger_stopping(self, msg, state):
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if state["learning_rate"] <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        state["learning_rate"] /= 5.0
        if self.verbose:
            print(msg + f" Setting learning rate to {state['learning_rate']:f}")
        return False

    def _update_no_improvement_count(self, early_stopping, net, X_val, y_val, sw_val):
        """scikit-learn's rule; returns True when the parameters are the best so far (early stopping)."""
        if early_stopping:
            val_score = self._score_val(net, X_val, y_val, sw_val)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print(f"Validation score: {self.validation_scores_[-1]:f}")
            last = self.validation_scores_[-1]
            if last < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last > self.best_validation_score_:
                self.best_validation_score_ = last
                return True
            return False
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]
        return False

    def _fit_lbfgs(self, X, y, sample_weight):
        net = self._net()
        loss, targets = self._targets(y)
        threads = n_threads(self.n_jobs)
        regression = self.out_activation_ == "identity"
        data_scale = 1.0 / (2 * self.n_outputs_) if regression else 1.0
        grad_scale = 0.5 if regression else 1.0
        sw_sum = float(sample_weight.sum()) if sample_weight is not None else float(X.shape[0])
        w_slices = [slice(int(net.w_off[l]), int(net.w_off[l] + net.sizes[l] * net.sizes[l - 1]))
                    for l in range(1, len(net.sizes))]

        def loss_grad(x):
            net.params[...] = x
            _, losses, _, grads, _ = net._run(X, targets, loss, want_grads=True, threads=threads,
                                              sample_weight=sample_weight)
            f = float(losses.mean()) * data_scale
            g = grads.astype(np.float64) * grad_scale
            for s in w_slices:
                w = x[s]
                f += 0.5 * self.alpha * float(np.dot(w, w)) / sw_sum
                g[s] += self.alpha * w / sw_sum
            return f, g

        x0 = net.params.astype(np.float64)
        opt_res = scipy.optimize.minimize(loss_grad, x0, method="L-BFGS-B", jac=True,
                                          options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                                                   "gtol": self.tol})
        if opt_res.status != 0:
            warnings.warn(f"lbfgs failed to converge after {opt_res.nit} iteration(s) (status={opt_res.status}): "
                          f"{opt_res.message}. Increase the number of iterations (max_iter) or scale the data.",
                          ConvergenceWarning, stacklevel=3)
        self.n_iter_ = min(int(opt_res.nit), self.max_iter)
        self.loss_ = float(opt_res.fun)
        net.params[...] = opt_res.x
        self._store(net)

    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y (scikit-learn's MLP fit)."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. {self.solver} is not "
                                 "stochastic.")
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # accepted, and made dense for the kernels
        return tags


_PARAMS_DOC = """
    Parameters and attributes: those of scikit-learn's {name} (see its documentation), plus
    n_jobs : int or None, default=None
        Threads of fastmlp's kernels: None or -1 all the cores Numba may use here (clipped to
        NUMBA_NUM_THREADS, which joblib lowers in its workers, and to the CPU affinity), -2 all but one.
    dtype : 'float32', 'float64' or None, default='float32'
        The float type of the parameters and the arithmetic; None follows scikit-learn (float32 for
        float32 X, else float64).
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = ("Multi-layer perceptron classifier: scikit-learn's MLPClassifier on fastmlp's kernels.\n"
               + _PARAMS_DOC.format(name="MLPClassifier"))

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, n_jobs=None, dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.n_jobs = n_jobs
        self.dtype = dtype

    _score_function = staticmethod(accuracy_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the previous "
                                     f"call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def _predict_from_output(self, out):
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    def predict(self, X):
        """The predicted classes, (n_samples,) or (n_samples, n_classes) for multi-label y."""
        check_is_fitted(self)
        return self._predict_from_output(self._forward_pass_fast(X))

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y) with the stochastic solver, keeping the optimizer's state.
        classes is required on the first call."""
        if getattr(self, "classes_", None) is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is not None:
            if getattr(self, "classes_", None) is not None:
                if not np.array_equal(self.classes_, unique_labels(classes)):
                    raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, was: "
                                     f"{self.classes_!r}")
            else:
                self._label_binarizer = LabelBinarizer()
                if type_of_target(y).startswith("multilabel"):
                    self._label_binarizer.fit(y)
                else:
                    self._label_binarizer.fit(classes)
                self.classes_ = self._label_binarizer.classes_
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), in the order of classes_."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = ("Multi-layer perceptron regressor: scikit-learn's MLPRegressor on fastmlp's kernels.\n"
               + _PARAMS_DOC.format(name="MLPRegressor")
               + "    loss: 'squared_error' only (scikit-learn's 'poisson' needs an exponential output, which\n"
               "    fastmlp does not have).\n")

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, n_jobs=None, dtype="float32"):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.n_jobs = n_jobs
        self.dtype = dtype

    _score_function = staticmethod(r2_score)

    def _check_params(self):
        if self.loss != "squared_error":
            raise ValueError(f"loss: got {self.loss!r}, expected 'squared_error' (fastmlp has no exponential "
                             "output for scikit-learn's 'poisson')")
        super()._check_params()

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, y_numeric=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _predict_from_output(self, out):
        return out.ravel() if out.shape[1] == 1 else out

    def predict(self, X):
        """The predicted values, (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict_from_output(self._forward_pass_fast(X))

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y) with the stochastic solver, keeping the optimizer's state."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
