"""The run folder: one place for everything a training run writes.

```
<output_dir>/
  config.yaml            resolved config (written before the first step)
  checkpoints/last.pt    latest state (atomic; what --resume reads)
  checkpoints/best.pt    best weights by eval.best_metric
  checkpoints/final.pt   weights after the last epoch
  metrics.jsonl          one JSON object per logged step / evaluation
  tensorboard/           TensorBoard event files
  eval/                  evaluation tables (markdown + JSON), CMC curves
  pictures/              loss curves, pattern-map overlays
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import atomic_write_text


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def final(self) -> Path:
        return self.checkpoints / "final.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def pictures(self) -> Path:
        return self.root / "pictures"

    def create(self) -> RunFolder:
        for folder in (self.root, self.checkpoints, self.eval, self.pictures):
            folder.mkdir(parents=True, exist_ok=True)
        return self


class MetricsLog:
    """Append-only JSON lines, flushed per line; on resume, lines past the checkpoint are dropped.

    Each record carries ``step`` (global iteration) so a resumed run that replays steps does not
    leave duplicates behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (rewritten atomically); drop a torn last line."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by kill -9
            if int(record.get("step", 0)) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records
