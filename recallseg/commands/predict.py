"""Segment your own images with a trained checkpoint: colour masks and overlays.

    recallseg-predict checkpoint=outputs/.../checkpoints/best.pt input=photos/ output=predicted/
    recallseg-predict checkpoint=best.pt input=street.jpg output=out/ inference.mode=slide inference.flip=true

``input`` is an image file or a folder (searched recursively) of images in any format and
size OpenCV reads; files it cannot decode (corrupt, not images, over OpenCV's pixel limit) are
skipped and named in one warning line. For every image
``output/color/<name>.png`` (palette colours) and ``output/overlay/<name>.png`` (colours over
the image) are written, ``<name>`` being the file's path without its extension (with it, for
files that would otherwise share a name: ``a.jpg.png`` and ``a.png.png``); ``formats=[color,overlay,index]`` picks others (``index``: class ids).
``output/run.json`` records this run (code, versions, machine, command) and the checkpoint's
training run.

``output`` is refused before the model loads when it is a file or cannot be written, or when
a format folder is, lies inside or holds ``input``; each PNG is written atomically (a full disk
leaves no partial file).

Each image goes through the input pipeline the checkpoint's validation used
(``evaluation.model_input``: ``dataset.resize``, ``dataset.val_transform``, normalisation, padding to
``inference.size_multiple``), and its mask is written at the image's own size, as ``evaluate.py``
scores it and the exported ONNX model returns it.

Options (key=value): ``device`` (auto | cpu | cuda), ``amp`` (auto | bf16 | fp16 | off),
``alpha`` (overlay opacity), ``inference.*`` as in configs/eval.yaml (mode, crop_size, stride,
window_batch, flip, scales; size_multiple, by default the checkpoint's).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from recallseg.atomic_files import check_output_location
from recallseg.checkpoints.model import CheckpointModel
from recallseg.commands.common import ToolError, exit_code, parse_options, wants_help

DEFAULTS = {
    "checkpoint": "???",
    "input": "???",
    "output": "???",
    "formats": ["color", "overlay"],
    "alpha": 0.5,
    "device": "auto",
    "amp": "auto",
    "inference": {},
}
USAGE = "recallseg-predict checkpoint=PATH input=FILE_OR_FOLDER output=FOLDER [formats=[color,overlay,index]] [device=cpu] [inference.mode=slide ...]"


def parse_args(argv: list[str]):
    return parse_options(argv, DEFAULTS, ("checkpoint", "input", "output"), USAGE)


def find_images(path: Path) -> list[tuple[Path, str]]:
    """``(file, output name)`` of the input file, or of every file under the input folder (decoded later)."""
    if path.is_file():
        return [(path, path.stem)]
    if not path.is_dir():
        raise ToolError(f"input {path} does not exist; give an image file or a folder of images")
    from recallseg.data.walk import Walk

    walk = Walk(f"input {path}", path)
    files = walk.files(path)  # every file: decoding tells an image from anything else
    walk.report()
    if not files:
        raise ToolError(f"no readable image in {path}: the folder is empty. Give a folder holding PNG, JPEG, BMP, TIFF or WebP images.")
    from recallseg.evaluation.predictions import unique_output_names

    try:
        names = unique_output_names([file.relative_to(path) for file in files])
    except ValueError as error:
        raise ToolError(str(error)) from None
    return list(zip(files, names))


def check_output_folders(cfg) -> None:
    """Refuse, before the model loads, an output that is a file or cannot be written, and format
    folders that are, lie inside or hold the input (a prediction could replace an image)."""
    output = Path(cfg.output)
    check_output_location("output", output)
    for fmt in cfg.formats:
        check_output_location("output", output / str(fmt), reads=[("input", cfg.input)])


def write_run(output: Path, record: dict, training_run) -> Path:
    """``run.json``: this prediction's record and the one its checkpoint's training stored."""
    import json

    from recallseg.atomic_files import atomic_write

    output.mkdir(parents=True, exist_ok=True)
    with atomic_write(output / "run.json") as handle:
        json.dump({"run": record, "training_run": training_run}, handle, indent=2, default=str)
    return output / "run.json"


def input_sizes(images: list[tuple[Path, str]]) -> list[tuple[int, int]]:
    """``(height, width)`` of the input images from their headers; files that are not images are left to decoding to name."""
    from recallseg.data.files import image_size

    sizes = []
    for file, _ in images:
        try:
            sizes.append(tuple(image_size(file)))
        except Exception:  # the loop below skips it with its reason
            continue
    return sizes


def predict(cfg) -> list[Path]:
    import time

    import torch

    from recallseg.data.files import read_image
    from recallseg.errors import DatasetError
    from recallseg.evaluation.inference import InferenceSettings, check_size_multiple
    from recallseg.evaluation.memory import check_inference_memory
    from recallseg.evaluation.model_input import ModelInput, Segmenter
    from recallseg.models.builder import input_divisor
    from recallseg.evaluation.predictions import PredictionWriter
    from recallseg.evaluation.run_record import new_record, with_end

    started = time.perf_counter()
    images = find_images(Path(cfg.input))
    check_output_folders(cfg)
    options = OmegaConf.to_container(cfg.inference, resolve=True)
    InferenceSettings.from_config(options)  # a wrong option is refused before the model loads
    loaded = CheckpointModel(cfg.checkpoint, cfg.device, cfg.amp)
    model_input = ModelInput.from_config(loaded.config)  # what validation did around the network
    settings = model_input.settings(options)
    runtime, model, classes = loaded.runtime, loaded.model, loaded.classes
    record = new_record("predict", runtime, lambda: {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "output"})
    record.update(checkpoint=str(cfg.checkpoint), input=str(Path(cfg.input).resolve()))
    segment = Segmenter.for_checkpoint(model, model_input, runtime, settings)
    frame = model_input.frame_transform()
    check_size_multiple(settings, input_divisor(model))
    sizes = [model_input.resize] if model_input.resize else input_sizes(images)
    check_inference_memory(model, settings, sizes, runtime.device, runtime.autocast, "the largest input image")
    names = [name for _, name in images]
    palette = loaded.palette()
    writers = [PredictionWriter(Path(cfg.output) / fmt, fmt, names, classes, palette, cfg.alpha) for fmt in cfg.formats]
    written, skipped = [], []
    with torch.no_grad():
        for index, (file, _) in enumerate(images):
            try:
                image = read_image(file)
            except DatasetError as error:
                if len(images) == 1:
                    raise
                skipped.append(f"{file.relative_to(cfg.input)} ({str(error).split(': ', 1)[-1]})")
                continue
            with runtime.autocast():  # the mask at the image's own size
                prediction = segment(torch.from_numpy(frame(image))[None], image.shape[:2]).argmax(1)[0]
            prediction = prediction.cpu()
            for writer in writers:
                written.append(writer.write(prediction, index, image))
    listed = "; ".join(skipped[:5]) + (f"; ... and {len(skipped) - 5} more" if len(skipped) > 5 else "")
    if skipped and len(skipped) == len(images):
        raise ToolError(
            f"no readable image in {cfg.input}: {len(skipped)} file(s), none decodable by OpenCV ({listed}). "
            "Give a folder holding PNG, JPEG, BMP, TIFF or WebP images."
        )
    if skipped:
        print(f"warning: skipped {len(skipped)} of {len(images)} file(s) in {cfg.input} that OpenCV cannot decode: {listed}", file=sys.stderr)

    write_run(Path(cfg.output), with_end(record, started, len(images) - len(skipped), runtime), loaded.state.get("run"))
    print(f"{len(images) - len(skipped)} image(s) -> {', '.join(str(w.directory) for w in writers)}")
    return written


def main(argv: list[str] | None = None) -> int:
    """The command: 0 on success, 2 after a one-line error."""
    if wants_help(sys.argv[1:] if argv is None else argv, __doc__):
        return 0
    return exit_code(lambda args: predict(parse_args(args)), argv)


def cli() -> None:
    """``recallseg-predict``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
