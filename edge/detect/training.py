"""``mpanet-train-detector``: convert a thermal dataset to YOLO format and fine-tune a YOLO person detector.

mpanet-train-detector convert llvip --images LLVIP/infrared --annotations LLVIP/Annotations --out data/llvip-yolo
mpanet-train-detector convert flir --coco FLIR_ADAS_v2/images_thermal_train/coco.json --out data/flir-yolo
mpanet-train-detector convert kaist --root kaist-cvpr15 --sets set00 set01 set02 --every 5 --out data/kaist-yolo
mpanet-train-detector draw data/llvip-yolo --split val --count 8 --out outputs/llvip-labels
mpanet-train-detector train data/llvip-yolo/data.yaml --model yolo11n.pt --epochs 50 --imgsz 640 \\
    --output models/yolo11n-thermal.pt

Then in a node config, on the infrared camera: ``detector: {name: yolo, weights: models/yolo11n-thermal.pt}``.

``--model`` is any ultralytics model: a COCO-pretrained ``yolo11n.pt`` / ``yolov8n.pt`` (downloaded by
ultralytics on first use on a machine with internet; fine-tuning from it converges far faster than
from scratch) or a model ``.yaml`` (random weights: offline tests). Training runs in ultralytics
(``model.train``, one class ``person``); the best checkpoint is copied atomically to ``--output``.
Ultralytics (and through it torch) is imported only by ``train``: converting needs neither.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.detect.datasets import DatasetError, read_flir_coco, read_kaist, read_llvip, write_yolo_dataset
from edge.detect.datasets.yolo_format import read_yolo_labels


class TrainingError(RuntimeError):
    """Detector training that cannot start or finish (names the file / setting)."""


def train_detector(
    data_yaml: str | os.PathLike[str],
    model: str,
    output: str | os.PathLike[str],
    *,
    epochs: int = 50,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    workers: int = 2,
    project: str | os.PathLike[str] = "runs/detector",
    name: str = "thermal",
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Fine-tune ``model`` on the one-class dataset of ``data_yaml`` and copy its best weights to ``output``.

    Args:
        data_yaml: from ``mpanet-train-detector convert`` (or any ultralytics data yaml).
        model: ``yolo11n.pt`` / a local ``.pt`` / a model ``.yaml``.
        output: where the trained checkpoint goes (a ``.pt``, used as ``detector.weights``).
        epochs, imgsz, batch, device, workers, seed: ultralytics' ``train`` arguments.
        project, name: ultralytics' run folder (``<project>/<name>``: curves, validation plots).
        extra: more ultralytics ``train`` arguments (e.g. ``{"lr0": 0.002, "hsv_s": 0.0}``).

    Returns:
        ``output``.
    """
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise TrainingError(
            f"data yaml {data_yaml} does not exist (write one with `mpanet-train-detector convert`)"
        )
    if not model.endswith((".yaml", ".yml")) and not Path(model).is_file() and os.environ.get("YOLO_OFFLINE"):
        raise TrainingError(
            f"model {model} is not on disk and YOLO_OFFLINE is set: download it on a machine with internet "
            f"(`python -c \"from ultralytics import YOLO; YOLO('{Path(model).name}')\"`) and pass its path"
        )
    try:
        from ultralytics import YOLO
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TrainingError("training a detector needs the ultralytics package") from exc
    arguments: dict[str, Any] = dict(
        data=str(data_yaml),
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        workers=workers,
        project=str(Path(project).resolve()),
        name=name,
        exist_ok=True,
        single_cls=True,
        seed=seed,
        deterministic=True,
        plots=False,  # ultralytics' plots fetch a font from the internet on first use
        verbose=False,
    )
    if device is not None:
        arguments["device"] = device
    arguments.update(extra or {})
    yolo = YOLO(model, task="detect")
    try:
        yolo.train(**arguments)
    except Exception as exc:  # ultralytics raises assorted types (dataset, CUDA, arguments)
        raise TrainingError(f"ultralytics training on {data_yaml} failed: {exc}") from exc
    trainer = getattr(yolo, "trainer", None)
    best = Path(getattr(trainer, "best", "")) if trainer is not None else Path()
    if not best.is_file():
        best = Path(getattr(trainer, "last", "")) if trainer is not None else Path()
    if not best.is_file():
        raise TrainingError(
            f"ultralytics finished without a checkpoint in {arguments['project']}/{name}/weights"
        )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    shutil.copy2(best, partial)
    os.replace(partial, output)
    return output


def draw_labels(
    dataset: str | os.PathLike[str], out: str | os.PathLike[str], split: str = "val", count: int = 8
) -> list[Path]:
    """Draw the converted YOLO boxes back onto the first ``count`` images of ``split`` as PNGs
    (to check a conversion by eye). Returns the written files."""
    dataset, out = Path(dataset), Path(out)
    images = sorted((dataset / "images" / split).iterdir())[:count]
    if not images:
        raise DatasetError(f"no images in {dataset / 'images' / split}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        image = cv2.imread(str(path))
        if image is None:
            raise DatasetError(f"image {path} is not readable")
        label = dataset / "labels" / split / f"{path.stem}.txt"
        for x1, y1, x2, y2 in np.rint(read_yolo_labels(label, image.shape[1], image.shape[0])).astype(int):
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), (0, 0, 255), 2)
        target = out / f"{path.stem}.png"
        cv2.imwrite(str(target), image)
        written.append(target)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpanet-train-detector",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="a thermal dataset -> YOLO format + data.yaml")
    convert.add_argument("format", choices=("llvip", "flir", "kaist"))
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument("--images", help="llvip: the infrared image folder (searched recursively)")
    convert.add_argument("--annotations", help="llvip: the VOC xml folder")
    convert.add_argument("--coco", help="flir: the COCO json (coco.json / thermal_annotations.json)")
    convert.add_argument(
        "--images-root", help="flir: folder the json's file_name is relative to (default: its folder)"
    )
    convert.add_argument("--root", help="kaist: the dataset root (annotations/ and images/)")
    convert.add_argument("--sets", nargs="*", help="kaist: sets to read (default all; set06+ become val)")
    convert.add_argument("--every", type=int, default=1, help="kaist: keep every n-th frame")
    convert.add_argument("--val-fraction", type=float, default=0.1, help="share of unsplit images for val")
    convert.add_argument("--copy", action="store_true", help="copy images instead of symlinking them")
    draw = commands.add_parser("draw", help="draw converted labels back onto images (PNG) to check them")
    draw.add_argument("dataset")
    draw.add_argument("--out", required=True)
    draw.add_argument("--split", default="val")
    draw.add_argument("--count", type=int, default=8)
    train = commands.add_parser("train", help="fine-tune a YOLO person detector on a converted dataset")
    train.add_argument("data", help="data.yaml from convert")
    train.add_argument("--model", default="yolo11n.pt", help="ultralytics weights (.pt) or model .yaml")
    train.add_argument("--output", required=True, help="where the trained weights go (.pt)")
    train.add_argument("--epochs", type=int, default=50)
    train.add_argument("--imgsz", type=int, default=640)
    train.add_argument("--batch", type=int, default=16)
    train.add_argument("--device", default=None, help="cpu, 0, 0,1 ... (default: ultralytics' choice)")
    train.add_argument("--workers", type=int, default=2)
    train.add_argument("--project", default="runs/detector")
    train.add_argument("--name", default="thermal")
    train.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            if args.format == "llvip":
                if not (args.images and args.annotations):
                    raise DatasetError("convert llvip needs --images and --annotations")
                items, depth = read_llvip(args.images, args.annotations), 0
            elif args.format == "flir":
                if not args.coco:
                    raise DatasetError("convert flir needs --coco")
                items, depth = read_flir_coco(args.coco, args.images_root), 0
            else:
                if not args.root:
                    raise DatasetError("convert kaist needs --root")
                items, depth = read_kaist(args.root, args.sets, every=args.every), 3
            result = write_yolo_dataset(
                items,
                args.out,
                val_fraction=args.val_fraction,
                images="copy" if args.copy else "symlink",
                name_depth=depth,
            )
            print(f"wrote {result.data_yaml}: images {result.images}, person boxes {result.boxes}")
        elif args.command == "draw":
            written = draw_labels(args.dataset, args.out, args.split, args.count)
            print(f"drew {len(written)} images into {args.out}")
        else:
            output = train_detector(
                args.data,
                args.model,
                args.output,
                epochs=args.epochs,
                imgsz=args.imgsz,
                batch=args.batch,
                device=args.device,
                workers=args.workers,
                project=args.project,
                name=args.name,
                seed=args.seed,
            )
            print(f"trained weights: {output}  (detector: {{name: yolo, weights: {output}}})")
    except (DatasetError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
