"""The documentation: docs/model.md stands alone and every citation of it resolves; the API page covers the API.

(a) no tracked file points at a document outside the repository; (b) every
``docs/model.md#<anchor>`` and ``docs/model.md (<s>.<k>)`` citation in the tree names an
anchor or an equation number that docs/model.md defines; (c) the anchors other
files link to are all there, and the equations are numbered (section.k) in order.

The Python API page, docs/reference/api.md: (d) it renders every name of ``distntk.__all__``, each under
its defining module; (e) the docstrings it renders are numpy style (mkdocs.yml reads them so), with a
``Parameters`` section naming exactly the parameters of each function, class and method.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "model.md"

ANCHORS = ("data", "network", "probe", "memory", "kernel", "limit-ode", "poisson", "iid", "init", "risk",
           "features", "sampled", "estimator", "verdict", "mls", "init-robust", "rates", "outliers",
           "reference-case")

# spelled in pieces so that this file does not match itself
_OLD = "MO" + "DEL"  # the old citation word, as a whole word (an identifier such as `_XYZ_KINDS` is not a match)
_THERE = "sha" + "red"
_OUTSIDE = (_OLD + ".md", "../" + _THERE, "/work/" + _THERE, _THERE + "/" + _OLD)
_OLD_CITE = re.compile(r"\b" + _OLD + r"\b")
_SKIP_DIRS = {".git", ".venv", "__pycache__", "node_modules"}


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        files = [ROOT / p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.SubprocessError):  # not a git checkout: walk the tree
        files = [p for p in ROOT.rglob("*") if p.is_file() and not _SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file()]


def _texts():
    for p in _tracked():
        data = p.read_bytes()
        if b"\0" in data[:8192]:  # binary (images, stores)
            continue
        yield p.relative_to(ROOT).as_posix(), data.decode("utf-8", errors="replace")


def _model() -> str:
    return DOC.read_text(encoding="utf-8")


def _anchors(text: str) -> list[str]:
    return re.findall(r'<a id="([^"]+)"></a>', text)


def _equations(text: str) -> list[tuple[int, str]]:
    """``(section, "s.k")`` for every equation tag: a ``(s.k)`` ending a line inside a fenced block."""
    out, section, fenced = [], 0, False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            m = re.match(r"## (\d+)\. ", line)
            if m:
                section = int(m.group(1))
            continue
        m = re.search(r"\((\d+\.\d+)\)\s*$", line)
        if m:
            out.append((section, m.group(1)))
    return out


def test_no_file_points_outside_the_repository():
    hits = []
    for name, text in _texts():
        for i, line in enumerate(text.splitlines(), 1):
            if any(s in line for s in _OUTSIDE) or _OLD_CITE.search(line):
                hits.append(f"{name}:{i}: {line.strip()[:120]}")
    assert not hits, "citations of the old outside document:\n" + "\n".join(hits)


def test_every_anchor_named_by_others_exists_once():
    found = _anchors(_model())
    assert sorted(set(found)) == sorted(found), "an anchor appears twice"
    missing = [a for a in ANCHORS if a not in found]
    assert not missing, f"docs/model.md lacks anchors {missing}"


def test_equations_are_numbered_in_order_within_their_sections():
    eqs = _equations(_model())
    assert len(eqs) > 50
    by_section: dict[int, list[str]] = {}
    for section, tag in eqs:
        assert tag.split(".")[0] == str(section), f"equation ({tag}) sits in section {section}"
        by_section.setdefault(section, []).append(tag)
    for section, tags in by_section.items():
        assert tags == [f"{section}.{k}" for k in range(1, len(tags) + 1)], (section, tags)


def test_every_citation_resolves():
    text = _model()
    anchors = set(_anchors(text))
    equations = {tag for _, tag in _equations(text)}
    bad, n = [], 0
    for name, body in _texts():
        for a in re.findall(r"docs/model\.md#([A-Za-z0-9_-]+)", body):
            n += 1
            if a not in anchors:
                bad.append(f"{name}: #{a}")
        for e in re.findall(r"docs/model\.md \((\d+\.\d+)\)", body):
            n += 1
            if e not in equations:
                bad.append(f"{name}: ({e})")
    # inside docs/model.md every (s.k) in the prose refers to an equation that exists
    for e in re.findall(r"\((\d+\.\d+)\)", text):
        if e not in equations:
            bad.append(f"docs/model.md: ({e})")
    assert not bad, "citations that do not resolve:\n" + "\n".join(bad)
    assert n > 0


# --------------------------------------------------------------------------- the Python API page

API_PAGE = ROOT / "docs" / "reference" / "api.md"


def _api_blocks() -> dict[str, object]:
    """``{dotted path: object}`` for every ``::: distntk.<module>.<name>`` block of the API page, imported."""
    out = {}
    for line in API_PAGE.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r":::\s+(distntk(?:\.\w+)+)\s*", line)
        if m:
            module, _, name = m.group(1).rpartition(".")
            out[m.group(1)] = getattr(importlib.import_module(module), name)
    return out


def _sections(doc: str) -> dict[str, list[str]]:
    """A numpydoc docstring's sections: ``{"Summary": [first paragraph], "Parameters": [lines], ...}``."""
    lines = doc.splitlines()
    first = doc.split("\n\n", 1)[0]
    out, current, i = {"Summary": first.splitlines()}, None, 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and lines[i + 1].strip() == "-" * len(line.strip()):
            current = line.strip()
            out[current] = []
            i += 2
            continue
        if current is not None:
            out[current].append(line)
        i += 1
    return out


def _documented(section: list[str]) -> list[str]:
    """The names a Parameters section documents (its unindented ``name : type`` lines)."""
    names = []
    for line in section:
        if line.strip() and not line[0].isspace():
            names += [n.strip().lstrip("*") for n in line.split(" : ", 1)[0].split(",")]
    return names


def _parameters(fn, bound: bool) -> list[str]:
    params = [p for p in inspect.signature(fn).parameters.values() if not p.name.startswith("_")]
    return [p.name for p in (params[1:] if bound else params)]


def _members(path: str, obj) -> list[tuple[str, object, bool]]:
    """``(dotted path, object, is a method)``: the object, and a class's public methods and properties."""
    out = [(path, obj, False)]
    if inspect.isclass(obj):
        for name, member in vars(obj).items():
            if not name.startswith("_") and isinstance(member, (property, functools.cached_property)):
                out.append((f"{path}.{name}", member, False))
            elif not name.startswith("_") and inspect.isfunction(member):
                out.append((f"{path}.{name}", member, True))
    return out


def test_api_page_renders_every_public_name():
    """Each name of ``distntk.__all__`` has a ``::: distntk.<module>.<name>`` block: the lazy ``__getattr__``
    hides them from a plain ``::: distntk``."""
    import distntk

    blocks = _api_blocks()
    for path, obj in blocks.items():
        assert f"{obj.__module__}.{obj.__qualname__}" == path, f"{path} is {obj.__module__}.{obj.__qualname__}"
    shown = {id(obj) for obj in blocks.values()}
    missing = [name for name in distntk.__all__ if id(getattr(distntk, name)) not in shown]
    assert not missing, f"docs/reference/api.md does not render {missing}"


def test_api_docstrings_are_numpy_style():
    """Every object on the API page, and every public method and property of its classes: a one-line
    summary (an undocumented member is not rendered at all), and a ``Parameters`` section naming exactly
    its parameters when it takes any (exceptions excepted)."""
    bad = []
    for path, obj in _api_blocks().items():
        for where, fn, bound in _members(path, obj):
            doc = inspect.getdoc(fn) or ""
            sections = _sections(doc)
            if not doc or len(sections["Summary"]) != 1:
                bad.append(f"{where}: no one-line summary")
            if isinstance(fn, (property, functools.cached_property)) or (
                    inspect.isclass(fn) and issubclass(fn, BaseException)):
                continue
            params = _parameters(fn, bound)
            documented = _documented(sections.get("Parameters", []))
            if params and "Parameters" not in sections:
                bad.append(f"{where}: no Parameters section for {params}")
            elif sorted(documented) != sorted(params):
                bad.append(f"{where}: Parameters documents {documented}, the signature has {params}")
    assert not bad, "docstrings not in numpy style:\n" + "\n".join(bad)
