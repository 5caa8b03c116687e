"""The README's commands run, its links resolve, and the Python guide's snippet prints the reference-case numbers.

The README holds the quickstart (``make demo``, ``make test``) and "Three things to do next", whose shell
blocks are run here line by line as a reader would type them; everything else lives in ``docs/``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from raytools import VENV_BIN, cleanup, new_mark, scoped_env, short_tmp

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PYTHON_GUIDE = ROOT / "docs" / "guides" / "python.md"


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole line, e.g. ``## Quickstart``) up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = text.index("\n" + heading + "\n") + len(heading) + 2
    m = re.search(r"\n" + level + r" ", text[start:])
    return text[start:start + m.start()] if m else text[start:]


def _commands(section: str) -> list[str]:
    """The lines of a section's ```sh blocks, comments and blank lines dropped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_readme_python_snippet_prints_the_section_6_numbers(tmp_path):
    """The snippet of docs/guides/python.md (moved there from the README) runs as a script."""
    code = re.search(r"## The limit of one case\n\n```python\n(.*?)```", PYTHON_GUIDE.read_text(), re.S).group(1)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.fullmatch(r"h = (\S+), Poisson (\S+), iid (\S+)\n", p.stdout)
    assert m, p.stdout
    h, poisson, iid = map(float, m.groups())
    # docs/model.md#reference-case gives h = -0.563, N Var = 0.425 (Poisson) and 0.113 (i.i.d.) to three digits, from a
    # 20-point rule whose own error (docs/model.md#reference-case table) is 6e-4 on h and 7e-4 on the Poisson variance;
    # the i.i.d. variance's rule error is not tabulated there, and 3e-4 (under half the Poisson one) is allowed.
    assert abs(h - (-0.563)) <= 0.0005 + 6e-4
    assert abs(poisson - 0.425) <= 0.0005 + 7e-4
    assert abs(iid - 0.113) <= 0.0005 + 3e-4


def test_readme_quickstart_is_make_demo_and_make_test():
    """Exactly the two commands; their recipes are the demo (run by tests/test_cli.py) and this suite."""
    quick = _section(README.read_text(), "## Quickstart")
    blocks = re.findall(r"```\w*\n(.*?)```", quick, re.S)
    assert [ln for b in blocks for ln in b.splitlines() if ln.strip()] == ["make demo", "make test"]
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t\$\(PY\) -m distntk demo$", make, re.M)
    assert re.search(r"^test: .*\n\t\$\(PY\) -m pytest -q( --durations=\d+)?$", make, re.M)


def test_readme_links_resolve_inside_the_repository():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        assert "://" not in link and not link.startswith("/"), link
        path, _, anchor = link.partition("#")
        target = (ROOT / path).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), link
        if anchor and target.suffix == ".md":
            page = target.read_text()
            heads = [h.encode("ascii", "ignore").decode() for h in re.findall(r"^#+ (.+)$", page, re.M)]
            slugs = {re.sub(r"[\s-]+", "-", re.sub(r"[^\w\s-]", "", h).strip().lower()) for h in heads}
            assert anchor in slugs or f'<a id="{anchor}"></a>' in page, link


def test_readme_next_steps_have_one_block_each():
    nxt = _section(README.read_text(), "## Three things to do next")
    assert re.findall(r"^### (\d)\. ", nxt, re.M) == ["1", "2", "3"]
    assert _commands(_section(nxt, "### 1. Run your own spec"))[0] == "cp jobs/quickstart.toml jobs/mine.toml"
    assert all(c.startswith("distntk ") for c in _commands(_section(nxt, "### 2. Query a store")))


def _run_line(line: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    words = shlex.split(line)
    if words[0] == "distntk":
        words[0] = f"{VENV_BIN}/distntk"
    return subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_readme_run_your_own_spec(tmp_path):
    """Next step 1 as a reader does it: copy the spec, edit it (here: smaller), run it, run it again."""
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    cp, run = _commands(_section(README.read_text(), "### 1. Run your own spec"))
    assert _run_line(cp, tmp_path).returncode == 0
    mine = tmp_path / "jobs" / "mine.toml"
    spec = mine.read_text()
    edits = {r'^name = "quickstart"$': 'name = "mine"', r'^store = .*$': 'store = "stores/mine.zarr"',
             r'^widths = .*$': "widths = [16, 32]", r'^n_init = .*$': "n_init = 2",
             r'^n_data = .*$': "n_data = 8", r'^block = .*$': "block = 4"}
    for pattern, new in edits.items():
        spec, n = re.subn(pattern, new, spec, flags=re.M)
        assert n == 1, pattern
    mine.write_text(spec)
    mark, temp = new_mark(), short_tmp("dnreadme")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    try:
        p = _run_line(run, tmp_path, env)
        assert p.returncode == 0, p.stderr[-3000:]
        assert (tmp_path / "stores" / "mine.zarr").is_dir()
        again = _run_line(run, tmp_path, env)  # resumes: nothing left to compute
        assert again.returncode == 0, again.stderr[-3000:]
    finally:
        cleanup(mark, temp)
    from distntk.store import open_store

    assert bool(open_store(tmp_path / "stores" / "mine.zarr").done.all())


def test_readme_query_a_store(tmp_path):
    """Next step 2: the README's query, verify and report lines on a (partial) quickstart store."""
    from distntk.spec import load_spec
    from distntk.store import open_or_create

    spec = load_spec(ROOT / "jobs" / "quickstart.toml")
    e = spec.experiment
    rs = open_or_create(tmp_path / "stores" / "quickstart.zarr", spec, e.predictions)
    for u in [u for u in e.units() if u.width == 256][:2]:
        rs.write_unit(u, e.compute(u), 0.1, "n")
    lines = _commands(_section(README.read_text(), "### 2. Query a store"))
    assert {ln.split()[1] for ln in lines} == {"query", "verify", "report"}
    for line in lines:
        p = _run_line(line, tmp_path)
        assert p.returncode == 0, (line, p.stderr[-3000:])
        if line.split()[1] == "query" and "--format csv" in line:
            rows = p.stdout.splitlines()
            assert rows[0].startswith("width,") and len(rows) > 1 and all(r.startswith("256,") for r in rows[1:])
    assert (tmp_path / "reports" / "quickstart" / "report.md").is_file()
