"""The JSON sidecar that travels with every engine artifact (design principle 3).

``model.onnx`` has ``model.onnx.json`` beside it (likewise for ``.plan`` and ``.pt``): how to
preprocess a crop for it, what comes out, the precision actually in the artifact, where it came from,
and an ``engine_id`` that the linker's gallery uses to refuse mixing embeddings from different
engines. No torch here: the edge pipeline reads sidecars on machines without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.files import atomic_write_text, sha256_file

SCHEMA_VERSION = 1
FORMATS = ("torch", "onnx", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SidecarError(ValueError):
    """A sidecar that is missing, malformed, or does not match its artifact."""


@dataclass(frozen=True)
class Preprocessing:
    """How a crop becomes the engine's input tensor.

    Attributes:
        height, width: input size in pixels (the crop is resized to exactly this, aspect not kept,
            as in MPANet's training transform).
        channel_order: channel order the network expects (``RGB``).
        mean, std: per-channel normalisation applied after scaling pixels to [0, 1].
        infrared_to_3ch: how a single-channel infrared crop becomes 3 channels: ``replicate``
            (the grey value copied to all channels; SYSU-MM01/RegDB infrared images are stored so).
        resize: interpolation, ``bilinear``.
        layout, dtype: of the input tensor: ``NCHW`` ``float32``.
    """

    height: int
    width: int
    channel_order: str = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    infrared_to_3ch: str = "replicate"
    resize: str = "bilinear"
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise SidecarError(f"preprocessing height/width must be positive, got {self.height}x{self.width}")
        if self.channel_order not in ("RGB", "BGR"):
            raise SidecarError(f"preprocessing.channel_order must be RGB or BGR, got {self.channel_order!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise SidecarError("preprocessing.mean/std must hold 3 values each, std > 0")
        if self.infrared_to_3ch != "replicate":
            raise SidecarError(
                f"preprocessing.infrared_to_3ch must be 'replicate', got {self.infrared_to_3ch!r}"
            )
        if self.layout != "NCHW" or self.dtype != "float32":
            raise SidecarError("preprocessing supports layout NCHW and dtype float32 only")


@dataclass(frozen=True)
class Compression:
    """Optional post-projection of the embedding (for large galleries).

    Attributes:
        kind: ``global`` (keep only the last ``dim`` values: MPANet's global part) or ``pca``.
        dim: output size after compression.
        input_dim: size before compression.
        pca_file: for ``pca``, a ``.npz`` beside the artifact with ``mean`` (input_dim,) and
            ``components`` (dim, input_dim); the projection is applied to L2-normalised embeddings
            and the result re-normalised.
        pca_sha256: sha256 of ``pca_file``.
    """

    kind: str
    dim: int
    input_dim: int
    pca_file: str | None = None
    pca_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("global", "pca"):
            raise SidecarError(f"compression.kind must be 'global' or 'pca', got {self.kind!r}")
        if not 0 < self.dim <= self.input_dim:
            raise SidecarError(f"compression.dim must be in 1..{self.input_dim}, got {self.dim}")
        if self.kind == "pca" and not self.pca_file:
            raise SidecarError("compression.kind 'pca' needs compression.pca_file")


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes an artifact accepts: ``max=None`` means any (dynamic ONNX, torch)."""

    min: int = 1
    opt: int = 8
    max: int | None = None


@dataclass(frozen=True)
class EngineSidecar:
    """Everything a runtime needs to know about an artifact, stored as ``<artifact>.json``.

    ``engine_id`` is a content hash over the artifact's bytes, its precision, its preprocessing, its
    output definition and compression: two artifacts give comparable embeddings only if their ids match.
    """

    format: str
    artifact: str
    artifact_sha256: str
    preprocessing: Preprocessing
    output_dim: int
    precision: str
    input_name: str = "images"
    output_name: str = "embeddings"
    normalized: bool = False
    batch: BatchProfile = field(default_factory=BatchProfile)
    compression: Compression | None = None
    checkpoint_sha256: str | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    engine_id: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SidecarError(f"sidecar.format must be one of {FORMATS}, got {self.format!r}")
        if self.precision not in PRECISIONS:
            raise SidecarError(f"sidecar.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.output_dim < 1:
            raise SidecarError(f"sidecar.output_dim must be positive, got {self.output_dim}")
        if self.schema_version != SCHEMA_VERSION:
            raise SidecarError(
                f"sidecar schema_version {self.schema_version} is not supported (expected {SCHEMA_VERSION})"
            )
        if not self.engine_id:
            object.__setattr__(self, "engine_id", self.compute_engine_id())

    @property
    def embedding_dim(self) -> int:
        """Size of the embeddings the runtime returns (after compression, if any)."""
        return self.compression.dim if self.compression else self.output_dim

    def compute_engine_id(self) -> str:
        """16 hex digits of sha256 over the artifact hash, precision, preprocessing, output and compression.

        The precision is part of the identity because one artifact can run at two precisions (a
        ``.pt`` checkpoint in FP32 or, on CUDA, FP16), and their embeddings are not the same.
        """
        identity = {
            "artifact_sha256": self.artifact_sha256,
            "precision": self.precision,
            "preprocessing": dataclasses.asdict(self.preprocessing),
            "output_dim": self.output_dim,
            "normalized": self.normalized,
            "compression": dataclasses.asdict(self.compression) if self.compression else None,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "sidecar") -> EngineSidecar:
        try:
            data = dict(data)
            data["preprocessing"] = Preprocessing(
                **{
                    **data["preprocessing"],
                    **{
                        k: tuple(data["preprocessing"][k])
                        for k in ("mean", "std")
                        if k in data["preprocessing"]
                    },
                }
            )
            if data.get("batch") is not None:
                data["batch"] = BatchProfile(**data["batch"])
            if data.get("compression") is not None:
                data["compression"] = Compression(**data["compression"])
            stored_id = data.pop("engine_id", "")
            sidecar = cls(**data)
        except SidecarError as exc:
            raise SidecarError(f"{source}: {exc}") from exc
        except (KeyError, TypeError) as exc:
            raise SidecarError(f"{source}: malformed sidecar ({exc})") from exc
        if stored_id and stored_id != sidecar.engine_id:
            raise SidecarError(
                f"{source}: engine_id {stored_id} does not match its content (recomputed {sidecar.engine_id}); "
                "the sidecar was edited or belongs to another artifact"
            )
        return sidecar


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def save_sidecar(sidecar: EngineSidecar, artifact: str | os.PathLike[str]) -> Path:
    """Write ``sidecar`` beside ``artifact`` atomically; returns the sidecar's path."""
    path = sidecar_path(artifact)
    atomic_write_text(path, sidecar.to_json())
    return path


def load_sidecar(artifact: str | os.PathLike[str], verify_artifact: bool = True) -> EngineSidecar:
    """Read the sidecar of ``artifact``; with ``verify_artifact`` check the artifact's sha256.

    Raises:
        SidecarError: sidecar missing or malformed, or it describes another file.
    """
    artifact = Path(artifact)
    path = sidecar_path(artifact)
    if not path.is_file():
        raise SidecarError(
            f"no sidecar for {artifact}: expected {path} (written by mpanet-export / mpanet-build-engine)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SidecarError(f"{path} is not readable JSON: {exc}") from exc
    sidecar = EngineSidecar.from_dict(data, source=str(path))
    if verify_artifact:
        if not artifact.is_file():
            raise SidecarError(f"artifact {artifact} named by {path} does not exist")
        actual = sha256_file(artifact)
        if actual != sidecar.artifact_sha256:
            raise SidecarError(
                f"{path} does not match {artifact}: artifact sha256 {actual[:16]}... but the sidecar says "
                f"{sidecar.artifact_sha256[:16]}... (re-export, or restore the matching files)"
            )
    return sidecar
