"""The configuration reference, rendered from the config dataclasses.

Every config field carries its help text (``ragtune.config.setting(default, help=...)``); this module
turns the top-level configs into Markdown tables (key, type, default, help) and keeps the
generated parts of ``docs/configuration.md`` and of the README's Configuration section up to date::

    python -m ragtune.config_docs --write   # rewrite the generated parts (also: make docs)
    python -m ragtune.config_docs --check   # exit 1 when they differ from the dataclasses

A generated part sits between ``<!-- generated:NAME -->`` and ``<!-- /generated -->``; the text
around the markers is written by hand and left alone. Imports no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ragtune.checker.config import CheckerConfig
from ragtune.data.io import atomic_write_text
from ragtune.e2e.config import E2EConfig
from ragtune.generator.config import GeneratorConfig
from ragtune.reranker.config import RerankerConfig
from ragtune.retriever.config import RetrieverConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"

# The top-level configs, by the name their marker and their ``configs/<name>/`` folder use.
CONFIGS: dict[str, type] = {
    "retriever": RetrieverConfig,
    "reranker": RerankerConfig,
    "generator": GeneratorConfig,
    "e2e": E2EConfig,
    "checker": CheckerConfig,
}
TITLES = {
    "retriever": "Retriever",
    "reranker": "Reranker",
    "generator": "Generator",
    "e2e": "Joint tuning",
    "checker": "Faithfulness checker",
}

GENERATED = re.compile(r"<!-- generated:(?P<name>[\w.:-]+) -->\n(?P<body>.*?)<!-- /generated -->", re.S)


@dataclasses.dataclass
class Row:
    """One field of a config: its dotted key, readable type, default (as YAML) and help text."""

    key: str
    type: str
    default: str
    help: str


def type_name(tp: Any) -> str:
    """A field type as a user writes its YAML value: ``int``, ``path or null``, ``auto | fp32 | bf16``,
    ``list of int``; ``section`` for a nested dataclass."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return "section"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(get_args(tp)) else inner
    if origin is Literal:
        return " | ".join(str(v) for v in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        inner = type_name(args[0]) if args else "any"
        return f"list of ({inner})" if " " in inner else f"list of {inner}"
    if origin is dict:
        args = get_args(tp)
        return f"mapping of str to {type_name(args[1])}" if args else "mapping"
    if tp is Path:
        return "path"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def yaml_value(value: Any) -> str:
    """A default as it would be written in YAML: ``null``, ``true``, ``2e-5``, ``[1, 3, 5]``, ``""``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return repr(value)
        mantissa, exponent = f"{value:.12e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def field_help(field: dataclasses.Field) -> str:
    """The help text of a config field (empty when it has none)."""
    return str(field.metadata.get("help", "")).strip()


def summary(cls: type) -> str:
    """The first paragraph of a class docstring, on one line, with reST markup made Markdown."""
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in doc.splitlines())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def config_fields(cls: type) -> Iterator[tuple[type, dataclasses.Field]]:
    """Every (dataclass, field) reachable from ``cls``, nested sections included (each class once)."""
    seen: set[type] = set()

    def walk(c: type) -> Iterator[tuple[type, dataclasses.Field]]:
        if c in seen:
            return
        seen.add(c)
        hints = get_type_hints(c)
        for f in dataclasses.fields(c):
            if not f.init:
                continue
            yield c, f
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                yield from walk(tp)

    yield from walk(cls)


def sections(cls: type) -> list[tuple[str, type, list[Row]]]:
    """``(dotted prefix, class, rows)`` for the top level and every nested section of ``cls``, depth
    first in field order. Defaults come from ``cls()``, so a section whose parent sets other defaults
    (the joint config's ``generator.raft``) shows the ones that apply."""
    out: list[tuple[str, type, list[Row]]] = []

    def walk(obj: Any, prefix: str) -> None:
        c = type(obj)
        hints = get_type_hints(c)
        rows, nested = [], []
        for f in dataclasses.fields(c):
            if not f.init:
                continue
            tp, value = hints[f.name], getattr(obj, f.name)
            is_section = dataclasses.is_dataclass(tp) and isinstance(tp, type)
            default = "" if is_section else yaml_value(value)
            rows.append(Row(prefix + f.name, type_name(tp), default, field_help(f)))
            if is_section:
                nested.append((value, f"{prefix}{f.name}."))
        out.append((prefix.rstrip("."), c, rows))
        for value, sub in nested:
            walk(value, sub)

    walk(cls(), "")
    return out


def _cell(text: str, code: bool = False) -> str:
    text = text.replace("|", "\\|")
    return f"`{text}`" if code and text else text


def table(rows: list[Row], columns: tuple[str, ...] = ("key", "type", "default", "help")) -> str:
    """A Markdown table of ``rows`` with the given columns (keys and defaults as code)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in rows:
        cells = {
            "key": _cell(r.key, code=True),
            "type": _cell(r.type),
            "default": _cell(r.default, code=True),
            "help": _cell(r.help),
        }
        lines.append("| " + " | ".join(cells[c] for c in columns) + " |")
    return "\n".join(lines)


def config_tables(cls: type, level: int = 3) -> str:
    """The reference of top-level config ``cls``: one Markdown table per section (the top level
    first, then each nested section, depth first), each under a heading with the section's
    docstring summary. Columns: dotted key, type, default, help."""
    parts = []
    for prefix, section_cls, rows in sections(cls):
        title = f"`{prefix}`" if prefix else "top level"
        parts.append(f"{'#' * level} {title}\n\n{summary(section_cls)}\n\n{table(rows)}\n")
    return "\n".join(parts)


def top_level_table(cls: type) -> str:
    """The top-level keys of ``cls`` only, with their help (a section's key as ``train.*``)."""
    _, _, rows = sections(cls)[0]
    keys = [dataclasses.replace(r, key=r.key + ".*" if r.type == "section" else r.key) for r in rows]
    return table(keys, ("key", "help"))


def readme_block() -> str:
    """The README's generated part: the top-level keys of each config, one row per config (their
    help texts are in docs/configuration.md)."""
    rows = ["| config | top-level keys (sections as `name.*`) |", "| --- | --- |"]
    for name, cls in CONFIGS.items():
        _, _, fields = sections(cls)[0]
        keys = " ".join(f"`{r.key}.*`" if r.type == "section" else f"`{r.key}`" for r in fields)
        anchor = f"docs/configuration.md#{TITLES[name].lower().replace(' ', '-')}-configs{name}yaml"
        rows.append(f"| [{TITLES[name]}]({anchor}) `configs/{name}/` | {keys} |")
    return "\n".join(rows) + "\n"


def blocks() -> dict[Path, dict[str, str]]:
    """What each generated part of each file must hold, by file and marker name."""
    docs = {f"config:{name}": config_tables(cls) for name, cls in CONFIGS.items()}
    return {DOCS: docs, README: {"config:top-level": readme_block()}}


def replace_generated(
    text: str, parts: Mapping[str, str], source: str = "<text>", prefix: str = "config:"
) -> str:
    """``text`` with the body of each ``<!-- generated:NAME -->`` ... ``<!-- /generated -->`` part
    replaced by ``parts[NAME]``, for the names that start with ``prefix`` (other generators own the
    other parts: ``bench:`` parts are benchmarks/report.py's). Every name of ``parts`` must occur
    exactly once; a ``prefix`` marker whose name is not in ``parts`` is an error (stale or misspelt)."""
    found = [m["name"] for m in GENERATED.finditer(text) if m["name"].startswith(prefix)]
    for name in parts:
        if found.count(name) != 1:
            raise ValueError(
                f"{source}: expected one '<!-- generated:{name} -->' part, found {found.count(name)}"
            )
    unknown = sorted(set(found) - set(parts))
    if unknown:
        raise ValueError(f"{source}: unknown generated part '{unknown[0]}' (known: {', '.join(parts)})")

    def body(m: re.Match[str]) -> str:
        if not m["name"].startswith(prefix):
            return m[0]
        content = parts[m["name"]].strip("\n")
        return f"<!-- generated:{m['name']} -->\n{content}\n<!-- /generated -->"

    return GENERATED.sub(body, text)


def generated_parts(text: str) -> dict[str, str]:
    """The bodies of the generated parts of ``text``, by marker name (without surrounding newlines)."""
    return {m["name"]: m["body"].strip("\n") for m in GENERATED.finditer(text)}


def stale(files: Mapping[Path, Mapping[str, str]] | None = None) -> list[str]:
    """The ``file: part`` names whose text differs from what renders now (empty: all up to date)."""
    out = []
    for path, parts in (files or blocks()).items():
        current = generated_parts(path.read_text(encoding="utf-8"))
        for name, content in parts.items():
            if current.get(name) != content.strip("\n"):
                out.append(f"{path.name}: {name}")
    return out


def write(files: Mapping[Path, Mapping[str, str]] | None = None) -> list[Path]:
    """Rewrite the generated parts of every file (atomically); returns the files that changed."""
    changed = []
    for path, parts in (files or blocks()).items():
        text = path.read_text(encoding="utf-8")
        new = replace_generated(text, parts, str(path))
        if new != text:
            atomic_write_text(path, new)
            changed.append(path)
    return changed


def generator_cli(
    argv: list[str] | None,
    prog: str,
    description: str,
    write: Callable[[], list[Path]],
    stale: Callable[[], list[str]],
    show: Callable[[], None],
) -> int:
    """The command line of a docs generator (this module, ``benchmarks/report.py``): ``--write``
    rewrites the generated parts, ``--check`` exits 1 when one is out of date, neither prints them."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the generated parts of the files")
    mode.add_argument("--check", action="store_true", help="exit 1 when a generated part is out of date")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if args.check:
        out = stale()
        for name in out:
            print(f"out of date: {name} (run {prog} --write)", file=sys.stderr)
        return 1 if out else 0
    show()
    return 0


def main(argv: list[str] | None = None) -> int:
    def show() -> None:
        for name, cls in CONFIGS.items():
            print(f"## {TITLES[name]}\n\n{config_tables(cls)}")

    return generator_cli(
        argv, "python -m ragtune.config_docs", __doc__.split("\n\n")[0], write, lambda: stale(), show
    )


if __name__ == "__main__":
    sys.exit(main())
