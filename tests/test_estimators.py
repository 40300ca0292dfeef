"""fastmlp.MLPClassifier and MLPRegressor: scikit-learn's estimator checks, its meta-estimators, and
agreement with scikit-learn's own MLP step by step (float64) and in accuracy (float32)."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.calibration import CalibratedClassifierCV  # noqa: E402
from sklearn.datasets import make_classification, make_multilabel_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastmlp.estimators import MLPClassifier, MLPRegressor, n_threads  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


_FLOAT32_ROUNDING = ("float32 by default: sample weights and repeated rows give the same fit up to float32 rounding "
                     "(about 4e-7 relative), and the check compares predictions at rtol=1e-7; with "
                     "dtype='float64' it passes (test_sample_weight_equivalence_in_float64)")


def _expected_failed_checks(estimator):
    # Justified the way scikit-learn justifies its own: why the check cannot pass as written.
    return {"check_sample_weight_equivalence_on_dense_data": _FLOAT32_ROUNDING,
            "check_sample_weight_equivalence_on_sparse_data": _FLOAT32_ROUNDING}


@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)],
                         expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_sample_weight_equivalence_in_float64(cls):
    from sklearn.utils.estimator_checks import check_sample_weight_equivalence_on_dense_data
    check_sample_weight_equivalence_on_dense_data(cls.__name__, cls(max_iter=100, dtype="float64"))


# -- the same training as scikit-learn's, step by step (float64) ---------------------------------

def _classification(n=160, classes=3, features=8, seed=0):
    return make_classification(n, features, n_informative=5, n_classes=classes, random_state=seed)


def _pair(sk_cls, our_cls, X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = sk_cls(**params).fit(X, y)
        ours = our_cls(dtype="float64", **params).fit(X, y)
    return theirs, ours


def _assert_same_training(theirs, ours, X):
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.t_ == theirs.t_
    if hasattr(theirs, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
        assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10) if theirs.best_loss_ is not None \
            else ours.best_loss_ is None
        assert (ours.validation_scores_ is None) == (theirs.validation_scores_ is None)
        if theirs.validation_scores_ is not None:
            np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
            assert ours.best_validation_score_ == theirs.best_validation_score_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-8)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    pred = "predict_proba" if hasattr(theirs, "predict_proba") else "predict"
    np.testing.assert_allclose(getattr(ours, pred)(X), getattr(theirs, pred)(X), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("params", [
    dict(solver="adam"),
    dict(solver="adam", batch_size=48, alpha=0.1),  # a smaller last batch: alpha / n_batch per batch
    dict(solver="sgd"),  # Nesterov momentum
    dict(solver="sgd", nesterovs_momentum=False, learning_rate="invscaling", learning_rate_init=0.5),
    dict(solver="sgd", learning_rate="adaptive", n_iter_no_change=2, tol=0.05),
    dict(solver="sgd", momentum=0.0, shuffle=False),
    dict(solver="adam", early_stopping=True, validation_fraction=0.2, n_iter_no_change=3),
    dict(solver="lbfgs"),
], ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_classifier_trains_like_sklearn(params):
    X, y = _classification()
    theirs, ours = _pair(SkClassifier, MLPClassifier, X, y, hidden_layer_sizes=(12,), max_iter=15,
                         random_state=0, **params)
    _assert_same_training(theirs, ours, X)
    assert ours.out_activation_ == "softmax"
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("kind", ["binary", "multilabel", "logistic-hidden"])
def test_binary_and_multilabel_train_like_sklearn(kind):
    if kind == "multilabel":
        X, y = make_multilabel_classification(120, 8, n_classes=3, random_state=0)
    else:
        X, y = _classification(classes=2)
    act = "logistic" if kind == "logistic-hidden" else "tanh"
    theirs, ours = _pair(SkClassifier, MLPClassifier, X, y, hidden_layer_sizes=(10, 6), activation=act,
                         max_iter=10, random_state=1)
    _assert_same_training(theirs, ours, X)
    assert ours.out_activation_ == "logistic"
    assert ours.n_outputs_ == (3 if kind == "multilabel" else 1)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("outputs", [1, 2])
def test_regressor_trains_like_sklearn(solver, outputs):
    X, y = make_regression(120, 6, n_targets=outputs, noise=1.0, random_state=0)
    y = y / 100
    theirs, ours = _pair(SkRegressor, MLPRegressor, X, y, hidden_layer_sizes=(10,), solver=solver, max_iter=12,
                         random_state=0, learning_rate_init=0.01 if solver == "sgd" else 0.001)
    _assert_same_training(theirs, ours, X)
    assert ours.out_activation_ == "identity"


def test_sample_weight_trains_like_sklearn():
    X, y = _classification()
    w = np.random.default_rng(0).uniform(0.2, 2.0, X.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = SkClassifier((8,), max_iter=8, batch_size=50, random_state=0).fit(X, y, sample_weight=w)
        ours = MLPClassifier((8,), max_iter=8, batch_size=50, random_state=0, dtype="float64").fit(
            X, y, sample_weight=w)
    _assert_same_training(theirs, ours, X)


def test_partial_fit_and_warm_start_like_sklearn():
    X, y = _classification()
    theirs = SkClassifier((8,), solver="sgd", random_state=0)
    ours = MLPClassifier((8,), solver="sgd", random_state=0, dtype="float64")
    for _ in range(3):
        theirs.partial_fit(X, y, classes=np.unique(y))
        ours.partial_fit(X, y, classes=np.unique(y))
    _assert_same_training(theirs, ours, X)
    theirs.set_params(warm_start=True, max_iter=3)
    ours.set_params(warm_start=True, max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(X, y)
        ours.fit(X, y)
    _assert_same_training(theirs, ours, X)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")



# -- float32 (the default): the same accuracy ---------------------------------------------------

def test_float32_default_accuracy_close_to_sklearn():
    X, y = _classification(n=600, classes=4, features=12, seed=3)
    Xtr, Xte, ytr, yte = X[:450], X[450:], y[:450], y[450:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = SkClassifier((32,), max_iter=40, random_state=0).fit(Xtr, ytr)
        ours = MLPClassifier((32,), max_iter=40, random_state=0).fit(Xtr, ytr)
    assert ours.coefs_[0].dtype == np.float32
    assert abs(ours.score(Xte, yte) - theirs.score(Xte, yte)) <= 0.02
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-3)


def test_dtype_none_follows_x():
    X, y = _classification(n=60)
    est = MLPClassifier((4,), max_iter=2, dtype=None).fit(X.astype(np.float32), y)
    assert est.coefs_[0].dtype == np.float32
    est = MLPClassifier((4,), max_iter=2, dtype=None).fit(X, y)
    assert est.coefs_[0].dtype == np.float64


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_float64_x_is_read_in_place_with_the_bits_of_a_float32_copy(solver, monkeypatch):
    # a float32 network fitted on float64 X reads X where it is (no float32 copy of the whole
    # data set) and rounds each value as it gathers it: the same fit as on X.astype(float32)
    X, y = _classification(n=300, classes=3, features=10, seed=5)
    X = X * np.float64(1 + 2 ** -40)  # values that float32 rounds
    params = dict(hidden_layer_sizes=(7,), max_iter=4, random_state=0, solver=solver, dtype="float32",
                  early_stopping=solver != "lbfgs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        copied = MLPClassifier(**params).fit(X.astype(np.float32), y)
        seen = []
        dense = MLPClassifier._dense
        monkeypatch.setattr(MLPClassifier, "_dense",
                            lambda self, X, dtype: seen.append(dense(self, X, dtype)) or seen[-1])
        direct = MLPClassifier(**params).fit(X, y)
    assert seen[0] is X
    for a, b in zip(copied.coefs_ + copied.intercepts_, direct.coefs_ + direct.intercepts_):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(copied.predict_proba(X.astype(np.float32)), direct.predict_proba(X))


# -- attributes and errors -----------------------------------------------------------------------

def test_fitted_attributes():
    X, y = _classification(n=80)
    labels = np.array(["cat", "dog", "emu"])[y]
    est = MLPClassifier((7, 5), max_iter=3, random_state=0).fit(X, labels)
    assert list(est.classes_) == ["cat", "dog", "emu"]
    assert [c.shape for c in est.coefs_] == [(8, 7), (7, 5), (5, 3)]
    assert [b.shape for b in est.intercepts_] == [(7,), (5,), (3,)]
    assert est.n_layers_ == 4 and est.n_outputs_ == 3 and est.n_features_in_ == 8
    assert est.out_activation_ == "softmax"
    assert est.n_iter_ == 3 and est.t_ == 3 * 80 and len(est.loss_curve_) == 3
    assert est.best_loss_ == min(est.loss_curve_)
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert set(est.predict(X)) <= set(est.classes_)
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(proba), rtol=1e-6)
    # coefs_ are scikit-learn's orientation: a forward pass by hand gives predict_proba
    h = np.maximum(X @ est.coefs_[0] + est.intercepts_[0], 0)
    h = np.maximum(h @ est.coefs_[1] + est.intercepts_[1], 0)
    z = h @ est.coefs_[2] + est.intercepts_[2]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, p / p.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_feature_names_in():
    pd = pytest.importorskip("pandas")
    X, y = _classification(n=40, features=3)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    est = MLPRegressor((3,), max_iter=2).fit(df, y.astype(float))
    assert list(est.feature_names_in_) == ["a", "b", "c"]


def test_divergence_raises_value_error():
    X, y = make_regression(100, 5, random_state=0)
    est = MLPRegressor((16,), solver="sgd", learning_rate_init=10.0, max_iter=50, random_state=0)
    with pytest.raises(ValueError) as info:
        est.fit(X * 1e3, y * 1e3)
    assert not isinstance(info.value, FloatingPointError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad, match", [
    (dict(solver="newton"), "solver"), (dict(hidden_layer_sizes=(3, 0)), "hidden_layer_sizes"),
    (dict(activation="softmax"), "activation"), (dict(learning_rate_init=0.0), "learning_rate_init"),
    (dict(n_jobs=0), "n_jobs"), (dict(dtype="float16"), "dtype"), (dict(momentum=1.5), "momentum"),
    (dict(validation_fraction=1.0), "validation_fraction"), (dict(batch_size=0), "batch_size"),
])
def test_bad_parameters_raise_one_line(bad, match):
    X, y = _classification(n=30)
    with pytest.raises(ValueError, match=match) as info:
        MLPClassifier(max_iter=1, **bad).fit(X, y)
    assert "\n" not in str(info.value)


def test_poisson_loss_is_refused():
    with pytest.raises(ValueError, match="poisson"):
        MLPRegressor(loss="poisson").fit(np.ones((4, 2)), np.ones(4))


def test_n_jobs_threads():
    import numba
    limit = min(numba.config.NUMBA_NUM_THREADS, len(os.sched_getaffinity(0)))
    assert n_threads(None) == n_threads(-1) == limit
    assert n_threads(1) == 1
    assert n_threads(10 ** 6) == limit
    assert n_threads(-(10 ** 6)) == 1
    with pytest.raises(ValueError, match="n_jobs"):
        n_threads(0)
    with pytest.raises(ValueError, match="n_jobs"):
        n_threads(1.5)


def _threads_in_worker():
    from fastmlp.estimators import n_threads as threads
    return threads(None), threads(8)


def test_n_jobs_in_joblib_workers_follows_their_thread_limit():
    # joblib sets NUMBA_NUM_THREADS = cores // n_jobs in its workers: n_jobs=None and 8 are clipped to it
    from joblib import Parallel, cpu_count, delayed
    limit = max(1, cpu_count() // 2)
    got = Parallel(n_jobs=2)(delayed(_threads_in_worker)() for _ in range(2))
    assert all(a <= limit and b <= limit for a, b in got), got


# -- meta-estimators ------------------------------------------------------------------------------

def test_pipeline_cross_val_score_and_calibration():
    X, y = _classification(n=150)
    pipe = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=50, learning_rate_init=0.01, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.5
    cal = CalibratedClassifierCV(MLPClassifier((16,), max_iter=50, learning_rate_init=0.01, random_state=0), cv=3)
    cal.fit(X, y)
    proba = cal.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert cal.score(X, y) > 0.5


def test_grid_search_in_two_joblib_workers():
    X, y = _classification(n=120)
    grid = GridSearchCV(MLPClassifier(max_iter=20, random_state=0),
                        {"hidden_layer_sizes": [(4,), (16,)], "alpha": [1e-4, 1e-1]}, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_params_["hidden_layer_sizes"] in [(4,), (16,)]
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


# -- import --------------------------------------------------------------------------------------

def test_import_fastmlp_does_not_import_sklearn():
    code = "import sys, fastmlp; assert 'sklearn' not in sys.modules and 'scipy' not in sys.modules; " \
           "from fastmlp import MLPClassifier; assert 'sklearn' in sys.modules; print(MLPClassifier.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "MLPClassifier"


def test_without_sklearn_the_error_names_the_extra():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('sklearn', 'scipy'):\n"
            "            raise ImportError('No module named ' + repr(name))\n"
            "sys.meta_path.insert(0, Block())\n"
            "import fastmlp\n"
            "try:\n"
            "    fastmlp.MLPRegressor\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "fastmlp[sklearn]" in lines[0]


# -- the trainer options the estimators use ---------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["nesterov", "momentum", "adam", "sgd"])
@pytest.mark.parametrize("decay_biases", [True, False])
def test_trainer_nesterov_and_bias_decay_match_numpy(optimizer, decay_biases):
    import fastmlp
    from fastmlp.training import Trainer
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 5))
    y = rng.integers(0, 3, 32)
    net = fastmlp.MLP([5, 4, 3], dtype="float64", seed=1)
    ref = fastmlp.MLP.from_weights(net.weights, net.biases, dtype="float64")
    trainer = Trainer(net, optimizer=optimizer, lr=0.1, momentum=0.9, weight_decay=0.01, batch_size=32, threads=1)
    trainer.decay_biases = decay_biases
    params = ref.weights + ref.biases
    V = [np.zeros_like(p) for p in params]
    M = [np.zeros_like(p) for p in params]
    for t in range(1, 3):
        gW, gb = ref.gradients(X, y)
        for i, (p, g) in enumerate(zip(params, gW + gb)):
            g = g + (0.01 if i < 2 or decay_biases else 0.0) * p
            if optimizer == "nesterov":
                V[i][...] = 0.9 * V[i] + g
                p -= 0.1 * (g + 0.9 * V[i])
            elif optimizer == "momentum":
                V[i][...] = 0.9 * V[i] + g
                p -= 0.1 * V[i]
            elif optimizer == "sgd":
                p -= 0.1 * g
            else:
                M[i][...] = 0.9 * M[i] + 0.1 * g
                V[i][...] = 0.999 * V[i] + 0.001 * g * g
                p -= 0.1 / (1 - 0.9 ** t) * M[i] / (np.sqrt(V[i]) / np.sqrt(1 - 0.999 ** t) + 1e-8)
        trainer.step_batch(X, y)
    np.testing.assert_allclose(net.params, ref.params, rtol=1e-12, atol=1e-14)


# -- minibatches in chunks per kernel call --------------------------------------------------------

@pytest.mark.parametrize("cls, params", [
    (MLPClassifier, dict()),  # adam, alpha 1e-4, float32
    (MLPClassifier, dict(alpha=0.0, dtype="float64")),
    (MLPClassifier, dict(solver="sgd", alpha=0.01)),  # Nesterov
    (MLPClassifier, dict(solver="sgd", nesterovs_momentum=False, learning_rate="invscaling")),
    (MLPClassifier, dict(solver="sgd", momentum=0.0, learning_rate="adaptive", n_iter_no_change=2, tol=0.05)),
    (MLPClassifier, dict(alpha=0.01, weighted=True)),
    (MLPClassifier, dict(early_stopping=True, n_iter_no_change=3, n_jobs=2)),
    (MLPRegressor, dict(alpha=0.01, weighted=True)),
    (MLPRegressor, dict(solver="sgd", dtype="float64", n_jobs=2)),
], ids=lambda p: p.__name__ if isinstance(p, type) else "-".join(f"{k}={v}" for k, v in p.items()))
def test_chunks_of_minibatches_train_exactly_like_one_minibatch_per_call(cls, params, monkeypatch):
    """The estimators run a chunk of minibatches per kernel call, each with scikit-learn's step
    (Adam's epsilon of its step number, alpha / its batch weight) and its loss (with the squared norm
    of the weights before it): parameters, optimizer state and loss curve are bit-identical to one
    minibatch per call, and to chunks that end mid-epoch."""
    from fastmlp.training import Trainer
    params = dict(params)
    weighted = params.pop("weighted", False)
    X, y = _classification(n=250, features=8)  # 8 minibatches of 32, the last of 26
    if cls is MLPRegressor:
        y = X[:, 0] - 2 * X[:, 1]
    sample_weight = np.random.default_rng(0).random(250) * 2 if weighted else None
    params.setdefault("n_jobs", 1)
    results = []
    for steps in (None, 1, 3):  # steps per kernel call (None: the whole epoch here)
        if steps is not None:
            monkeypatch.setattr(Trainer, "chunk_samples", lambda self, n, s=steps: s * self.batch_size)
        est = cls(hidden_layer_sizes=(16,), batch_size=32, max_iter=8, random_state=0, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y, sample_weight=sample_weight)
            est.partial_fit(X, y) if not est.early_stopping else None
        results.append((b"".join(a.tobytes() for a in est.coefs_ + est.intercepts_),
                        b"".join(a.tobytes() for a in (est._optimizer["m"], est._optimizer["v"])),
                        est.loss_curve_, est.t_, est.n_iter_))
    assert results[0][3] > 0
    assert results[1] == results[0]
    assert results[2] == results[0]
