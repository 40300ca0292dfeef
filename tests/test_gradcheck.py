"""Gradient checks: backpropagation against finite differences of the mean cost C, in float64.

For every hidden activation x (output, loss) pair, on a 2-hidden-layer network [5, 7, 6, 4] with
a few samples, every parameter's analytic derivative is compared with central differences of
net.loss:
  * 4th-order central differences, h = 1e-4: (-C(+2h) + 8 C(+h) - 8 C(-h) + C(-2h)) / (12 h),
    truncation error O(h^4) ~ 1e-16 and rounding error ~1e-12, so this is the sharp check
    (bound 1e-6 on the relative error);
  * plain 2nd-order central differences, eps = 1e-6: (C(+eps) - C(-eps)) / (2 eps), whose rounding
    error (~1e-16 |C| / 1e-6 ~ 1e-9 absolute) limits it to a looser bound (1e-4).
Relative error of one entry: |num - ana| / max(|num|, |ana|, 1e-3 * max |gradient of that net|);
the floor keeps entries that are (nearly) zero, e.g. of dead ReLU units, from dividing by ~0.
ReLU networks are drawn so that every hidden |z| >= 1e-2 (no kink within reach of the steps).

The worst relative error is printed (run with -s) and kept in WORST (module level).
"""

import numpy as np
import pytest

import reference as ref

SIZES = [5, 7, 6, 4]
N_SAMPLES = 3
PAIRS = [("softmax", "ce"), ("softmax", "mse"), ("sigmoid", "mse"), ("identity", "mse"), ("sigmoid", "bce")]
ACTIVATIONS = ["sigmoid", "relu", "tanh", "identity"]
TARGET_KINDS = ["index", "float"]
BOUND_ORDER4 = 1e-6
BOUND_ORDER2 = 1e-4
RELU_MARGIN = 1e-2

pytestmark = pytest.mark.usefixtures("one_numba_thread")

# worst relative errors seen in this module, per finite-difference scheme
WORST = {"order4": 0.0, "order4_case": None, "order2": 0.0, "order2_case": None,
         "reference_order4": 0.0}


def make_problem(seed, activation, output, kind, sizes=SIZES, n=N_SAMPLES):
    """Random float64 weights, biases, inputs and targets (ReLU: away from the kink)."""
    rng = np.random.default_rng(seed)
    L = len(sizes) - 1
    for _ in range(1000):
        W = [rng.normal(0.0, 1.0 / np.sqrt(sizes[l]), (sizes[l + 1], sizes[l])) for l in range(L)]
        b = [rng.normal(0.0, 0.3, sizes[l + 1]) for l in range(L)]
        X = rng.normal(0.0, 1.0, (n, sizes[0]))
        if activation != "relu":
            break
        hidden_z = [z for x in X for z in ref.forward_sample(W, b, x, activation, output)[0][:-1]]
        if min(np.min(np.abs(z)) for z in hidden_z) >= RELU_MARGIN:
            break
    else:
        raise RuntimeError("could not draw a ReLU network away from the kinks")
    n_out = sizes[-1]
    if kind == "index":
        y = rng.integers(0, n_out, n)
    elif output == "identity":
        y = rng.normal(0.0, 1.0, (n, n_out))
    else:
        y = rng.uniform(0.05, 1.0, (n, n_out))
        if output == "softmax":
            y /= y.sum(axis=1, keepdims=True)          # probability rows
    return W, b, X, y


def relative_errors(num, analytic):
    """Per-entry relative errors (see module docstring) of a dict from numerical_gradients."""
    flat = [np.ravel(a) for a in analytic]
    scale = max(float(np.max(np.abs(a))) for a in flat)
    errs = {}
    for (k, i), v in num.items():
        a = float(flat[k][i])
        errs[(k, i)] = abs(v - a) / max(abs(v), abs(a), 1e-3 * scale)
    return errs


def _record(key, err, case):
    if err > WORST[key]:
        WORST[key] = err
        if key + "_case" in WORST:
            WORST[key + "_case"] = case


@pytest.fixture(scope="module", autouse=True)
def _report_worst():
    yield
    print(f"\n[gradcheck] worst relative error, 4th-order central differences (h=1e-4): "
          f"{WORST['order4']:.3e} at {WORST['order4_case']}")
    print(f"[gradcheck] worst relative error, 2nd-order central differences (eps=1e-6): "
          f"{WORST['order2']:.3e} at {WORST['order2_case']}")
    print(f"[gradcheck] reference self-check worst (4th order): {WORST['reference_order4']:.3e}")


def _cases():
    seed = 0
    for act in ACTIVATIONS:
        for output, loss in PAIRS:
            for kind in TARGET_KINDS:
                seed += 1
                yield pytest.param(act, output, loss, kind, seed,
                                   id=f"{act}-{output}-{loss}-{kind}")


CASES = list(_cases())


# ------------------------------------------------------------ the reference checks itself
@pytest.mark.parametrize("activation, output, loss, kind, seed", CASES)
def test_reference_gradients_match_finite_differences(activation, output, loss, kind, seed):
    W, b, X, y = make_problem(seed, activation, output, kind)
    dW, db = ref.gradients(W, b, X, y, activation, output, loss)
    num = ref.numerical_gradients(lambda: ref.cost(W, b, X, y, activation, output, loss),
                                  W + b, eps=1e-4, order=4)
    worst = max(relative_errors(num, dW + db).values())
    _record("reference_order4", worst, None)
    assert worst < BOUND_ORDER4


@pytest.mark.parametrize("output, kind", [("softmax", "index"), ("softmax", "float"),
                                          ("sigmoid", "index"), ("identity", "float")])
def test_reference_output_delta_jacobian_route(output, kind):
    """The reference's closed forms agree with the general chain rule dc/dz_j = sum_i
    dyhat_i/dz_j dc/dyhat_i, with dyhat/dz taken by finite differences of the output."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=5)
    yhat = ref.activation_forward(z, output)
    target = 2 if kind == "index" else (rng.dirichlet(np.ones(5)) if output == "softmax"
                                        else rng.normal(size=5))
    losses = {"softmax": ["ce", "mse"], "sigmoid": ["mse", "bce"]}.get(output, ["mse"])
    for loss in losses:
        delta = ref.output_delta(z, yhat, target, output, loss)
        zz = z.copy()
        num = ref.numerical_gradients(
            lambda: ref.sample_loss(ref.activation_forward(zz, output), target, loss),
            [zz], eps=1e-4, order=4)
        np.testing.assert_allclose([num[(0, j)] for j in range(5)], delta, rtol=1e-8,
                                   atol=1e-10)


# -------------------------------------------------------------------------- fastmlp itself
@pytest.mark.parametrize("activation, output, loss, kind, seed", CASES)
def test_gradients_match_finite_differences(fm, activation, output, loss, kind, seed):
    W, b, X, y = make_problem(seed, activation, output, kind)

    def C():
        net = fm.MLP.from_weights(W, b, activation=activation, output=output, dtype="float64")
        return float(net.loss(X, y, loss=loss))

    net = fm.MLP.from_weights(W, b, activation=activation, output=output, dtype="float64")
    dW, db = net.gradients(X, y, loss=loss)
    assert [g.shape for g in dW] == [w.shape for w in W]
    assert [g.shape for g in db] == [v.shape for v in b]
    analytic = [np.asarray(g, dtype=np.float64) for g in dW + db]
    case = f"{activation}-{output}-{loss}-{kind}"

    num4 = ref.numerical_gradients(C, W + b, eps=1e-4, order=4)
    errs4 = relative_errors(num4, analytic)
    (k4, i4), worst4 = max(errs4.items(), key=lambda kv: kv[1])
    _record("order4", worst4, f"{case} param array {k4} entry {i4}")

    num2 = ref.numerical_gradients(C, W + b, eps=1e-6, order=2)
    worst2 = max(relative_errors(num2, analytic).values())
    _record("order2", worst2, case)

    print(f"[gradcheck] {case}: worst rel. error {worst4:.2e} (4th order), "
          f"{worst2:.2e} (2nd order)")
    assert worst4 < BOUND_ORDER4, (
        f"parameter array {k4} (weights 0..2, then biases 3..5), flat entry {i4}: "
        f"numerical {num4[(k4, i4)]!r} vs analytic {analytic[k4].ravel()[i4]!r}")
    assert worst2 < BOUND_ORDER2


@pytest.mark.parametrize("activation, output, loss, kind, seed", CASES)
def test_gradients_match_reference(fm, activation, output, loss, kind, seed):
    W, b, X, y = make_problem(seed, activation, output, kind)
    net = fm.MLP.from_weights(W, b, activation=activation, output=output, dtype="float64")
    dW, db = net.gradients(X, y, loss=loss)
    rW, rb = ref.gradients(W, b, X, y, activation, output, loss)
    for got, want in zip(dW + db, rW + rb):
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    assert float(net.loss(X, y, loss=loss)) == pytest.approx(
        ref.cost(W, b, X, y, activation, output, loss), rel=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_float32_match_reference(fm, activation):
    """float32 networks: gradients agree with the float64 reference to float32 accuracy."""
    W, b, X, y = make_problem(100, activation, "softmax", "index", n=16)
    net = fm.MLP.from_weights(W, b, activation=activation, output="softmax", dtype="float32")
    W32 = [np.asarray(w, np.float32) for w in W]      # the float32-rounded parameters
    b32 = [np.asarray(v, np.float32) for v in b]
    dW, db = net.gradients(X.astype(np.float32), y, loss="ce")
    rW, rb = ref.gradients([w.astype(np.float64) for w in W32], [v.astype(np.float64) for v in b32],
                           X.astype(np.float32), y, activation, "softmax", "ce")
    for got, want in zip(dW + db, rW + rb):
        assert got.dtype == np.float32
        scale = float(np.max(np.abs(want)))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_deeper_network_gradients(fm):
    """A deeper, wider network ([9, 12, 10, 8, 5], tanh) against the reference."""
    W, b, X, y = make_problem(7, "tanh", "softmax", "index", sizes=[9, 12, 10, 8, 5], n=6)
    net = fm.MLP.from_weights(W, b, activation="tanh", output="softmax", dtype="float64")
    dW, db = net.gradients(X, y, loss="ce")
    rW, rb = ref.gradients(W, b, X, y, "tanh", "softmax", "ce")
    for got, want in zip(dW + db, rW + rb):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


def test_ce_with_float_targets_not_summing_to_one(fm):
    """c = -sum_i y_i log yhat_i for any float target rows: its gradient is
    delta^L = yhat sum_i y_i - y, which is yhat - y only when the row sums to 1.  Either the
    gradients agree with finite differences of the loss, or such targets are rejected."""
    W, b, X, _ = make_problem(41, "tanh", "softmax", "float")
    y = np.random.default_rng(42).uniform(0.1, 1.0, (N_SAMPLES, SIZES[-1]))   # rows sum to ~2
    try:
        net = fm.MLP.from_weights(W, b, activation="tanh", output="softmax", dtype="float64")
        dW, db = net.gradients(X, y, loss="ce")
    except ValueError:
        return                                   # rejecting unnormalised targets is fine
    rW, rb = ref.gradients(W, b, X, y, "tanh", "softmax", "ce")
    assert float(net.loss(X, y, loss="ce")) == pytest.approx(
        ref.cost(W, b, X, y, "tanh", "softmax", "ce"), rel=1e-12)
    for got, want in zip(dW + db, rW + rb):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13,
                                   err_msg="gradients are not those of the loss for CE targets "
                                           "whose rows do not sum to 1")
