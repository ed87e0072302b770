from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from ragtune.checker.config import CheckerConfig
from ragtune.config import ConfigError, load_config, save_config, to_dict
from ragtune.e2e.config import E2EConfig
from ragtune.generator.config import GeneratorConfig
from ragtune.reranker.config import RerankerConfig
from ragtune.retriever.config import RetrieverConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    lr: float = 1e-3
    mode: Literal["a", "b"] = "a"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    note: str | None = None


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    out: Path = Path("runs/x")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_nested_yaml_and_dotted_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "steps: 5\ninner:\n  lr: 3e-5\n  mode: b\n")
    cfg = load_config(path, ["inner.layers=[4,5,6]", "flag=true", "out=/tmp/o", "inner.note=hi"], Outer)
    assert cfg.steps == 5 and cfg.flag is True
    assert cfg.inner.lr == pytest.approx(3e-5) and isinstance(cfg.inner.lr, float)
    assert cfg.inner.mode == "b" and cfg.inner.layers == [4, 5, 6] and cfg.inner.note == "hi"
    assert cfg.out == Path("/tmp/o") and cfg.name == "x"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "inner:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: unknown key 'inner\.lrr'"):
        load_config(path, [], Outer)
    with pytest.raises(ConfigError, match=r"unknown key 'nope'"):
        load_config(None, ["nope=1"], Outer)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("steps: ten\n", "steps"),
        ("steps: 1.5\n", "steps"),
        ("flag: 1\n", "flag"),
        ("inner:\n  mode: c\n", "inner.mode"),
        ("inner:\n  layers: 3\n", "inner.layers"),
        ("inner:\n  layers: [1, x]\n", r"inner.layers\[1\]"),
        ("inner: 5\n", "inner"),
        ("name: [1]\n", "name"),
    ],
)
def test_wrong_type_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"cfg\.yaml.*{key}"):
        load_config(path, [], Outer)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml", [], Outer)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,\n"), [], Outer)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"), [], Outer)
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        load_config(None, ["steps"], Outer)


def test_post_init_validation_is_reported_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "eval:\n  depth: 5\n  ks: [10]\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*eval.*depth \(5\) must be >= the largest k \(10\)"):
        load_config(path, [], RetrieverConfig)


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["inner.lr=0.5", "inner.layers=[7]", "name=y"], Outer)
    saved = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert yaml.safe_load(saved.read_text())["inner"]["layers"] == [7]
    assert load_config(saved, [], Outer) == cfg
    assert to_dict(cfg)["out"] == "runs/x"


CONFIG_CLASSES = {
    "retriever": RetrieverConfig,
    "generator": GeneratorConfig,
    "e2e": E2EConfig,
    "reranker": RerankerConfig,
    "checker": CheckerConfig,
}


def _config_class(path: Path) -> type:
    stem = path.parent.name if path.parent.name != "tiny" else path.stem.split("_")[0]
    return CONFIG_CLASSES[stem]


ALL_CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[str(p.relative_to(ROOT)) for p in ALL_CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    cls = _config_class(path)
    cfg = load_config(path, [], cls)
    assert isinstance(cfg, cls)
    # Every key written in the file is a field that took the file's value.
    raw = yaml.safe_load(path.read_text()) or {}
    assert set(raw) <= set(to_dict(cfg))


def test_configs_folder_is_not_empty() -> None:
    assert len(ALL_CONFIGS) >= 3
