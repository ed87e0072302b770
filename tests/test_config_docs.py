"""The configuration reference: every config field has a help text, and docs/configuration.md and the
README's top-level tables are exactly what the dataclasses render now."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

import ragtune.config
import ragtune.e2e.config
import ragtune.generator.config
import ragtune.retriever.config
from ragtune import config_docs
from ragtune.config import load_config, setting, to_dict
from ragtune.config_docs import CONFIGS, config_fields, field_help, replace_generated, sections, type_name
from ragtune.e2e.config import E2EConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_MODULES = [ragtune.config, ragtune.retriever.config, ragtune.generator.config, ragtune.e2e.config]


def defined_config_classes() -> list[type]:
    """Every dataclass defined (not imported) in a config module."""
    return [
        obj
        for module in CONFIG_MODULES
        for obj in vars(module).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
    ]


def test_every_field_of_every_config_dataclass_has_a_help_text() -> None:
    classes = defined_config_classes()
    assert len(classes) >= 20
    missing = [
        f"{cls.__module__}.{cls.__name__}.{f.name}"
        for cls in classes
        for f in dataclasses.fields(cls)
        if not field_help(f) or "\n" in field_help(f)
    ]
    assert not missing, f"fields without a one-line help: {missing}"
    # ... and the reference reaches every one of them from the top-level configs.
    # (a base class, such as the RAFT mix, through its subclasses)
    reached = {c for top in CONFIGS.values() for c, _ in config_fields(top)}
    reached |= {base for c in reached for base in c.__mro__ if dataclasses.is_dataclass(base)}
    assert set(classes) <= reached, set(classes) - reached


def test_generated_docs_and_readme_are_up_to_date() -> None:
    assert config_docs.stale() == [], "run `python -m ragtune.config_docs --write` (make docs)"
    assert config_docs.main(["--check"]) == 0


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def doc_rows(name: str) -> dict[str, tuple[str, str, str]]:
    """``key -> (type, default, help)`` as docs/configuration.md shows them for config ``name``."""
    text = config_docs.generated_parts((ROOT / "docs" / "configuration.md").read_text())[f"config:{name}"]
    rows = {}
    for line in text.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")]
        key, tp, default, help_ = cells
        rows[key.strip("`")] = (tp, default[1:-1] if default.startswith("`") else default, help_)
    return rows


@pytest.mark.parametrize("name", list(CONFIGS))
def test_docs_list_every_key_and_each_default_loads_back_to_itself(name: str) -> None:
    cls = CONFIGS[name]
    rows = doc_rows(name)
    defaults = flatten(to_dict(cls()))
    leaves = {k: v for k, v in rows.items() if v[0] != "section"}
    assert set(leaves) == set(defaults)
    for key, (_, default, help_) in leaves.items():
        assert help_, key
        # The default as printed is a valid override that gives the dataclass's own default.
        cfg = load_config(None, [f"{key}={default}"], cls)
        assert flatten(to_dict(cfg))[key] == defaults[key], key


def test_a_section_shows_the_defaults_its_parent_sets() -> None:
    rows = doc_rows("e2e")
    # GeneratorStep builds RaftMix(p_gold=0.8, num_distractors=2) and GenerateConfig(max_new_tokens=64).
    assert rows["generator.raft.num_distractors"][1] == "2"
    assert rows["generator.generate.max_new_tokens"][1] == "64"
    assert doc_rows("generator")["generate.max_new_tokens"][1] == "128"
    prefixes = [prefix for prefix, _, _ in sections(E2EConfig)]
    assert prefixes[:3] == ["", "data", "retriever"] and "generator.raft" in prefixes


@pytest.mark.parametrize(
    ("tp", "text"),
    [
        (int, "int"),
        (Path, "path"),
        (Path | None, "path or null"),
        (float | None, "float or null"),
        (Literal["auto", "fp32", "bf16"], "auto | fp32 | bf16"),
        (list[int], "list of int"),
        (tuple[int, ...], "list of int"),
        (list[Literal["bm25", "dense"]], "list of (bm25 | dense)"),
        (dict[str, float], "mapping of str to float"),
        (E2EConfig, "section"),
    ],
)
def test_type_names_read_as_yaml_values(tp: object, text: str) -> None:
    assert type_name(tp) == text


def test_yaml_values_of_defaults() -> None:
    y = config_docs.yaml_value
    assert [y(2e-4), y(3e-5), y(0.05), y(0.0), y(None), y(False), y(""), y([1, 3]), y(Path("a/b"))] == [
        "2e-4",
        "3e-5",
        "0.05",
        "0.0",
        "null",
        "false",
        '""',
        "[1, 3]",
        "a/b",
    ]


def test_replace_generated_rewrites_only_its_own_parts() -> None:
    text = (
        "intro\n<!-- generated:config:a -->\nold\n<!-- /generated -->\nmiddle\n"
        "<!-- generated:bench:b -->\nkept\n<!-- /generated -->\n"
    )
    new = replace_generated(text, {"config:a": "| new |\n"})
    assert new == text.replace("old", "| new |")
    assert config_docs.generated_parts(new) == {"config:a": "| new |", "bench:b": "kept"}
    with pytest.raises(ValueError, match=r"expected one '<!-- generated:config:c -->' part, found 0"):
        replace_generated(text, {"config:a": "x", "config:c": "y"})
    with pytest.raises(ValueError, match="unknown generated part 'config:a'"):
        replace_generated(text, {})


def test_stale_names_a_part_that_was_edited_by_hand(tmp_path: Path) -> None:
    docs = tmp_path / "configuration.md"
    docs.write_text(
        (ROOT / "docs" / "configuration.md")
        .read_text()
        .replace("| `train.lr` | float | `2e-5` |", "| `train.lr` | float | `3e-5` |", 1)
    )
    parts = config_docs.blocks()[config_docs.DOCS]
    assert config_docs.stale({docs: parts}) == ["configuration.md: config:retriever"]
    assert config_docs.write({docs: parts}) == [docs]
    assert config_docs.stale({docs: parts}) == []


def test_setting_is_a_dataclass_field_with_help() -> None:
    @dataclasses.dataclass
    class Example:
        n: int = setting(3, help="a number")
        xs: list[int] = setting(factory=lambda: [1], help="a list")

    a, b = Example(), Example()
    assert a.n == 3 and a.xs == [1] and a.xs is not b.xs
    assert [field_help(f) for f in dataclasses.fields(Example)] == ["a number", "a list"]
    with pytest.raises(ValueError, match="non-empty help"):
        setting(1, help=" ")
    with pytest.raises(ValueError, match="not both"):
        setting(1, help="x", factory=list)


def test_rendering_imports_no_torch() -> None:
    code = "import sys, ragtune.config_docs as d; d.blocks(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
