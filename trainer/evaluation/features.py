"""Feature extraction, separate from scoring: any callable that embeds a batch can be evaluated.

``embed_fn`` receives an ``np.float32`` array (N, 3, H, W) made by the MPANet test transform (resize
to (H, W), /255, ImageNet normalisation, RGB) and returns an (N, D) array of embeddings; a torch
model, an onnxruntime session or a TensorRT engine fit behind the same function. Features can be
cached to disk (``.npz``) under a key made of the embedder id, the input size and every sample path,
so several protocols are scored from one extraction.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from common.files import atomic_save
from trainer.data.samples import Sample

__all__ = ["EmbedFn", "extract_features", "feature_cache_key", "torch_embed_fn"]

EmbedFn = Callable[[np.ndarray], np.ndarray]
_LOG = logging.getLogger(__name__)
_CACHE_FORMAT = 1


def feature_cache_key(samples: Sequence[Sample], *, embedder_id: str, height: int, width: int) -> str:
    """Hex sha256 of (format, embedder id, input size, all sample paths in order)."""
    digest = hashlib.sha256()
    digest.update(f"mpanet-features/{_CACHE_FORMAT}\n{embedder_id}\n{height}x{width}\n".encode())
    for sample in samples:
        digest.update(os.fsencode(sample.path))
        digest.update(b"\n")
    return digest.hexdigest()


def _stack(batch: list[np.ndarray]) -> np.ndarray:
    return np.stack(batch)


def extract_features(
    samples: Sequence[Sample],
    embed_fn: EmbedFn,
    *,
    height: int,
    width: int,
    batch_size: int = 64,
    cache_path: str | os.PathLike[str] | None = None,
    embedder_id: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Embed every sample's image; return float32 (N, D) in the order of ``samples``.

    Args:
        samples: images to embed.
        embed_fn: maps float32 (n, 3, height, width) (test transform applied) to (n, D).
        height, width: network input size in pixels.
        batch_size: images per ``embed_fn`` call.
        cache_path: optional ``.npz`` file. When it exists and its key (embedder id, size, paths)
            matches, the features are read from it; otherwise they are computed and written to it
            (atomically).
        embedder_id: identifies the model/engine; required with ``cache_path`` (a cache must never
            serve one model's features for another).
        num_workers: DataLoader worker processes for image decoding (0 = in this process).
        progress: show a tqdm bar.

    Raises:
        ValueError: ``cache_path`` without ``embedder_id``, an empty sample list, or an ``embed_fn``
            that returns the wrong shape or non-finite values.
        trainer.data.ImageReadError: an unreadable image (naming its path).
    """
    if not samples:
        raise ValueError("extract_features needs at least one sample")
    key = None
    if cache_path is not None:
        if not embedder_id:
            raise ValueError("cache_path needs embedder_id (the cache key must name the model/engine)")
        key = feature_cache_key(samples, embedder_id=embedder_id, height=height, width=width)
        cached = _read_cache(Path(cache_path), key, len(samples))
        if cached is not None:
            _LOG.info("features for %d images read from cache %s", len(samples), cache_path)
            return cached

    from torch.utils.data import DataLoader

    from trainer.data.dataset import SampleImageDataset
    from trainer.data.transforms import preprocess_test

    dataset = SampleImageDataset(samples, functools.partial(preprocess_test, height=height, width=width))
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_stack,
        drop_last=False,
    )
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="extracting features", unit="batch")
    outputs: list[np.ndarray] = []
    for images in batches:
        embedded = np.asarray(embed_fn(images))
        if embedded.ndim != 2 or embedded.shape[0] != images.shape[0]:
            raise ValueError(
                f"embed_fn must return ({images.shape[0]}, D) for a batch of {images.shape[0]} images, "
                f"got shape {embedded.shape}"
            )
        if not np.all(np.isfinite(embedded)):
            raise ValueError("embed_fn returned non-finite values (NaN or inf)")
        outputs.append(embedded.astype(np.float32, copy=False))
    features = np.concatenate(outputs, axis=0)
    if cache_path is not None and key is not None:
        _write_cache(Path(cache_path), key, features, embedder_id or "")
    return features


def _read_cache(path: Path, key: str, count: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as content:
            stored_key = str(content["key"])
            features = content["features"]
    except (OSError, KeyError, ValueError) as exc:
        _LOG.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
        return None
    if stored_key != key or features.shape[0] != count:
        _LOG.info("feature cache %s was made for other images or another embedder; recomputing", path)
        return None
    return features.astype(np.float32, copy=False)


def _write_cache(path: Path, key: str, features: np.ndarray, embedder_id: str) -> None:
    atomic_save(
        path,
        lambda handle: np.savez(
            handle, key=np.asarray(key), embedder_id=np.asarray(embedder_id), features=features
        ),
    )


def torch_embed_fn(model: object, *, device: str = "cpu") -> EmbedFn:
    """Wrap a torch module (called as ``model(batch)`` in eval mode, under no_grad) as an ``EmbedFn``.

    The module must return an (N, D) tensor for an (N, 3, H, W) float input. ``model.eval()`` is
    called here.
    """
    import torch

    module = model  # typed loosely so that this module's import stays free of torch
    module.eval()  # type: ignore[attr-defined]

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            output = module(torch.from_numpy(images).to(device))  # type: ignore[operator]
        return output.float().cpu().numpy()

    return embed
