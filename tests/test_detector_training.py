"""The thermal YOLO path: LLVIP / FLIR ADAS / KAIST labels -> YOLO format (labels drawn back and
checked against the source boxes), and ``mpanet-train-detector train`` offline on the shared LLVIP
frames with a model built from a YOLO ``.yaml`` (random weights: the plumbing, not accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.annotations import read_voc_boxes
from edge.detect.datasets import (
    DatasetError,
    read_flir_coco,
    read_kaist,
    read_llvip,
    read_yolo_labels,
    write_yolo_dataset,
)
from edge.detect.training import TrainingError, draw_labels, main, train_detector

RED = np.array([0, 0, 255], np.uint8)


def _llvip_dirs(shared: Path) -> tuple[Path, Path]:
    root = shared / "real" / "llvip"
    if not root.is_dir():
        pytest.skip("LLVIP frames not in ../shared/data/real")
    return root / "infrared", root / "annotations"


def test_llvip_conversion_round_trips_the_voc_boxes_and_draws_them_back(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, annotations = _llvip_dirs(shared_data)
    assert (
        main(
            [
                "convert",
                "llvip",
                "--images",
                str(images),
                "--annotations",
                str(annotations),
                "--out",
                str(tmp_path / "yolo"),
            ]
        )
        == 0
    )
    data = tmp_path / "yolo"
    yaml = (data / "data.yaml").read_text()
    assert "train: images/train" in yaml and "0: person" in yaml
    written = sorted(data.glob("images/*/*.jpg"))
    assert len(written) == 4 and {p.parent.name for p in written} == {"train", "val"}
    assert "person boxes" in capsys.readouterr().out
    for image_path in written:
        xml = annotations / f"{image_path.stem}.xml"
        label = data / "labels" / image_path.parent.name / f"{image_path.stem}.txt"
        converted = read_yolo_labels(label, 1280, 1024)
        assert np.abs(converted - read_voc_boxes(xml)).max() < 0.01  # same boxes, in the same order
    # Drawn back onto the images: the red box edges lie on the xml boxes' corners.
    for split in ("train", "val"):
        for png in draw_labels(data, tmp_path / "drawn", split=split, count=4):
            image = cv2.imread(str(png))
            for x1, y1, x2, y2 in read_voc_boxes(annotations / f"{png.stem}.xml").astype(int):
                for x, y in ((x1, y1), (x2, y2), (x1, (y1 + y2) // 2)):
                    around = image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2].reshape(-1, 3)
                    assert (around == RED).all(axis=1).any(), (png.name, x, y)


def _image(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size[1], size[0], 3), 80, np.uint8))
    return path


def test_flir_coco_conversion_keeps_people_drops_crowds_and_other_classes(tmp_path: Path) -> None:
    folder = tmp_path / "images_thermal_val"
    _image(folder / "data" / "video-a-frame-000001.jpg")
    _image(folder / "data" / "video-a-frame-000002.jpg")
    coco = {  # FLIR ADAS v2 coco.json: categories by id, bbox [x, y, w, h] pixels
        "images": [
            {"id": 0, "file_name": "data/video-a-frame-000001.jpg", "width": 64, "height": 48},
            {"id": 1, "file_name": "data/video-a-frame-000002.jpg", "width": 64, "height": 48},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 5, 8, 20], "iscrowd": 0, "area": 160},
            {"id": 2, "image_id": 0, "category_id": 3, "bbox": [30, 20, 20, 10], "iscrowd": 0, "area": 200},
            {"id": 3, "image_id": 0, "category_id": 1, "bbox": [40, 0, 30, 60], "iscrowd": 1, "area": 1},
            {"id": 4, "image_id": 0, "category_id": 1, "bbox": [60, 30, 10, 30], "iscrowd": 0, "area": 300},
        ],
    }
    (folder / "coco.json").write_text(json.dumps(coco))
    items = read_flir_coco(folder / "coco.json")
    assert [i.split for i in items] == ["val", "val"]
    # The person box reaching outside the 64 x 48 frame is clipped; image 1 is a negative.
    assert items[0].boxes.tolist() == [[10, 5, 18, 25], [60, 30, 64, 48]] and len(items[1].boxes) == 0
    result = write_yolo_dataset(items, tmp_path / "out", images="copy")
    assert result.images == {"train": 0, "val": 2} and result.boxes["val"] == 2
    label = tmp_path / "out" / "labels" / "val" / "video-a-frame-000001.txt"
    assert np.allclose(read_yolo_labels(label, 64, 48), items[0].boxes, atol=1e-3)
    assert (tmp_path / "out" / "labels" / "val" / "video-a-frame-000002.txt").read_text() == ""
    coco["annotations"][0]["bbox"] = [1, 2]
    (folder / "coco.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="annotation 0 is malformed"):
        read_flir_coco(folder / "coco.json")
    with pytest.raises(DatasetError, match="no category named 'pedestrian'"):
        read_flir_coco(folder / "coco.json", category="pedestrian")


def test_kaist_conversion_reads_bbgt_files_and_keeps_names_unique(tmp_path: Path) -> None:
    root = tmp_path / "kaist"
    for set_name in ("set00", "set06"):
        for video in ("V000", "V001"):
            _image(root / "images" / set_name / video / "lwir" / "I00000.jpg", (640, 512))
            annotation = root / "annotations" / set_name / video / "I00000.txt"
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_text(
                "% bbGt version=3\n"
                "person 100 200 20 50 0 0 0 0 0 0 0\n"
                "people 300 200 60 50 0 0 0 0 0 0 0\n"
                "person? 400 200 10 30 0 0 0 0 0 0 0\n"
                "cyclist 500 210 30 60 1 500 210 30 40 0 0\n"
            )
    items = read_kaist(root)
    assert len(items) == 4 and [i.split for i in items] == ["train", "train", "val", "val"]
    assert items[0].boxes.tolist() == [[100, 200, 120, 250], [500, 210, 530, 270]]  # person + cyclist
    with pytest.raises(DatasetError, match="both map to"):
        write_yolo_dataset(items, tmp_path / "clash")
    result = write_yolo_dataset(items, tmp_path / "out", name_depth=3)
    names = sorted(p.name for p in (tmp_path / "out" / "images").rglob("*.jpg"))
    assert names == [
        "set00_V000_lwir_I00000.jpg",
        "set00_V001_lwir_I00000.jpg",
        "set06_V000_lwir_I00000.jpg",
        "set06_V001_lwir_I00000.jpg",
    ]
    assert result.boxes == {"train": 4, "val": 4}
    (root / "annotations" / "set00" / "V000" / "I00000.txt").write_text("person 1 2 three 4\n")
    with pytest.raises(DatasetError, match=r"I00000.txt:1: not a number"):
        read_kaist(root, sets=["set00"])


def test_llvip_reader_needs_an_annotation_per_image(tmp_path: Path) -> None:
    _image(tmp_path / "infrared" / "train" / "000001.jpg")
    (tmp_path / "xml").mkdir()
    with pytest.raises(DatasetError, match="no annotation"):
        read_llvip(tmp_path / "infrared", tmp_path / "xml")
    assert main(["convert", "llvip", "--out", str(tmp_path / "o")]) == 2


def test_train_detector_offline_from_a_yaml_model_and_the_node_loads_its_weights(
    shared_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ultralytics")
    images, annotations = _llvip_dirs(shared_data)
    data = write_yolo_dataset(read_llvip(images, annotations), tmp_path / "yolo", val_fraction=0.5)
    output = train_detector(
        data.data_yaml,
        "yolov8n.yaml",
        tmp_path / "models" / "thermal.pt",
        epochs=1,
        imgsz=96,
        batch=2,
        device="cpu",
        workers=0,
        project=tmp_path / "runs",
    )
    assert output.is_file() and output.stat().st_size > 1_000_000
    from edge.config import DetectorConfig
    from edge.detect import build_detector
    from edge.sources import Frame

    detector = build_detector(
        **{"name": "yolo", **DetectorConfig(name="yolo", weights=str(output)).arguments()}, image_size=96
    )
    frame = Frame("ir", "infrared", 0, 0.0, cv2.imread(str(images / "010001.jpg")))
    assert detector(frame).xyxy.shape[1] == 4  # random-ish weights: the plumbing, not the accuracy
    with pytest.raises(TrainingError, match="YOLO_OFFLINE"):
        train_detector(data.data_yaml, "yolo11n.pt", tmp_path / "x.pt")
    with pytest.raises(TrainingError, match="does not exist"):
        train_detector(tmp_path / "missing.yaml", "yolov8n.yaml", tmp_path / "x.pt")
