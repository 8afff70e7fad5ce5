"""One way to configure every entry point: dataclass schema <- YAML files (in order) <- ``key=value``.

The schema is a tree of dataclasses; OmegaConf (structured configs) does the merging and the type
conversion. This module adds what OmegaConf lacks for a friendly CLI: unknown keys are rejected with
a "did you mean" hint naming the file or override they came from, mandatory values that are still
missing say which key to set, and the fully resolved config can be written next to any output.

Library code never receives these objects whole: entry points translate them into typed arguments.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from common.files import atomic_write_text

T = TypeVar("T")

__all__ = ["ConfigError", "load_config", "config_to_yaml", "save_resolved_config", "config_from_yaml_text"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file/override and the key."""


def load_config(
    schema: type[T], files: Sequence[str | os.PathLike[str]] = (), overrides: Sequence[str] = ()
) -> T:
    """Build a ``schema`` instance from its defaults, then each YAML file in order, then overrides.

    Args:
        schema: a dataclass type whose fields (possibly nested dataclasses, lists, dicts) form the schema.
        files: YAML files merged in order; later files win.
        overrides: ``"a.b.c=value"`` strings (OmegaConf dotlist syntax; values are parsed as YAML,
            and a value that is not valid YAML, such as ``*.png``, is taken as text).

    Returns:
        A fully converted instance of ``schema`` (``__post_init__`` validators have run).

    Raises:
        ConfigError: missing or unreadable file, unknown key (with a hint), wrong value type,
            a mandatory value left unset, or a validator's complaint.
    """
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    merged = OmegaConf.structured(schema)
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (or is not a file)")
        try:
            loaded = OmegaConf.load(path)
        except Exception as exc:  # yaml.YAMLError and friends
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None or (isinstance(loaded, DictConfig) and len(loaded) == 0):
            continue
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config file {path} must hold a mapping at the top level, got a list")
        check_keys(schema, OmegaConf.to_container(loaded, resolve=False), source=str(path))
        merged = _merge(merged, loaded, source=str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. model.mam=false)")
        key, raw = (part.strip() for part in item.split("=", 1))
        source = f"override {item!r}"
        _check_path(schema, key.split("."), source=source)
        _check_list_indices(merged, key, source)
        value, parsed = _override_value(raw)
        try:
            # update() (unlike a dotlist merge) can reach into lists: sources.0.path=...
            OmegaConf.update(merged, key, value, merge=True)
        except OmegaConfBaseException as exc:
            hint = "" if parsed else f" ({raw!r} is not valid YAML, so it was taken as text)"
            raise ConfigError(f"{source}: invalid value{hint}: {getattr(exc, 'msg', exc)}") from exc
    try:
        return typing.cast(T, OmegaConf.to_object(merged))
    except MissingMandatoryValue as exc:
        raise ConfigError(f"config value {exc.full_key!r} must be set (e.g. {exc.full_key}=...)") from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(f"invalid config: {exc}") from exc
    except (ValueError, TypeError) as exc:  # raised by a schema's __post_init__ validator
        raise ConfigError(f"invalid config: {exc}") from exc


def _override_value(raw: str) -> tuple[Any, bool]:
    """The value of an override's right-hand side, parsed as YAML; (value, whether it parsed).

    Text that is not valid YAML is taken as the string it is: ``pattern=*.png`` (``*`` starts a YAML
    alias) means the text ``*.png``, as anyone typing it means. To force a string that *is* valid
    YAML of another type, quote it for YAML inside the shell's quotes: ``'name="007"'``.
    """
    try:
        return OmegaConf.from_dotlist([f"value={raw}"])["value"], True
    except Exception:  # yaml.YAMLError, OmegaConf grammar errors: not YAML, so plain text
        return raw, False


def config_to_yaml(cfg: Any) -> str:
    """The YAML text of a config dataclass instance (enums written by value)."""
    container = _plain(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg)
    return OmegaConf.to_yaml(OmegaConf.create(container))


def config_from_yaml_text(schema: type[T], text: str) -> T:
    """Rebuild a config of ``schema`` from the YAML text :func:`config_to_yaml` wrote."""
    loaded = OmegaConf.create(text)
    check_keys(schema, OmegaConf.to_container(loaded), source="embedded config")
    return typing.cast(
        T, OmegaConf.to_object(_merge(OmegaConf.structured(schema), loaded, "embedded config"))
    )


def settings_from(target: type[T], source: Any, **overrides: Any) -> T:
    """Build the library-side settings dataclass ``target`` from a config section ``source``.

    Every field of ``target`` that ``source`` also has is copied by name; ``overrides`` set the
    rest (or replace copied values). Fields neither provides keep ``target``'s defaults. This keeps
    config sections (what YAML may say) and library settings (what code needs) apart without a
    hand-written field-by-field copy at each entry point.
    """
    if not dataclasses.is_dataclass(target):
        raise TypeError(f"settings_from needs a dataclass type, got {target!r}")
    names = {f.name for f in dataclasses.fields(target) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"{target.__name__} has no field(s) {unknown}")
    values = {n: getattr(source, n) for n in names if n not in overrides and hasattr(source, n)}
    return target(**values, **overrides)


def save_resolved_config(cfg: Any, path: str | os.PathLike[str]) -> Path:
    """Write the fully resolved config as YAML to ``path`` (atomically) and return the path."""
    target = Path(path)
    atomic_write_text(target, config_to_yaml(cfg))
    return target


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if (
        hasattr(value, "value")
        and isinstance(getattr(value, "value", None), (str, int))
        and not isinstance(value, (str, int, float, bool))
    ):
        return value.value  # a plain Enum
    if isinstance(value, str):
        return str(value)  # str-Enums such as Modality become plain strings
    return value


def _merge(base: DictConfig, other: DictConfig | ListConfig, source: str) -> DictConfig:
    try:
        return typing.cast(DictConfig, OmegaConf.merge(base, other))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f" at key {key!r}" if key else ""
        raise ConfigError(
            f"{source}: invalid value{where}: {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from exc


# ----------------------------------------------------------------------------------------- key checks


def check_keys(schema: Any, data: Any, source: str, prefix: str = "") -> None:
    """Reject keys of ``data`` (a plain dict from YAML) that ``schema`` does not have, with a hint."""
    kind, inner = _classify(schema)
    if kind == "dataclass" and isinstance(data, dict):
        fields = _fields(inner)
        for key, value in data.items():
            if key not in fields:
                _unknown(str(key), fields, source, prefix)
            check_keys(fields[key], value, source, f"{prefix}{key}.")
    elif kind == "list" and isinstance(data, list):
        for index, value in enumerate(data):
            check_keys(inner, value, source, f"{prefix}{index}.")
    elif kind == "dict" and isinstance(data, dict):
        for key, value in data.items():
            check_keys(inner, value, source, f"{prefix}{key}.")


def _check_path(schema: Any, parts: list[str], source: str, prefix: str = "") -> None:
    if not parts:
        return
    head, rest = parts[0], parts[1:]
    kind, inner = _classify(schema)
    if kind == "dataclass":
        fields = _fields(inner)
        if head not in fields:
            _unknown(head, fields, source, prefix)
        _check_path(fields[head], rest, source, f"{prefix}{head}.")
    elif kind == "list":
        if not head.isdigit():
            raise ConfigError(f"{source}: {prefix}{head!r} must be a list index (0, 1, ...)")
        _check_path(inner, rest, source, f"{prefix}{head}.")
    elif kind == "dict":
        _check_path(inner, rest, source, f"{prefix}{head}.")
    else:
        raise ConfigError(f"{source}: {prefix.rstrip('.')!r} is a plain value and has no key {head!r}")


def _check_list_indices(cfg: DictConfig, key: str, source: str) -> None:
    node: Any = cfg
    walked: list[str] = []
    for part in key.split("."):
        if isinstance(node, ListConfig):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"{source}: {'.'.join(walked)!r} is a list of {len(node)} entries; "
                    f"index {part!r} is out of range (add entries in a YAML file)"
                )
            node = node[int(part)]
        elif isinstance(node, DictConfig) and part in node:
            node = node[part]
        else:
            return
        walked.append(part)


def _unknown(key: str, fields: dict[str, Any], source: str, prefix: str) -> typing.NoReturn:
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
    valid = ", ".join(sorted(fields))
    raise ConfigError(f"{source}: unknown key '{prefix}{key}'{hint} (valid keys here: {valid})")


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _classify(tp: Any) -> tuple[str, Any]:
    """Return ('dataclass'|'list'|'dict'|'leaf', inner type) for a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return _classify(non_none[0])
        return "leaf", tp
    if dataclasses.is_dataclass(tp):
        return "dataclass", tp
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        return "list", args[0] if args else Any
    if origin is dict:
        args = typing.get_args(tp)
        return "dict", args[1] if len(args) == 2 else Any
    return "leaf", tp
