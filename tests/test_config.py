"""The config loader: defaults <- YAML files in order <- key=value; clear errors with hints."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from common.configuring import (
    ConfigError,
    config_from_yaml_text,
    config_to_yaml,
    load_config,
    save_resolved_config,
)
from trainer.config import TrainConfig


def test_defaults_are_the_official_sysu_recipe():
    cfg = load_config(TrainConfig)
    assert (cfg.model.arch, cfg.model.height, cfg.model.width, cfg.model.num_classes) == (
        "resnet50",
        384,
        128,
        395,
    )
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.epochs, cfg.optim.milestones) == (
        3.5e-4,
        5e-4,
        140,
        [80, 120],
    )
    assert (cfg.data.num_ids_per_batch, cfg.data.images_per_id, cfg.data.batch_size) == (16, 8, 128)
    assert (cfg.loss.sep_weight, cfg.loss.cc_margin, cfg.loss.kl_weight, cfg.loss.modality_id_weight) == (
        0.5,
        0.7,
        2.5,
        1.0,
    )


def test_files_merge_in_order_then_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("model:\n  arch: resnet18\n  height: 128\noptim:\n  lr: 0.001\n")
    b.write_text("model:\n  height: 256\n")
    cfg = load_config(TrainConfig, [a, b], ["optim.lr=0.002", "model.mam=false", "optim.milestones=[3,5]"])
    assert cfg.model.arch == "resnet18" and cfg.model.height == 256
    assert cfg.optim.lr == 0.002 and cfg.model.mam is False and cfg.optim.milestones == [3, 5]


def test_unknown_key_in_a_file_names_the_file_and_suggests(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  archh: resnet18\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: unknown key 'model\.archh'; did you mean 'model\.arch'\?"
    ):
        load_config(TrainConfig, [bad])


def test_unknown_override_suggests():
    with pytest.raises(ConfigError, match=r"unknown key 'loss\.mm'; did you mean 'loss\.mml'"):
        load_config(TrainConfig, overrides=["loss.mm=false"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(TrainConfig, overrides=["loss.mml"])


def test_wrong_type_and_validator_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(TrainConfig, overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"batch_size=100 does not match P x K"):
        load_config(TrainConfig, overrides=["data.batch_size=100"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, [tmp_path / "missing.yaml"])
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(TrainConfig, [listy])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(TrainConfig, overrides=["model.arch=resnet18", "data.root=/data/x"])
    path = save_resolved_config(cfg, tmp_path / "run" / "config.yaml")
    assert path.is_file()
    again = load_config(TrainConfig, [path])
    assert again == cfg
    assert config_from_yaml_text(TrainConfig, config_to_yaml(cfg)) == cfg


@dataclass
class Source:
    path: str = ""
    fps: float = 25.0


@dataclass
class Node:
    sources: list[Source] = field(default_factory=lambda: [Source(), Source()])


def test_overrides_reach_into_lists_of_dataclasses():
    cfg = load_config(Node, overrides=["sources.1.path=/videos/b.mp4", "sources.0.fps=12.5"])
    assert cfg.sources[1].path == "/videos/b.mp4" and cfg.sources[0].fps == 12.5
    with pytest.raises(ConfigError, match=r"'sources' is a list of 2 entries; index '5' is out of range"):
        load_config(Node, overrides=["sources.5.path=x"])
    with pytest.raises(ConfigError, match=r"unknown key 'sources.0.pth'; did you mean 'sources.0.path'"):
        load_config(Node, overrides=["sources.0.pth=x"])
    with pytest.raises(ConfigError, match="sources.0.fps"):
        load_config(Node, overrides=["sources.0.fps=fast"])


def test_settings_from_copies_shared_fields_and_rejects_unknown_overrides():
    from common.configuring import settings_from

    @dataclass(frozen=True)
    class Settings:
        a: int = 1
        b: str = "x"
        c: float = 0.5

    @dataclass
    class Section:
        a: int = 7
        b: str = "y"
        extra: int = 3  # a config-only field is not passed on

    assert settings_from(Settings, Section()) == Settings(a=7, b="y", c=0.5)
    assert settings_from(Settings, Section(), b="z", c=2.0) == Settings(a=7, b="z", c=2.0)
    with pytest.raises(TypeError, match=r"no field\(s\) \['d'\]"):
        settings_from(Settings, Section(), d=1)
