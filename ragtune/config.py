"""YAML <-> typed dataclasses.

A config is a dataclass whose fields may be nested dataclasses. ``load_config(path, overrides, cls)``
reads a YAML mapping, applies dotted overrides (``train.lr=3e-5``), and builds ``cls`` with every
value checked against its field's type. An unknown key, a wrong type or a bad value is a
:class:`ConfigError` that names the key and the file. ``save_config`` writes the resolved config
as YAML (atomically) beside an output, so a run can be reproduced from its folder alone.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Path``, ``Literal[...]``,
``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ragtune.data.io import atomic_write_text
from ragtune.errors import UserError

T = TypeVar("T")

# Keys that an earlier ragtune version read, and what replaced them.
_RENAMED = {
    "bf16": "; every `bf16: true/false` key was replaced by the one top-level "
    "`precision: auto | fp32 | bf16` (auto: bf16 only where the hardware runs it natively)",
}


class ConfigError(UserError):
    """A config file or override that does not fit its dataclass."""


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None) -> Any:
    """A config field with its help text: ``dataclasses.field(default=..., metadata={"help": help})``.

    ``factory`` (a callable) gives mutable defaults, as ``default_factory`` does. The help text is
    what ``python -m ragtune.config_docs`` renders into docs/configuration.md: one line saying what
    the field does, its unit, and what 0 or null means where that matters.
    """
    if not help or not help.strip():
        raise ValueError("a config setting needs a non-empty help text")
    if factory is not None:
        if default is not dataclasses.MISSING:
            raise ValueError("give a setting either a default or a factory, not both")
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class LoggingConfig:
    """Where a run's metrics go besides its ``history.jsonl``."""

    tensorboard: bool = setting(
        True,
        help="also write the metrics as TensorBoard events to output_dir/tensorboard (when tensorboard is installed)",
    )


def load_config(path: str | Path | None, overrides: list[str] | None, cls: type[T]) -> T:
    """Build ``cls`` from the YAML file at ``path`` (or from defaults when ``path`` is None).

    ``overrides`` are ``dotted.key=value`` strings whose values are parsed as YAML scalars
    (``lr=3e-5`` gives a float, ``prefixes=[a,b]`` a list).
    """
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping, got {type(loaded).__name__}")
        raw = loaded
    for item in overrides or []:
        _apply_override(raw, item)
    return from_dict(cls, raw, source=source)


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected dotted.key=value")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(cls: type[T], data: Any, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and types; errors name key and source."""
    where = prefix.rstrip(".") or "top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        hint = _RENAMED.get(unknown[0], "")
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}' (known keys here: {known}){hint}")
    kwargs = {name: _coerce(data[name], hints[name], source, f"{prefix}{name}") for name in data}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value if value is not None else {}, source, key + ".")
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, source, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{source}: key {key!r}: {value!r} fits none of {tp}"
        )
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{source}: key {key!r}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key {key!r}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key {key!r}: expected a mapping, got {type(value).__name__}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, vt, source, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key {key!r}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: key {key!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 3e-5 (no dot) as a string; accept numeric strings for floats only.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{source}: key {key!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: key {key!r}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{source}: key {key!r}: expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(f"{source}: key {key!r}: unsupported field type {tp}")  # pragma: no cover


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain YAML-ready data (paths become strings, tuples lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def save_config(cfg: Any, path: str | Path, header: str = "") -> Path:
    """Write the resolved config as YAML to ``path`` (atomically) and return the path; ``header``
    lines are written first as YAML comments (ignored when the file is loaded again)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return atomic_write_text(Path(path), comments + text)


__all__ = ["ConfigError", "LoggingConfig", "from_dict", "load_config", "save_config", "setting", "to_dict"]
