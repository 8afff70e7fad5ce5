"""Shared fixtures. Real test material lives in ../shared/data (skipped cleanly when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` relative to the repository root; skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _offline_environment(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may download: point caches at a temp dir and keep ultralytics offline."""
    cache = tmp_path_factory.getbasetemp() / "offline-cache"
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "false")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(cache / "ultralytics"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    os.makedirs(cache, exist_ok=True)


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory):
    """The tiny FP32 engine (checkpoint + verified ONNX) of :mod:`engine_artifacts`, built once per session.

    Imported lazily so that test files which need no engine do not import torch at collection.
    """
    from engine_artifacts import tiny_engine

    return tiny_engine(tmp_path_factory.getbasetemp())
