"""mkdocs hooks: the generated reference pages (CLI from the argument parser, spec keys from the spec parser).

Nothing is written into ``docs/``; the pages exist only in the build (mkdocs ``File.generated``).
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re

__all__ = ["cli_markdown", "on_files", "spec_markdown"]

_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _options(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | help |", "| --- | --- |"]
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.dest}`"
        if a.option_strings and a.nargs != 0:
            name += f" `{a.metavar or a.dest.upper()}`"
        text = (a.help or "").replace("|", "\\|").replace("\n", " ")
        if a.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += f" (default: `{a.default}`)"
        rows.append(f"| {name} | {text} |")
    return rows


def cli_markdown() -> str:
    """The CLI reference page, from ``distntk.cli._parser()``: every subcommand, every argument."""
    from distntk.cli import _parser

    parser = _parser()
    out = ["# Command line", "", "Generated at build time from `distntk.cli._parser()`.", "",
           "```", parser.format_usage().strip(), "```", ""]
    out += _options(parser) + [""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        out += [f"## distntk {name}", "", "```", p.format_usage().strip(), "```", ""]
        if p.description:
            out += [p.description, ""]
        out += _options(p) + [""]
    return "\n".join(out)


def spec_markdown() -> str:
    """The spec keys, read from ``distntk/spec.py``'s own ``_Table.get`` / ``_Table.table`` calls.

    spec.py has no single key table: the keys are where the parser reads them, so this reads its source.
    """
    tree = ast.parse((_ROOT / "distntk" / "spec.py").read_text())
    funcs = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    section: dict[str, str] = {}  # function name -> section its table argument is
    rows: dict[str, list[tuple[str, str, str]]] = {}

    def lit(n):
        return n.value if isinstance(n, ast.Constant) else None

    def table_call(n):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "table":
            return lit(n.args[0]) if n.args else None
        return None

    for f in funcs.values():
        local = {}
        for n in ast.walk(f):
            if isinstance(n, ast.Assign) and table_call(n.value):
                for t in n.targets:
                    if isinstance(t, ast.Name):
                        local[t.id] = table_call(n.value)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.args and table_call(n.args[0]):
                section[n.func.id] = table_call(n.args[0])
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.args
                    and isinstance(n.args[0], ast.Name) and n.args[0].id in local):
                section[n.func.id] = local[n.args[0].id]
        f._distntk_local = local  # type: ignore[attr-defined]
    # a helper handed its caller's table parameter reads the caller's section (``_chain(t)`` -> ``_ar1_chain(t)``);
    # a helper whose docstring names ``kind = "X"`` reads keys of that kind only
    when: dict[str, str] = {}
    for _ in range(len(funcs)):
        for f in list(funcs.values()):
            if f.name not in section or not f.args.args:
                continue
            param = f.args.args[0].arg
            for n in ast.walk(f):
                if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in funcs and n.args
                        and isinstance(n.args[0], ast.Name) and n.args[0].id == param
                        and n.func.id not in section):
                    section[n.func.id] = section[f.name]
                    kind = re.search(r'kind = "(\w+)"', ast.get_docstring(funcs[n.func.id]) or "")
                    if kind:
                        when[n.func.id] = f'kind = "{kind.group(1)}"'
    for f in funcs.values():
        for n in ast.walk(f):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get"
                    and len(n.args) >= 2 and isinstance(lit(n.args[0]), str) and isinstance(lit(n.args[1]), str)
                    and isinstance(n.func.value, ast.Name)):
                continue
            var = n.func.value.id
            sec = "" if var == "top" else f._distntk_local.get(var) or section.get(f.name)
            if sec is None:
                continue
            default = "required" if len(n.args) < 3 else f"`{ast.unparse(n.args[2])}`"
            if f.name in when:
                default += f" (with `{when[f.name]}`)"
            rows.setdefault(sec, []).append((lit(n.args[0]), lit(n.args[1]), default))
    from dataclasses import MISSING, fields

    from distntk.rnn import RNNConfig
    from distntk.spec import _MODEL_KINDS

    rows["model"] = [(fl.name, _MODEL_KINDS.get(fl.name, "number"),
                      "required" if fl.default is MISSING else f"`{fl.default!r}`") for fl in fields(RNNConfig)]
    out = ["# Spec keys", "",
           "Generated at build time from the `_Table.get(key, kind, default)` calls of `distntk/spec.py` "
           "(the parser has no separate key table; the `[model]` keys are `RNNConfig`'s fields, the "
           "`[sweep]` table is described in [Sweeps](../guides/sweeps.md)). Defaults are source expressions.", ""]
    for sec in sorted(rows, key=lambda s: (s != "", s)):
        out += [f"## {'[' + sec + ']' if sec else 'top level'}", "", "| key | kind | default |", "| --- | --- | --- |"]
        seen = set()
        for k, kind, d in rows[sec]:
            if k not in seen:
                seen.add(k)
                out.append(f"| `{k}` | {kind} | {d} |")
        out.append("")
    return "\n".join(out)


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/cli.md", content=cli_markdown()))
    files.append(File.generated(config, "reference/spec.md", content=spec_markdown()))
    return files
