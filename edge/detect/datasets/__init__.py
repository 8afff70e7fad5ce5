"""Person-box datasets for training a thermal detector: readers of the usual thermal datasets' labels
(LLVIP Pascal VOC XML, FLIR ADAS COCO JSON, KAIST bbGt text) and a writer of ultralytics' YOLO format.

No torch and no ultralytics here: converting needs only numpy, OpenCV and the standard library.
Training (``edge.detect.training``) imports ultralytics lazily.
"""

from edge.detect.datasets.readers import (
    DatasetError,
    LabelledImage,
    read_flir_coco,
    read_kaist,
    read_llvip,
)
from edge.detect.datasets.yolo_format import YoloDataset, read_yolo_labels, write_yolo_dataset

__all__ = [
    "DatasetError",
    "LabelledImage",
    "YoloDataset",
    "read_flir_coco",
    "read_kaist",
    "read_llvip",
    "read_yolo_labels",
    "write_yolo_dataset",
]
