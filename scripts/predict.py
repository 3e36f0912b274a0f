"""Segment your own images with a trained checkpoint: colour masks and overlays.

    python scripts/predict.py checkpoint=outputs/.../checkpoints/best.pt input=photos/ output=predicted/
    python scripts/predict.py checkpoint=best.pt input=street.jpg output=out/ inference.mode=slide inference.flip=true

``input`` is an image file or a folder (searched recursively) of images in any format and
size OpenCV reads; files it cannot decode are skipped with a warning. For every image
``output/color/<name>.png`` (palette colours) and ``output/overlay/<name>.png`` (colours over
the image) are written, ``<name>`` being the file's path without its extension (with it, for
files that would otherwise share a name: ``a.jpg.png`` and ``a.png.png``); ``formats=[color,overlay,index]`` picks others (``index``: class ids).

Options (key=value): ``device`` (auto | cpu | cuda), ``amp`` (auto | bf16 | fp16 | off),
``alpha`` (overlay opacity), ``inference.*`` as in configs/eval.yaml (mode, crop_size, stride,
window_batch, flip, scales).
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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


class PredictError(RuntimeError):
    """Bad input to predict.py; the message says what to fix."""


def parse_args(argv: list[str]):
    unknown = [arg for arg in argv if "=" not in arg]
    if unknown or not argv:
        raise PredictError(f"arguments are key=value pairs; usage: {Path(sys.argv[0]).name} checkpoint=PATH input=FILE_OR_FOLDER output=FOLDER" + (f" (got {unknown})" if unknown else ""))
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
    missing = [key for key in ("checkpoint", "input", "output") if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise PredictError(f"missing {', '.join(k + '=...' for k in missing)}; usage: predict.py checkpoint=PATH input=FILE_OR_FOLDER output=FOLDER")
    unknown_keys = sorted(set(cfg) - set(DEFAULTS))
    if unknown_keys:
        raise PredictError(f"unknown option(s) {unknown_keys}; known: {sorted(DEFAULTS)}")
    return cfg


def find_images(path: Path) -> list[tuple[Path, str]]:
    """``(file, output name)`` of the input file, or of every file under the input folder (decoded later)."""
    if path.is_file():
        return [(path, path.stem)]
    if not path.is_dir():
        raise PredictError(f"input {path} does not exist; give an image file or a folder of images")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise PredictError(f"no readable image in {path}: the folder is empty. Give a folder holding PNG, JPEG, BMP, TIFF or WebP images.")
    from recallseg.engine.predictions import unique_output_names

    try:
        names = unique_output_names([file.relative_to(path) for file in files])
    except ValueError as error:
        raise PredictError(str(error)) from None
    return list(zip(files, names))


def palette_of(state: dict, cfg: dict):
    """The class colours: stored in the checkpoint, else the dataset class's, else None (generated)."""
    if state.get("palette") is not None:
        return state["palette"]
    target = (cfg.get("dataset") or {}).get("_target_")
    if target:
        try:
            from hydra.utils import get_class

            return getattr(get_class(target), "palette", None)
        except Exception:  # the dataset class is optional here: fall back to generated colours
            return None
    return None


def predict(cfg) -> list[Path]:
    import torch

    from recallseg.data.io import DatasetError, read_image
    from recallseg.engine.checkpoint_evaluation import model_from_checkpoint, read_checkpoint
    from recallseg.engine.inference import Inference, InferenceSettings
    from recallseg.engine.predictions import PredictionWriter
    from recallseg.engine.runtime import Normalizer, init_runtime

    checkpoint = Path(cfg.checkpoint)
    state = read_checkpoint(checkpoint)
    train_cfg = OmegaConf.create(state["config"])
    classes = list(state.get("classes") or [])
    if not classes:
        raise PredictError(f"{checkpoint} does not list its classes; was it written by recallseg train?")
    images = find_images(Path(cfg.input))
    settings = InferenceSettings.from_config(OmegaConf.to_container(cfg.inference, resolve=True))
    runtime = init_runtime(cfg.device, cfg.amp, "auto")
    model = model_from_checkpoint(state, train_cfg, len(classes), runtime, checkpoint)
    normalizer = Normalizer.for_model(train_cfg.model, runtime)
    infer = Inference(settings)
    names = [name for _, name in images]
    palette = palette_of(state, OmegaConf.to_container(train_cfg, resolve=False))
    writers = [PredictionWriter(Path(cfg.output) / fmt, fmt, names, classes, palette, cfg.alpha) for fmt in cfg.formats]
    written, skipped = [], []
    with torch.no_grad():
        for index, (file, _) in enumerate(images):
            try:
                image = read_image(file)
            except DatasetError as error:
                if len(images) == 1:
                    raise
                skipped.append(f"{file.name} ({str(error).split(': ', 1)[-1]})")
                print(f"warning: skipped {file}: {error}", file=sys.stderr)
                continue
            x = normalizer(torch.from_numpy(image)[None])
            with runtime.autocast():
                prediction = infer(model, x).argmax(1)[0]
            prediction = prediction.cpu()
            for writer in writers:
                written.append(writer.write(prediction, index, image))
    if skipped and len(skipped) == len(images):
        listed = "; ".join(skipped[:5]) + (f"; ... and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        raise PredictError(
            f"no readable image in {cfg.input}: {len(skipped)} file(s), none decodable by OpenCV ({listed}). "
            "Give a folder holding PNG, JPEG, BMP, TIFF or WebP images."
        )
    print(f"{len(images) - len(skipped)} image(s) -> {', '.join(str(w.directory) for w in writers)}")
    return written


def main(argv: list[str] | None = None) -> int:
    from recallseg.data.io import DatasetError
    from recallseg.engine.checkpoint import CheckpointError

    try:
        predict(parse_args(sys.argv[1:] if argv is None else argv))
    except (PredictError, CheckpointError, DatasetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
