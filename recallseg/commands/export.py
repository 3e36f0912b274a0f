"""Export a checkpoint's network to ONNX, for deployment without recallseg or PyTorch.

    recallseg-export checkpoint=outputs/.../checkpoints/best.pt output=model.onnx
    recallseg-export checkpoint=best.pt output=model.onnx raw_input=true argmax=true

The graph has a dynamic batch size, height and width, and takes any size: it pads the input
bottom/right to a multiple of the checkpoint's ``inference.size_multiple`` and crops the logits
back, as evaluation does. By default it is the network so padded: input ``images``, float32
``[N, 3, H, W]`` normalised with the checkpoint's ``model.mean``/``model.std`` (and resized to
its ``dataset.resize`` when it has one: the caller's part); output ``logits`` ``[N, classes, H, W]``.
Options (key=value):

- ``raw_input=true``: the input is uint8 ``[N, H, W, 3]`` RGB, as image files decode, and the
  graph is the checkpoint's whole input pipeline (``evaluation.model_input``): resized to
  ``dataset.resize`` when it is set, channels in ``model.channel_order``, normalised, padded,
  and the logits resized back to the input's size, as recallseg-predict does (a checkpoint with a
  ``dataset.val_transform`` is refused: no ONNX graph can hold one);
- ``argmax=true``: the output is ``labels``, int64 ``[N, H, W]`` class indices;
- ``opset`` (default 17); ``verify`` (default true): when onnxruntime is installed, run the file
  on one random input and print the largest difference from PyTorch.

The checkpoint's stored config is data: the network is rebuilt from it the way evaluation
does (only recallseg / segmentation-models-pytorch classes, no weight download).

``output`` is checked before the checkpoint is read (a folder, a place that cannot be written,
the checkpoint itself are refused), and written atomically: an export that fails, for a full
disk say, leaves an existing ``model.onnx`` as it was.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from recallseg.atomic_files import atomic_path, check_output_location
from recallseg.checkpoints.model import CheckpointModel
from recallseg.commands.common import ToolError, exit_code, parse_options, wants_help
from recallseg.evaluation.inference import Inference
from recallseg.evaluation.model_input import ModelInput, Segmenter
from recallseg.runtime.device import Runtime

DEFAULTS = {"checkpoint": "???", "output": "???", "opset": 17, "raw_input": False, "argmax": False, "verify": True}
USAGE = "recallseg-export checkpoint=PATH output=model.onnx [raw_input=true] [argmax=true] [opset=17]"
OPSET = 17


class DeployedNetwork(nn.Module):
    """The network padded to its size multiple (whole-image inference, no test-time augmentation),
    with ``raw_input`` inside the checkpoint's whole input pipeline (``Segmenter``), and optionally an argmax after it."""

    def __init__(self, network: nn.Module, model_input: ModelInput, raw_input: bool = False, argmax: bool = False):
        super().__init__()
        self.raw_input, self.argmax = raw_input, argmax
        if raw_input and model_input.val_transform:
            raise ToolError(
                f"dataset.val_transform: the checkpoint's validation transformed images with {model_input.val_transform}, which an ONNX "
                "graph cannot hold; export with raw_input=false and apply it, the resize and the normalisation before the model"
            )
        settings, runtime = model_input.settings(), Runtime(torch.device("cpu"), None, False)
        self.segment = Segmenter.for_checkpoint(network, model_input, runtime, settings, resize=True) if raw_input else None
        self.network, self.inference = network, Inference(settings)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.segment(images) if self.raw_input else self.inference(self.network, images)
        return logits.argmax(1) if self.argmax else logits


def deployed_network(loaded: CheckpointModel, raw_input: bool, argmax: bool) -> DeployedNetwork:
    network = loaded.model.float().to(memory_format=torch.contiguous_format).cpu().eval()
    return DeployedNetwork(network, ModelInput.from_config(loaded.config), raw_input, argmax).eval()


def example_input(raw_input: bool, height: int = 64, width: int = 96, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if raw_input:
        return torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator)
    return torch.randn(batch, 3, height, width, generator=generator)


def export_onnx(module: DeployedNetwork, output: Path, opset: int = OPSET) -> Path:
    """Write ``module`` as ONNX with dynamic batch, height and width (TorchScript-based exporter)."""
    spatial = {0: "batch", 1: "height", 2: "width"} if module.raw_input else {0: "batch", 2: "height", 3: "width"}
    out_name = "labels" if module.argmax else "logits"
    out_axes = {0: "batch", 1: "height", 2: "width"} if module.argmax else {0: "batch", 2: "height", 3: "width"}
    import warnings

    # A deployed model.onnx is replaced whole or not at all: the exporter writes in place.
    with torch.no_grad(), warnings.catch_warnings(), atomic_path(output) as temporary:
        warnings.simplefilter("ignore")  # the exporter's tracer warnings are about Python-side shape checks
        torch.onnx.export(
            module, (example_input(module.raw_input),), str(temporary), input_names=["images"], output_names=[out_name],
            dynamic_axes={"images": spatial, out_name: out_axes}, opset_version=opset, dynamo=False,
        )  # fmt: skip
    return output


def onnx_outputs(path: Path, x: torch.Tensor):
    """``path`` run by onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def export(cfg) -> Path:
    output = Path(cfg.output)
    if output.suffix.lower() != ".onnx":
        raise ToolError(f"output={output}: the file name must end in .onnx")
    check_output_location("output", output, reads=[("checkpoint", cfg.checkpoint)], file=True)
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise ToolError("exporting needs the onnx package: pip install 'recallseg[export]'") from None
    loaded = CheckpointModel(cfg.checkpoint, "cpu", "off")
    module = deployed_network(loaded, bool(cfg.raw_input), bool(cfg.argmax))
    export_onnx(module, output, int(cfg.opset))
    resize = ModelInput.from_config(loaded.config).resize
    print(f"wrote {output} (opset {int(cfg.opset)}, {len(loaded.classes)} classes, input {'uint8 NHWC' if cfg.raw_input else 'float NCHW'}, "
          f"output {'labels' if cfg.argmax else 'logits'}; dynamic batch, height, width)")
    if resize and not cfg.raw_input:
        print(f"note: the checkpoint's validation resized images to {resize[0]}x{resize[1]} (HxW, dataset.resize); this graph does not: "
              "resize them before normalising, or export with raw_input=true")
    if cfg.verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("onnxruntime is not installed: not verified (pip install 'recallseg[export]')")
            return output
        x = example_input(bool(cfg.raw_input), 96, 128, 1)
        with torch.no_grad():
            expected = module(x).numpy()
        got = onnx_outputs(output, x)
        if cfg.argmax:
            print(f"verified at 1x96x128 with onnxruntime: {float((got == expected).mean()) * 100:.3f}% of the pixels get PyTorch's class")
        else:
            print(f"verified at 1x96x128 with onnxruntime: max |logit difference| from PyTorch {float(abs(got - expected).max()):.2e}")
    return output


def main(argv: list[str] | None = None) -> int:
    """The command: 0 on success, 2 after a one-line error."""
    if wants_help(sys.argv[1:] if argv is None else argv, __doc__):
        return 0
    return exit_code(lambda args: export(parse_options(args, DEFAULTS, ("checkpoint", "output"), USAGE)), argv)


def cli() -> None:
    """``recallseg-export``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
