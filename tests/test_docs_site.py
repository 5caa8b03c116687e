"""The documentation site: the generated CLI reference covers the parser, and the site builds in strict mode."""

import argparse
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from distntk.cli import _parser

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "tools" / "docs_hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_reference_lists_every_subcommand_and_option():
    page = _hooks().cli_markdown()
    parser = _parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices, "the parser has subcommands"
    sections = page.split("\n## distntk ")
    by_name = {s.split("\n", 1)[0]: s for s in sections[1:]}
    assert set(by_name) == set(sub.choices)
    for name, p in sub.choices.items():
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            for opt in a.option_strings or [a.dest]:
                assert f"`{opt}`" in by_name[name], f"distntk {name}: {opt} missing from the CLI reference"


def test_spec_reference_lists_sections():
    page = _hooks().spec_markdown()
    for section in ("[chain]", "[training]", "[replicas]", "[target]", "[limit]", "[model]", "[probes]"):
        assert f"## {section}" in page
    assert "| `seed` |" in page and "| `widths` |" in page
    # the [chain] keys of each kind, read in the helpers _chain hands its table to
    assert '| `phi` | number or list of numbers | required (with `kind = "ar1"`) |' in page
    assert '| `sampler` | name | required (with `kind = "sampler"`) |' in page


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "api" / "index.html").exists()
