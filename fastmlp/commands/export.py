"""`fastmlp export`: a saved model as an ONNX graph or a safetensors file for PyTorch."""
import os

import click

from .common import arch, handle_errors, json_option, print_json

FORMATS = {".onnx": "onnx", ".safetensors": "safetensors"}

HELP = """Export a saved model to ONNX or safetensors (PyTorch).

\b
Examples:
  fastmlp export model.npz model.onnx
  fastmlp export model.npz model.safetensors
  fastmlp export model.npz weights.bin --format safetensors

MODEL is a model or checkpoint written by `fastmlp train --save` or MLP.save. Without --format the
format follows OUT's extension (.onnx or .safetensors). The ONNX graph (opset 17, IR version 8; needs
`pip install 'fastmlp[onnx]'`) takes "input" (n, N_0) in the model's dtype, or uint8 for a model
trained on uint8 pixels (scaled by 1/255 inside the graph), applies the model's input
standardisation, and gives "probabilities" and "label". The safetensors file holds the weights as
PyTorch's nn.Sequential(Linear, activation, Linear, ...) names them ("0.weight", "0.bias",
"2.weight", ...). OUT is written atomically: a failed export leaves no partial file.
"""


@click.command(name="export", help=HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(("onnx", "safetensors")), default=None,
              help="Output format  [default: from OUT's extension]")
@json_option()
@handle_errors
def command(model, out, fmt, as_json):
    export(model, out, fmt, as_json)


def export(model, out, fmt, as_json=False):
    if os.path.exists(out) and os.path.exists(model) and os.path.samefile(out, model):
        raise click.UsageError(f"OUT {out} is MODEL itself; exporting would replace the model: "
                               "choose another path")
    if fmt is None:
        fmt = FORMATS.get(os.path.splitext(out)[1].lower())
        if fmt is None:
            raise click.UsageError(f"cannot tell the format of {out} from its extension; give --format onnx "
                                   "or --format safetensors (or name it .onnx or .safetensors)")
    from .. import export as ex
    from ..model import load_npz

    net, _, _ = load_npz(model)
    try:
        if fmt == "onnx":
            ex.to_onnx(net, out)
        else:
            ex.to_safetensors(net, out)
    except ImportError as e:  # onnx is an optional extra
        raise click.ClickException(str(e)) from None
    source = "uint8 pixels / 255" if net.input_dtype == "uint8" else net.dtype.name
    standardised = getattr(net, "input_mean", None) is not None
    if as_json:
        print_json({"model": model, "out": out, "format": fmt, "sizes": net.sizes,
                    "activation": net.activation, "output": net.output, "dtype": net.dtype.name,
                    "input_dtype": net.input_dtype, "standardised": standardised,
                    "parameters": net.n_params, "bytes": os.path.getsize(out)})
        return
    click.echo(f"wrote {out}: {fmt}, {arch(net.sizes)} {net.activation}/{net.output}, {net.n_params:,} "
               f"{net.dtype.name} parameters, input (n, {net.sizes[0]}) {source}"
               f"{', standardised' if standardised else ''}, {os.path.getsize(out):,} bytes")
