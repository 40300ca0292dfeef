"""Networks that leave fastmlp: an ONNX graph, or safetensors weights for PyTorch.

    from fastmlp.export import to_onnx, to_safetensors
    to_onnx(net, "model.onnx")                # needs the onnx package: pip install 'fastmlp[onnx]'
    to_safetensors(net, "model.safetensors")  # no dependency

The ONNX graph takes "input" (n, N_0) in the network's dtype (uint8 for a network trained on uint8
pixels, scaled by 1/255 inside the graph), applies the network's input standardisation when it has
one, then per layer l a Gemm with the stored W^l (transB=1) and b^l followed by the activation,
and gives "probabilities" (the output activation a^L, (n, N_L)) and "label" (int64, as predict
gives it: (n,) the argmax, or a^L > 0.5 for a single sigmoid unit; (n, N_L) a^L > 0.5 for a
multi-label network). Opset 17, IR version 8, so that runtimes older than the newest onnx package
still load it. A regression network's values are "probabilities"; its "label" is the argmax.

The safetensors file names the tensors as PyTorch names those of
nn.Sequential(Linear, activation, Linear, activation, ..., Linear): "0.weight", "0.bias",
"2.weight", ... (nn.Linear keeps its weight as (out, in), the orientation of W^l), so that
model.load_state_dict(safetensors.torch.load_file(path)) works with strict=True. The input scaling
and standardisation are not layers of such a model; they travel in the file's __metadata__.

Both writes are atomic: a temporary file renamed into place, never a half-written file.
"""
import json
import struct

import numpy as np

from . import __version__
from ._files import atomic_write
from .model import MLP

ONNX_OPSET = 17
ONNX_IR_VERSION = 8
ONNX_MISSING = "writing ONNX needs the onnx package: pip install 'fastmlp[onnx]'"
# One ONNX file is one protobuf message, which cannot exceed 2 GB.
ONNX_MAX_BYTES = 2**31 - 2**24
_ONNX_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}
_SAFETENSORS_DTYPES = {"float32": "F32", "float64": "F64"}


def _check_net(net):
    if not isinstance(net, MLP):
        raise ValueError(f"net: got {type(net).__name__}, expected a fastmlp.MLP")


def input_transform(net):
    """(input_dtype, mean, scale) of what the network does to its input before layer 1: input_dtype
    'uint8' (pixels, divided by 255) or None; mean and scale float64 (N_0,) arrays, or None (it
    computes on (x [/ 255] - mean) / scale)."""
    _check_net(net)
    input_dtype = getattr(net, "input_dtype", None)
    if input_dtype not in (None, "uint8"):
        raise ValueError(f"net.input_dtype: got {input_dtype!r}, expected None or 'uint8'")
    mean = getattr(net, "input_mean", None)
    scale = getattr(net, "input_scale", None)
    if (mean is None) != (scale is None):
        raise ValueError("net.input_mean and net.input_scale: one is None and the other is not; "
                         "expected both (a standardisation) or neither")
    if mean is not None:
        n0 = net.sizes[0]
        arrays = []
        for name, a in (("input_mean", mean), ("input_scale", scale)):
            a = np.asarray(a)
            if a.dtype.kind not in "fiu" or a.shape != (n0,) or not np.isfinite(a).all():
                raise ValueError(f"net.{name}: got {a.dtype} shape {a.shape}, expected {n0} finite numbers")
            arrays.append(np.ascontiguousarray(a, dtype=np.float64))
        mean, scale = arrays
        if (scale <= 0).any():
            raise ValueError("net.input_scale: expected values > 0")
    return input_dtype, mean, scale


# -- ONNX ---------------------------------------------------------------------------------------

def onnx_model(net):
    """The network as an onnx.ModelProto (see the module's docstring), checked by onnx.checker."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError(ONNX_MISSING) from None
    input_dtype, mean, scale = input_transform(net)
    if net.params.nbytes > ONNX_MAX_BYTES:
        raise ValueError(f"net: {net.params.nbytes:,} bytes of parameters do not fit in one ONNX file "
                         "(a 2 GB protobuf); use to_safetensors")
    dt = net.dtype
    elem = TensorProto.FLOAT if dt == np.float32 else TensorProto.DOUBLE
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = "input"
    in_elem = TensorProto.UINT8 if input_dtype == "uint8" else elem
    graph_input = helper.make_tensor_value_info(x, in_elem, ["n", net.sizes[0]])
    # The network standardises in float64 and rounds the result to its dtype; without a
    # standardisation it divides each byte by 255 in its dtype. The graph rounds the same way.
    work, work_elem = (np.float64, TensorProto.DOUBLE) if mean is not None else (dt.type, elem)
    if in_elem != work_elem:
        nodes.append(helper.make_node("Cast", [x], ["input_cast"], to=work_elem, name="cast_input"))
        x = "input_cast"
    if input_dtype == "uint8":
        nodes.append(helper.make_node("Div", [x, const("pixel_scale", work(255))], ["pixels"],
                                      name="scale_pixels"))
        x = "pixels"
    if mean is not None:
        nodes.append(helper.make_node("Sub", [x, const("input_mean", mean)], ["centred"], name="centre"))
        nodes.append(helper.make_node("Div", ["centred", const("input_scale", scale)], ["standardised"],
                                      name="standardise"))
        x = "standardised"
        if elem != TensorProto.DOUBLE:
            nodes.append(helper.make_node("Cast", [x], ["standardised_cast"], to=elem,
                                          name="cast_standardised"))
            x = "standardised_cast"
    x = _onnx_layers(net, x, nodes, const, helper)
    K = net.sizes[-1]
    label_shape = ["n"]
    if net.output == "sigmoid" and (K == 1 or getattr(net, "multilabel", False)):
        # predict's rule: 1 where the output is > 0.5; (n,) for one unit, (n, K) for multi-label
        nodes.append(helper.make_node("Greater", [x, const("threshold", dt.type(0.5))], ["positive"],
                                      name="threshold"))
        positive = "positive_int" if K == 1 else "label"
        nodes.append(helper.make_node("Cast", ["positive"], [positive], to=TensorProto.INT64,
                                      name="cast_label"))
        if K == 1:
            nodes.append(helper.make_node("Reshape", [positive, const("flat", np.array([-1], np.int64))],
                                          ["label"], name="flatten_label"))
        else:
            label_shape = ["n", K]
    else:
        nodes.append(helper.make_node("ArgMax", [x], ["label"], axis=1, keepdims=0, name="argmax"))
    outputs = [helper.make_tensor_value_info("probabilities", elem, ["n", K]),
               helper.make_tensor_value_info("label", TensorProto.INT64, label_shape)]
    graph = helper.make_graph(nodes, "fastmlp", [graph_input], outputs, initializer=inits,
                              doc_string=repr(net))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              ir_version=ONNX_IR_VERSION, producer_name="fastmlp",
                              producer_version=__version__, doc_string=repr(net))
    helper.set_model_props(model, _description(net, input_dtype))
    onnx.checker.check_model(model)
    return model


def _onnx_layers(net, x, nodes, const, helper):
    """Append each layer's Gemm (z^l = W^l a^{l-1} + b^l) and activation node to nodes, reading
    the tensor named x; returns the name of a^L ("probabilities")."""
    L = len(net.sizes) - 1
    for l in range(1, L + 1):
        act = net.output if l == L else net.activation
        z = "probabilities" if l == L and act == "identity" else f"z{l}"
        nodes.append(helper.make_node("Gemm", [x, const(f"W{l}", net.weights[l - 1]),
                                               const(f"b{l}", net.biases[l - 1])], [z], transB=1,
                                      name=f"gemm{l}"))
        if act == "identity":
            x = z
            continue
        a = "probabilities" if l == L else f"a{l}"
        attrs = {"axis": -1} if act == "softmax" else {}
        nodes.append(helper.make_node(_ONNX_ACTIVATIONS[act], [z], [a], name=f"{act}{l}", **attrs))
        x = a
    return x


def to_onnx(net, path):
    """Write the network as an ONNX model (opset 17, IR version 8) to path, atomically."""
    data = onnx_model(net).SerializeToString()

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


# -- safetensors --------------------------------------------------------------------------------

def _description(net, input_dtype, mean=None, scale=None):
    meta = {"fastmlp_version": __version__, "sizes": json.dumps(net.sizes), "activation": net.activation,
            "output": net.output, "dtype": net.dtype.name}
    if getattr(net, "multilabel", False):
        meta["multilabel"] = "true"
    if input_dtype is not None:
        meta["input_dtype"] = input_dtype
    if mean is not None:
        meta["input_mean"] = json.dumps([float(v) for v in mean])
        meta["input_scale"] = json.dumps([float(v) for v in scale])
    return meta


def state_dict(net):
    """{name: array} as PyTorch's nn.Sequential(Linear, activation, Linear, ...) names its
    parameters: layer l's W^l (N_l, N_{l-1}) and b^l are "{2(l-1)}.weight" and "{2(l-1)}.bias"."""
    _check_net(net)
    out = {}
    for i, (W, b) in enumerate(zip(net.weights, net.biases)):
        out[f"{2 * i}.weight"] = W
        out[f"{2 * i}.bias"] = b
    return out


def safetensors_header(net):
    """The safetensors header (a dict) of the network's tensors, in the order of the data."""
    input_dtype, mean, scale = input_transform(net)
    header, offset = {}, 0
    for name, a in state_dict(net).items():
        header[name] = {"dtype": _SAFETENSORS_DTYPES[net.dtype.name], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    meta = _description(net, input_dtype, mean, scale)
    meta["format"] = "pt"
    header["__metadata__"] = meta
    return header


def to_safetensors(net, path):
    """Write the weights and biases as a safetensors file to path, atomically: an 8-byte
    little-endian header length, the JSON header (padded with spaces to a multiple of 8 bytes so
    that the data stay aligned), then each tensor's raw little-endian bytes."""
    header = json.dumps(safetensors_header(net), separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)
    tensors = [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for a in state_dict(net).values()]

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            f.writelines(a.tobytes() for a in tensors)

    atomic_write(path, write)
