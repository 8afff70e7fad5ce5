"""The training schema: one tree of dataclasses behind ``mpanet-train`` and ``mpanet-eval``.

Loaded with :func:`common.configuring.load_config`: defaults here -> YAML files in order
(``configs/sysu.yaml``, ``configs/regdb.yaml``, ``configs/synthetic-cpu.yaml``) -> ``key=value``
overrides (``model.mam=false``, ``loss.mml=false``, ``data.root=/data/SYSU-MM01``). Defaults are the
official SYSU-MM01 recipe (spec section 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.losses.objective import LossConfig
from trainer.model.config import ModelConfig

DATASETS = ("sysu", "regdb")
EPOCH_CONVENTIONS = ("full_pass", "estimate")


@dataclass
class DataConfig:
    """Dataset, sampler and augmentation (spec section 3).

    Attributes:
        dataset: ``sysu`` (SYSU-MM01 layout; also what the synthetic generator writes) or ``regdb``.
        root: dataset folder (training needs it: ``data.root=/path``; empty = not set).
        regdb_trial: RegDB split 1..10 (train and test on the same trial).
        num_ids_per_batch: P identities per batch (16 SYSU, 12 RegDB).
        images_per_id: K images per identity, half infrared, half visible (8 SYSU, 10 RegDB).
        batch_size: must equal P x K (checked, so a typo cannot silently change the recipe).
        epoch_convention: ``full_pass`` (one full pass of the sampler, ignite 0.2 behaviour) or
            ``estimate`` (the sampler's own length estimate, about half as many batches).
        workers: DataLoader worker processes.
        test_batch_size: images per batch at feature extraction.
        skip_corrupt: skip unreadable images (counted) instead of failing.
        flip_prob, pad_px, erase_prob: train augmentation (0.5, 10, 0.5).
    """

    dataset: str = "sysu"
    root: str = ""
    regdb_trial: int = 1
    num_ids_per_batch: int = 16
    images_per_id: int = 8
    batch_size: int = 128
    epoch_convention: str = "full_pass"
    workers: int = 4
    test_batch_size: int = 64
    skip_corrupt: bool = False
    flip_prob: float = 0.5
    pad_px: int = 10
    erase_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {self.dataset!r}")
        if self.epoch_convention not in EPOCH_CONVENTIONS:
            raise ValueError(
                f"data.epoch_convention must be one of {EPOCH_CONVENTIONS}, got {self.epoch_convention!r}"
            )
        if self.images_per_id < 2 or self.images_per_id % 2:
            raise ValueError(
                f"data.images_per_id (K) must be even and >= 2 (K/2 per modality), got {self.images_per_id}"
            )
        if self.num_ids_per_batch < 2:
            raise ValueError(f"data.num_ids_per_batch (P) must be >= 2, got {self.num_ids_per_batch}")
        if self.batch_size != self.num_ids_per_batch * self.images_per_id:
            raise ValueError(
                f"data.batch_size={self.batch_size} does not match P x K = {self.num_ids_per_batch} x "
                f"{self.images_per_id} = {self.num_ids_per_batch * self.images_per_id} "
                f"(data.num_ids_per_batch x data.images_per_id)"
            )
        if not 1 <= self.regdb_trial <= 10:
            raise ValueError(f"data.regdb_trial must be in 1..10, got {self.regdb_trial}")


@dataclass
class OptimConfig:
    """Adam with coupled L2 weight decay and a per-epoch step schedule, no warm-up (spec section 3)."""

    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    epochs: int = 140
    milestones: list[int] = field(default_factory=lambda: [80, 120])
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1:
            raise ValueError(f"optim.lr must be > 0 and optim.epochs >= 1, got {self.lr}, {self.epochs}")
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas must hold two values, got {list(self.betas)}")


@dataclass
class EvalConfig:
    """Evaluation during and after training (spec sections 3 and 4).

    Attributes:
        start_epoch, interval: evaluate after epoch ``start_epoch`` every ``interval`` epochs
            (115 / 5 in MPANet: epochs 120, 125, ..., 140); the last epoch is always evaluated.
        trials: gallery trials (10).
        best_metric: what picks ``best.pt``: SYSU all-search single-shot rank-1, or for RegDB the
            mean rank-1 of both directions (the official choice).
    """

    start_epoch: int = 115
    interval: int = 5
    trials: int = 10
    best_metric: str = "rank1"


@dataclass
class RunConfig:
    """Where and how a run executes.

    Attributes:
        output_dir: the run folder (config, checkpoints, metrics, pictures, TensorBoard).
        seed: python/numpy/torch seed (1 in MPANet).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``.
        amp: mixed precision on CUDA (ignored on CPU).
        deterministic: deterministic algorithms (bit-exact resume on CPU; slower on GPU).
        checkpoint_every_iters: also checkpoint mid-epoch every N iterations (0 = only per epoch).
        log_every_iters: metrics line interval.
        max_iters_per_epoch: cut epochs short (0 = no limit; for smoke tests).
        threads: torch CPU threads (0 = torch default).
    """

    output_dir: str = "runs/sysu"
    seed: int = 1
    device: str = "auto"
    amp: bool = True
    deterministic: bool = False
    checkpoint_every_iters: int = 0
    log_every_iters: int = 20
    max_iters_per_epoch: int = 0
    threads: int = 0


@dataclass
class TrainConfig:
    """Everything ``mpanet-train`` reads."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
