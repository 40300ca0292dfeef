"""Networks that leave fastmlp (fastmlp.export: ONNX and safetensors) and scikit-learn networks that
come in (MLP.from_sklearn).

The exported graph runs in onnxruntime and in onnx's own reference evaluator, the safetensors file
loads into PyTorch's nn.Sequential with strict=True; each reproduces net.forward to float rounding
and its labels exactly. Tests that need an optional package skip when it is absent; CI installs
them all (.ci/run)."""
import json
import struct
import types

import numpy as np
import pytest
import reference as ref
from tolerances import tol

from fastmlp import MLP

ACTIVATIONS = ["sigmoid", "relu", "tanh", "identity"]
# (output activation, number of output units): softmax, one sigmoid unit (binary), K sigmoid
# units (multi-label) and identity (regression)
OUTPUTS = [("softmax", 4), ("sigmoid", 1), ("sigmoid", 3), ("identity", 2)]
DTYPES = ["float32", "float64"]
N_IN = 6


def _net(activation="tanh", output="softmax", K=4, dtype="float32", seed=3):
    """Two hidden layers, non-zero biases (a fresh network has zero biases, which would hide a bias
    stored in the wrong place)."""
    net = MLP([N_IN, 8, 5, K], activation=activation, output=output, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for b in net.biases:
        b[...] = rng.normal(0, 0.5, b.shape)
    return net


def _X(n=64, dtype="float32", seed=7):
    return np.random.default_rng(seed).normal(0, 2, (n, N_IN)).astype(dtype)


def expected_labels(net, X):
    """The labels the export promises: what net.predict gives (the argmax; for one sigmoid unit,
    a^L > 0.5; for a multi-label network, the (n, K) 0/1 matrix), except for a regressor (one
    identity unit), whose predict is the value itself and whose label is the argmax, 0."""
    if net.output == "identity" and net.sizes[-1] == 1:
        return np.zeros(X.shape[0], np.int64)
    return net.predict(X)


def _ort_run(path, X):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(["probabilities", "label"], {"input": X})


def _torch_model(net):
    """nn.Sequential(Linear, activation, ..., Linear, output activation) shaped like net."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    modules = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity,
               "softmax": lambda: nn.Softmax(dim=1)}
    layers = []
    L = len(net.sizes) - 1
    for l in range(1, L + 1):
        layers.append(nn.Linear(net.sizes[l - 1], net.sizes[l]))
        layers.append(modules[net.output if l == L else net.activation]())
    dtype = torch.float32 if net.dtype == np.float32 else torch.float64
    return nn.Sequential(*layers).to(dtype)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_numba_thread):
    try:
        import torch
    except ImportError:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ------------------------------------------------------------------------------------ ONNX
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,K", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_onnxruntime_reproduces_forward_and_predict(tmp_path, activation, output, K, dtype):
    pytest.importorskip("onnx")
    from fastmlp.export import to_onnx
    net = _net(activation, output, K, dtype)
    X = _X(dtype=dtype)
    path = tmp_path / "net.onnx"
    to_onnx(net, path)
    probabilities, label = _ort_run(path, X)
    assert probabilities.dtype == net.dtype and probabilities.shape == (X.shape[0], K)
    np.testing.assert_allclose(probabilities, net.forward(X), **tol(dtype))
    assert label.dtype == np.int64 and label.shape == (X.shape[0],)
    np.testing.assert_array_equal(label, expected_labels(net, X))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,K", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_onnx_reference_evaluator_reproduces_forward(activation, output, K, dtype):
    pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from fastmlp.export import onnx_model
    net = _net(activation, output, K, dtype)
    X = _X(16, dtype=dtype)
    probabilities, label = ReferenceEvaluator(onnx_model(net)).run(None, {"input": X})
    np.testing.assert_allclose(probabilities, net.forward(X), **tol(dtype))
    np.testing.assert_array_equal(label, expected_labels(net, X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_onnx_graph_is_the_promised_one(dtype):
    pytest.importorskip("onnx")
    from onnx import TensorProto, numpy_helper

    from fastmlp.export import onnx_model
    net = _net("relu", "softmax", 4, dtype)
    model = onnx_model(net)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    g = model.graph
    elem = TensorProto.FLOAT if dtype == "float32" else TensorProto.DOUBLE
    (inp,) = g.input
    assert inp.name == "input" and inp.type.tensor_type.elem_type == elem
    assert [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim] == ["n", N_IN]
    assert [o.name for o in g.output] == ["probabilities", "label"]
    assert g.output[1].type.tensor_type.elem_type == TensorProto.INT64
    assert [n.op_type for n in g.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax", "ArgMax"]
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for l, node in enumerate([n for n in g.node if n.op_type == "Gemm"], start=1):
        assert {a.name: a.i for a in node.attribute} == {"transB": 1}
        W, b = inits[node.input[1]], inits[node.input[2]]
        # the stored W^l (N_l, N_{l-1}) and b^l, bit for bit
        assert W.dtype == net.dtype and W.shape == (net.sizes[l], net.sizes[l - 1])
        np.testing.assert_array_equal(W, net.weights[l - 1])
        np.testing.assert_array_equal(b, net.biases[l - 1])


def test_identity_layers_have_no_node_and_one_sigmoid_unit_is_thresholded():
    pytest.importorskip("onnx")
    from fastmlp.export import onnx_model
    ops = [n.op_type for n in onnx_model(_net("identity", "identity", 2)).graph.node]
    assert ops == ["Gemm", "Gemm", "Gemm", "ArgMax"]
    ops = [n.op_type for n in onnx_model(_net("tanh", "sigmoid", 1)).graph.node]
    assert ops == ["Gemm", "Tanh", "Gemm", "Tanh", "Gemm", "Sigmoid", "Greater", "Cast", "Reshape"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_onnx_label_of_a_multilabel_network_is_the_0_1_matrix(tmp_path, dtype):
    pytest.importorskip("onnx")
    from fastmlp.export import to_onnx
    net = _net("relu", "sigmoid", 3, dtype)
    net.multilabel = True  # what training on (n, K) 0/1 targets sets
    X = _X(100, dtype)
    to_onnx(net, tmp_path / "m.onnx")
    probabilities, label = _ort_run(tmp_path / "m.onnx", X)
    np.testing.assert_allclose(probabilities, net.forward(X), **tol(dtype))
    expected = (net.forward(X) > 0.5).astype(np.int64)
    assert label.shape == (100, 3) and 0 < expected.sum() < 300
    np.testing.assert_array_equal(label, expected)
    np.testing.assert_array_equal(label, net.predict(X))


def test_onnx_on_a_single_sigmoid_unit_gives_both_labels(tmp_path):
    # Biases that put about half of the samples on each side of 0.5, so the threshold is exercised.
    from fastmlp.export import to_onnx
    pytest.importorskip("onnx")
    net = _net("tanh", "sigmoid", 1, "float64")
    X = _X(200, "float64")
    p = net.forward(X)[:, 0]
    net.biases[-1][0] -= np.median(np.log(p / (1 - p)))  # z^L centred on 0: a^L centred on 0.5
    to_onnx(net, tmp_path / "b.onnx")
    _, label = _ort_run(tmp_path / "b.onnx", X)
    expected = (net.forward(X)[:, 0] > 0.5).astype(np.int64)
    assert 50 < expected.sum() < 150
    np.testing.assert_array_equal(label, expected)
    np.testing.assert_array_equal(label, net.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_network_trained_on_uint8_pixels_takes_uint8(tmp_path, dtype):
    pytest.importorskip("onnx")
    from onnx import TensorProto

    import fastmlp
    from fastmlp.export import onnx_model, to_onnx
    rng = np.random.default_rng(5)
    X = rng.integers(0, 256, (48, N_IN), dtype=np.uint8)
    y = rng.integers(0, 3, 48)
    net = MLP([N_IN, 7, 3], activation="relu", dtype=dtype, seed=1)
    assert net.input_dtype is None
    fastmlp.train(net, X, y, epochs=1, batch_size=16, lr=0.05, verbose=False)
    assert net.input_dtype == "uint8"
    # kept by save/load
    net.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz")
    assert loaded.input_dtype == "uint8"
    model = onnx_model(loaded)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    assert [n.op_type for n in model.graph.node][:2] == ["Cast", "Div"]
    to_onnx(loaded, tmp_path / "m.onnx")
    probabilities, label = _ort_run(tmp_path / "m.onnx", X)
    np.testing.assert_allclose(probabilities, net.forward(X), **tol(dtype))  # forward scales by 1/255
    np.testing.assert_allclose(probabilities, net.forward(X.astype(dtype) / 255), **tol(dtype))
    np.testing.assert_array_equal(label, net.predict(X))


def test_network_trained_on_floats_has_no_input_dtype(tmp_path):
    import fastmlp
    X = _X(32, "float32")
    net = MLP([N_IN, 3], dtype="float32")
    fastmlp.train(net, X, np.arange(32) % 3, epochs=1, batch_size=16, lr=0.05, verbose=False)
    assert net.input_dtype is None
    net.save(tmp_path / "m.npz")
    assert MLP.load(tmp_path / "m.npz").input_dtype is None


@pytest.mark.parametrize("bad", ["float16", 8, ["uint8"], {"a": 1}])
def test_a_model_file_with_a_bad_input_dtype_is_refused_in_one_line(tmp_path, bad):
    from fastmlp.errors import CheckpointError
    _net().save(tmp_path / "m.npz", extra_meta={"input_dtype": bad})
    with pytest.raises(CheckpointError, match="bad metadata: input_dtype .* expected 'uint8' or null") as info:
        MLP.load(tmp_path / "m.npz")
    assert "\n" not in str(info.value)


def _standardised_net(dtype, uint8=False):
    net = _net("tanh", "softmax", 4, dtype)
    rng = np.random.default_rng(11)
    net.input_mean = rng.normal(0, 3, N_IN)
    net.input_scale = rng.uniform(0.2, 5, N_IN)
    if uint8:
        net.input_dtype = "uint8"
    return net


def _plain_copy(net):
    """The same layers without any input transformation (from_weights sets none)."""
    return MLP.from_weights(net.weights, net.biases, net.activation, net.output, net.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_standardisation_is_applied_inside_the_graph(tmp_path, dtype):
    pytest.importorskip("onnx")
    from fastmlp.export import to_onnx
    net = _standardised_net(dtype)
    X = _X(64, dtype) * 4 + 3
    to_onnx(net, tmp_path / "s.onnx")
    probabilities, label = _ort_run(tmp_path / "s.onnx", X)
    # the network standardises in float64, then rounds to its dtype
    Xs = ((X.astype(np.float64) - net.input_mean) / net.input_scale).astype(dtype)
    plain = _plain_copy(net)
    np.testing.assert_allclose(probabilities, plain.forward(Xs), **tol(dtype))
    np.testing.assert_array_equal(label, plain.predict(Xs))
    W, b = [w.astype(np.float64) for w in net.weights], [b.astype(np.float64) for b in net.biases]
    np.testing.assert_allclose(probabilities, ref.forward(W, b, Xs, "tanh", "softmax"), rtol=1e-4, atol=1e-6)
    # the network applies its own standardisation: the same outputs and labels from raw rows
    np.testing.assert_allclose(probabilities, net.forward(X), **tol(dtype))
    np.testing.assert_array_equal(label, net.predict(X))
    # without the standardisation the outputs differ: the test can fail
    assert not np.allclose(probabilities, plain.forward(X), atol=1e-3)


def test_a_saved_standardised_network_exports_its_standardisation(tmp_path):
    pytest.importorskip("onnx")
    from fastmlp.export import to_onnx
    rng = np.random.default_rng(4)
    X = rng.normal(50, 20, (40, N_IN))
    net = MLP([N_IN, 5, 3], activation="tanh", dtype="float32", seed=2,
              input_mean=X.mean(axis=0), input_scale=X.std(axis=0))
    net.save(tmp_path / "s.npz")
    to_onnx(MLP.load(tmp_path / "s.npz"), tmp_path / "s.onnx")
    probabilities, label = _ort_run(tmp_path / "s.onnx", X.astype(np.float32))
    np.testing.assert_allclose(probabilities, net.forward(X.astype(np.float32)), **tol("float32"))
    np.testing.assert_array_equal(label, net.predict(X.astype(np.float32)))


def test_uint8_pixels_are_scaled_before_the_standardisation(tmp_path):
    pytest.importorskip("onnx")
    from fastmlp.export import onnx_model, to_onnx
    net = _standardised_net("float64", uint8=True)
    net.input_mean = net.input_mean / 10
    X = np.random.default_rng(2).integers(0, 256, (32, N_IN), dtype=np.uint8)
    to_onnx(net, tmp_path / "s.onnx")
    probabilities, _ = _ort_run(tmp_path / "s.onnx", X)
    expected = _plain_copy(net).forward((X / 255.0 - net.input_mean) / net.input_scale)
    assert [n.op_type for n in onnx_model(net).graph.node][:4] == ["Cast", "Div", "Sub", "Div"]
    np.testing.assert_allclose(probabilities, expected, **tol("float64"))
    np.testing.assert_allclose(probabilities, net.forward(X), **tol("float64"))


@pytest.mark.parametrize("mean,scale,problem", [
    (np.zeros(N_IN), None, "one is None"),
    (np.zeros(N_IN - 1), np.ones(N_IN - 1), "expected 6 finite numbers"),
    (np.zeros(N_IN), np.full(N_IN, np.nan), "expected 6 finite numbers"),
    (np.zeros(N_IN), np.zeros(N_IN), "expected values > 0"),
])
def test_a_bad_standardisation_is_a_one_line_error_and_writes_nothing(tmp_path, mean, scale, problem):
    from fastmlp.export import to_onnx, to_safetensors
    net = _net()
    net.input_mean, net.input_scale = mean, scale
    for write, name in ((to_safetensors, "x.safetensors"), (to_onnx, "x.onnx")):
        if write is to_onnx:
            pytest.importorskip("onnx")
        with pytest.raises(ValueError, match=problem) as info:
            write(net, tmp_path / name)
        assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_without_onnx_the_error_names_the_extra(tmp_path, monkeypatch):
    import sys

    from fastmlp.export import to_onnx
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fastmlp\[onnx\]'"):
        to_onnx(_net(), tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_of_something_else_is_a_one_line_error(tmp_path):
    from fastmlp.export import to_onnx, to_safetensors
    for write in (to_onnx, to_safetensors):
        with pytest.raises(ValueError, match="net: got dict, expected a fastmlp.MLP"):
            write({"0.weight": 1}, tmp_path / "x")
    net = _net()
    net.input_dtype = "int16"
    with pytest.raises(ValueError, match="input_dtype: got 'int16'"):
        to_safetensors(net, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- safetensors
def _read_safetensors_by_hand(path):
    """The format from its specification, not from the writer: (header dict, data bytes)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return n, header, raw[8 + n:]


@pytest.mark.parametrize("dtype", DTYPES)
def test_safetensors_layout(tmp_path, dtype):
    from fastmlp.export import to_safetensors
    net = _net("relu", "softmax", 4, dtype)
    to_safetensors(net, tmp_path / "n.safetensors")
    n, header, data = _read_safetensors_by_hand(tmp_path / "n.safetensors")
    assert n % 8 == 0  # the data start aligned
    meta = header.pop("__metadata__")
    assert meta["format"] == "pt" and json.loads(meta["sizes"]) == net.sizes
    assert meta["activation"] == "relu" and meta["output"] == "softmax" and meta["dtype"] == dtype
    assert list(header) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    end = 0
    for l in range(1, 4):
        for kind, value in (("weight", net.weights[l - 1]), ("bias", net.biases[l - 1])):
            entry = header[f"{2 * (l - 1)}.{kind}"]
            assert entry["dtype"] == {"float32": "F32", "float64": "F64"}[dtype]
            assert entry["shape"] == list(value.shape)
            start, stop = entry["data_offsets"]
            assert start == end  # contiguous, in order, no gaps
            end = stop
            got = np.frombuffer(data[start:stop], dtype=np.dtype(dtype).newbyteorder("<"))
            np.testing.assert_array_equal(got.reshape(value.shape), value)
    assert end == len(data)


def test_safetensors_package_reads_it(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from fastmlp.export import to_safetensors
    net = _standardised_net("float64", uint8=True)
    to_safetensors(net, tmp_path / "n.safetensors")
    tensors = safetensors_numpy.load_file(str(tmp_path / "n.safetensors"))
    assert sorted(tensors) == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    np.testing.assert_array_equal(tensors["2.weight"], net.weights[1])
    from safetensors import safe_open
    with safe_open(str(tmp_path / "n.safetensors"), framework="numpy") as f:
        meta = f.metadata()
    assert meta["input_dtype"] == "uint8"
    # exact round trip of the standardisation through JSON
    np.testing.assert_array_equal(json.loads(meta["input_mean"]), net.input_mean)
    np.testing.assert_array_equal(json.loads(meta["input_scale"]), net.input_scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,K", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_pytorch_loads_safetensors_strictly_and_reproduces_forward(tmp_path, activation, output, K, dtype):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from fastmlp.export import to_safetensors
    net = _net(activation, output, K, dtype)
    X = _X(dtype=dtype)
    to_safetensors(net, tmp_path / "n.safetensors")
    model = _torch_model(net)
    result = model.load_state_dict(safetensors_torch.load_file(str(tmp_path / "n.safetensors")), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        out = model(torch.from_numpy(X)).numpy()
    assert out.dtype == net.dtype
    np.testing.assert_allclose(out, net.forward(X), **tol(dtype))
    labels = (out[:, 0] > 0.5).astype(np.int64) if (output, K) == ("sigmoid", 1) else out.argmax(axis=1)
    np.testing.assert_array_equal(labels, expected_labels(net, X))


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails part-way keeps the file that was there and leaves no temporary file."""
    from fastmlp import export
    path = tmp_path / "n.safetensors"
    path.write_bytes(b"the user's earlier file")

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "struct", types.SimpleNamespace(pack=boom))
    with pytest.raises(KeyboardInterrupt):
        export.to_safetensors(_net(), path)
    assert path.read_bytes() == b"the user's earlier file"
    assert [p.name for p in tmp_path.iterdir()] == ["n.safetensors"]


# ------------------------------------------------------------------------------ from_sklearn
def _fit(estimator, X, y):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def _sk_data(n=120, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (n, 5))


SK_ACTIVATIONS = [("identity", "identity"), ("logistic", "sigmoid"), ("tanh", "tanh"), ("relu", "relu")]


@pytest.mark.parametrize("sk_activation,activation", SK_ACTIVATIONS)
def test_from_sklearn_multiclass_classifier(sk_activation, activation):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier
    X = _sk_data()
    y = np.array(["cat", "dog", "eel"])[(X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)]
    clf = _fit(MLPClassifier(hidden_layer_sizes=(7, 4), activation=sk_activation, max_iter=300,
                             random_state=0), X, y)
    net = MLP.from_sklearn(clf)
    assert net.sizes == [5, 7, 4, 3] and net.activation == activation and net.output == "softmax"
    assert net.dtype == np.float64
    np.testing.assert_allclose(net.forward(X), clf.predict_proba(X), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(clf.classes_[net.predict(X)], clf.predict(X))


def test_from_sklearn_binary_classifier_has_one_logistic_unit():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier
    X = _sk_data()
    y = np.where(X[:, 0] - X[:, 3] > 0, "yes", "no")
    clf = _fit(MLPClassifier(hidden_layer_sizes=(6,), max_iter=300, random_state=0), X, y)
    net = MLP.from_sklearn(clf)
    assert net.sizes == [5, 6, 1] and net.output == "sigmoid"
    p = net.forward(X)[:, 0]
    np.testing.assert_allclose(p, clf.predict_proba(X)[:, 1], rtol=1e-12, atol=1e-14)
    predicted = clf.classes_[(p > 0.5).astype(int)]
    np.testing.assert_array_equal(predicted, clf.predict(X))
    assert set(predicted) == {"yes", "no"}
    np.testing.assert_array_equal(clf.classes_[net.predict(X)], clf.predict(X))


def test_from_sklearn_multilabel_classifier():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier
    X = _sk_data()
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0.5, X[:, 2] + X[:, 3] > 0], axis=1).astype(int)
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", max_iter=300, random_state=0), X, Y)
    net = MLP.from_sklearn(clf)
    assert net.output == "sigmoid" and net.sizes[-1] == 3
    np.testing.assert_allclose(net.forward(X), clf.predict_proba(X), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal((net.forward(X) > 0.5).astype(int), clf.predict(X))
    assert net.multilabel
    np.testing.assert_array_equal(net.predict(X), clf.predict(X))


@pytest.mark.parametrize("n_targets", [1, 2])
@pytest.mark.parametrize("sk_activation,activation", SK_ACTIVATIONS)
def test_from_sklearn_regressor(sk_activation, activation, n_targets):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPRegressor
    X = _sk_data()
    Y = np.stack([X[:, 0] * 2 - X[:, 1] ** 2, np.sin(X[:, 2])], axis=1)[:, :n_targets]
    y = Y[:, 0] if n_targets == 1 else Y
    reg = _fit(MLPRegressor(hidden_layer_sizes=(9, 5), activation=sk_activation, max_iter=200,
                            random_state=0), X, y)
    net = MLP.from_sklearn(reg)
    assert net.output == "identity" and net.activation == activation and net.sizes[-1] == n_targets
    np.testing.assert_allclose(net.forward(X).reshape(reg.predict(X).shape), reg.predict(X),
                               rtol=1e-11, atol=1e-12)
    if n_targets == 1:  # a one-output regressor's predict is the value
        np.testing.assert_allclose(net.predict(X), reg.predict(X), rtol=1e-11, atol=1e-12)


def test_from_sklearn_keeps_float32():
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier
    X = _sk_data()
    X = X.astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    clf = _fit(MLPClassifier(hidden_layer_sizes=(6,), max_iter=200, random_state=0), X, y)
    assert clf.coefs_[0].dtype == np.float32
    net = MLP.from_sklearn(clf)
    assert net.dtype == np.float32
    np.testing.assert_allclose(net.forward(X), clf.predict_proba(X), **tol("float32"))
    np.testing.assert_array_equal(net.predict(X), clf.predict(X))
    assert MLP.from_sklearn(clf, dtype="float64").dtype == np.float64


def test_from_sklearn_then_onnx_predicts_what_sklearn_predicts(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("onnx")
    from sklearn.neural_network import MLPClassifier

    from fastmlp.export import to_onnx
    X = _sk_data(200)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0) + (X[:, 4] > 1)
    clf = _fit(MLPClassifier(hidden_layer_sizes=(10,), max_iter=300, random_state=0), X, y)
    to_onnx(MLP.from_sklearn(clf), tmp_path / "sk.onnx")
    probabilities, label = _ort_run(tmp_path / "sk.onnx", X)
    np.testing.assert_allclose(probabilities, clf.predict_proba(X), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(clf.classes_[label], clf.predict(X))


def test_from_sklearn_errors_are_one_line():
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    X = _sk_data()
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="this MLPClassifier is not fitted .* call fit first"):
        MLP.from_sklearn(MLPClassifier())
    with pytest.raises(ValueError, match="got LogisticRegression, expected a fitted scikit-learn MLP"):
        MLP.from_sklearn(LogisticRegression().fit(X, y))
    clf = _fit(MLPClassifier(hidden_layer_sizes=(3,), max_iter=20, random_state=0), X, y)
    clf.activation = "softplus"
    with pytest.raises(ValueError, match="activation 'softplus', which fastmlp cannot represent") as info:
        MLP.from_sklearn(clf)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ the CLI
def _cli(*args, code=0):
    from click.testing import CliRunner

    from fastmlp import cli
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
        return lines[0]
    return result.stdout


@pytest.fixture
def saved(tmp_path):
    net = _net("relu", "softmax", 4, "float32")
    net.save(tmp_path / "model.npz")
    return net, tmp_path / "model.npz"


def test_cli_export_onnx_and_safetensors_by_extension(saved, tmp_path):
    pytest.importorskip("onnx")
    net, model = saved
    out = _cli("export", model, tmp_path / "m.onnx")
    assert out.startswith(f"wrote {tmp_path / 'm.onnx'}: onnx, 6-8-5-4") and out.count("\n") == 1
    X = _X(32)
    probabilities, label = _ort_run(tmp_path / "m.onnx", X)
    np.testing.assert_allclose(probabilities, net.forward(X), **tol("float32"))
    np.testing.assert_array_equal(label, net.predict(X))
    _cli("export", model, tmp_path / "m.safetensors")
    _, header, _ = _read_safetensors_by_hand(tmp_path / "m.safetensors")
    assert header["4.weight"]["shape"] == [4, 5]


def test_cli_export_help_and_json(saved, tmp_path):
    out = _cli("export", "--help")
    assert "Usage: fastmlp export [OPTIONS] MODEL OUT" in out
    assert "fastmlp export model.npz model.onnx" in out
    assert "export    Export a saved model to ONNX or safetensors" in _cli("--help")
    _, model = saved
    path = tmp_path / "m.safetensors"
    report = json.loads(_cli("export", model, path, "--json").splitlines()[-1])
    assert report == {"model": str(model), "out": str(path), "format": "safetensors", "sizes": [N_IN, 8, 5, 4],
                      "activation": "relu", "output": "softmax", "dtype": "float32", "input_dtype": None,
                      "standardised": False, "parameters": 6 * 8 + 8 + 8 * 5 + 5 + 5 * 4 + 4,
                      "bytes": path.stat().st_size}


def test_cli_export_format_option_overrides_the_extension(saved, tmp_path):
    _, model = saved
    _cli("export", model, tmp_path / "weights.bin", "--format", "safetensors")
    _, header, _ = _read_safetensors_by_hand(tmp_path / "weights.bin")
    assert "0.weight" in header


def test_cli_export_of_a_model_trained_on_pixels_by_an_older_cli_takes_uint8(tmp_path):
    """Files written before MLP.input_dtype existed record the data's dtype in the CLI's run record."""
    pytest.importorskip("onnx")
    import onnx
    net = _net()
    net.save(tmp_path / "old.npz", extra_meta={"run": {"input_dtype": "uint8"}})
    _cli("export", tmp_path / "old.npz", tmp_path / "old.onnx")
    graph = onnx.load(str(tmp_path / "old.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("args,fragment", [
    (["{tmp}/out.bin"], "cannot tell the format of"),
    (["{tmp}/out.onnx", "--format", "xml"], "'xml' is not one of 'onnx', 'safetensors'"),
    (["{model}"], "would replace the model"),
    (["{tmp}"], "is a directory"),
])
def test_cli_export_usage_errors_exit_2(saved, tmp_path, args, fragment):
    _, model = saved
    before = model.read_bytes()
    line = _cli("export", model, *[a.format(tmp=tmp_path, model=model) for a in args], code=2)
    assert fragment in line
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_cli_export_errors_exit_1_and_write_nothing(saved, tmp_path, monkeypatch):
    import sys
    _, model = saved
    line = _cli("export", tmp_path / "missing.npz", tmp_path / "m.safetensors", code=1)
    assert "missing.npz does not exist" in line
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    line = _cli("export", tmp_path / "junk.npz", tmp_path / "m.safetensors", code=1)
    assert "junk.npz" in line and "it is text" in line  # names the file and what it holds
    monkeypatch.setitem(sys.modules, "onnx", None)
    line = _cli("export", model, tmp_path / "m.onnx", code=1)
    assert "pip install 'fastmlp[onnx]'" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.npz", "model.npz"]


def test_cli_export_in_a_subprocess(saved, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    _, model = saved

    def run(out):
        return subprocess.run([sys.executable, "-m", "fastmlp.cli", "export", str(model), str(out)],
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                              timeout=300, check=False)

    good = run(tmp_path / "s.safetensors")
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("wrote ") and good.stderr == ""
    bad = run(tmp_path / "s.txt")
    assert bad.returncode == 2 and bad.stderr.startswith("Error: cannot tell the format") and bad.stdout == ""


def test_fastmlp_export_is_light_and_reachable_from_the_package():
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys, fastmlp, fastmlp.cli\n"
            "f = fastmlp.export.to_onnx, fastmlp.export.to_safetensors, fastmlp.MLP.from_sklearn\n"
            "try:\n    fastmlp.cli.main(['export', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print([m for m in ('numba', 'onnx', 'torch', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_property_any_network_round_trips_through_both_formats(tmp_path):
    """Hypothesis draws layer sizes, activations, output, dtype and weights of any scale; the safetensors
    package reads the file back bit for bit and onnxruntime reproduces forward and the labels."""
    hypothesis = pytest.importorskip("hypothesis")
    pytest.importorskip("onnx")
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from hypothesis import strategies as st

    from fastmlp.export import to_onnx, to_safetensors

    @hypothesis.settings(max_examples=30, deadline=None, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5),
                      activation=st.sampled_from(ACTIVATIONS),
                      output=st.sampled_from(["softmax", "sigmoid", "identity"]), dtype=st.sampled_from(DTYPES),
                      scale=st.floats(0.01, 3.0), seed=st.integers(0, 2**32 - 1))
    def check(sizes, activation, output, dtype, scale, seed):
        rng = np.random.default_rng(seed)
        net = MLP(sizes, activation=activation, output=output, dtype=dtype, seed=seed % 1000)
        net.params[...] = rng.normal(0, scale, net.params.size)
        to_safetensors(net, tmp_path / "p.safetensors")
        tensors = safetensors_numpy.load_file(str(tmp_path / "p.safetensors"))
        assert len(tensors) == 2 * (len(sizes) - 1)
        for i, (W, b) in enumerate(zip(net.weights, net.biases)):
            np.testing.assert_array_equal(tensors[f"{2 * i}.weight"], W)
            np.testing.assert_array_equal(tensors[f"{2 * i}.bias"], b)
        to_onnx(net, tmp_path / "p.onnx")
        X = rng.normal(0, 2, (7, sizes[0])).astype(dtype)
        probabilities, label = _ort_run(tmp_path / "p.onnx", X)
        forward = net.forward(X)
        size = max(1.0, float(np.abs(forward).max()))
        rtol, atol = (1e-4, 1e-5 * size) if dtype == "float32" else (1e-10, 1e-12 * size)
        np.testing.assert_allclose(probabilities, forward, rtol=rtol, atol=atol)
        # labels may differ only where the outputs are tied to rounding
        expected = expected_labels(net, X)
        if not np.array_equal(label, expected):
            top = np.sort(forward, axis=1)
            if forward.shape[1] > 1:
                close = top[:, -1] - top[:, -2] < 1e-5
            else:
                close = np.abs(forward[:, 0] - 0.5) < 1e-6
            assert close[label != expected].all()

    check()
