"""The package's layering, checked on its source: no import cycle, every module imports alone,
the science modules import no Ray, the Ray layer imports no science module, no module imports another's
private names, and the I/O modules import no user-interface module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "distntk"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem not in {"__init__", "__main__"})
SCIENCE = {"chain", "target", "rnn", "_fast", "limit", "longmem", "memory", "experiment", "estimator", "ar1",
           "continuous", "sampler"}
UI = {"cli", "query", "report"}  # what renders for a user: commands, tables, reports
IO = {"store", "catalog", "verify", "lease", "driver", "service", "rows"}  # stores, runs and their rows


def _imports(module: str) -> set[str]:
    """The distntk modules ``module`` imports (relative or absolute), at any depth of its source."""
    tree = ast.parse((PKG / f"{module}.py").read_text(), filename=f"{module}.py")
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base.startswith("distntk"):
                base = base.removeprefix("distntk").lstrip(".")
                if base:
                    out.add(base.split(".")[0])
                else:  # from . import x
                    out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("distntk."))
    return out & set(MODULES)


def _third_party(module: str) -> set[str]:
    tree = ast.parse((PKG / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_import_cycle():
    graph = {m: _imports(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 on the stack, 2 finished

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n] if n in path else [m, n]
                pytest.fail(f"import cycle in distntk: {' -> '.join(cycle)}")
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The checker above is not vacuous: a two-module cycle written to disk is found."""
    (tmp_path / "a.py").write_text("from .b import x\n")
    (tmp_path / "b.py").write_text("from . import a\nx = 1\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", ["a", "b"])
    with pytest.raises(pytest.fail.Exception, match="import cycle"):
        test_no_import_cycle()


def test_science_modules_import_no_ray():
    for m in sorted(SCIENCE & set(MODULES)):
        assert "ray" not in _third_party(m), f"distntk.{m} imports ray; the science modules must not"
        assert "service" not in _imports(m), f"distntk.{m} imports the Ray layer"


def test_ray_layer_knows_no_science():
    assert not (_imports("service") & SCIENCE), "service.py must schedule opaque units, not import the science"


def test_each_module_imports_alone():
    """``python -c "import distntk.X"`` works for every module (fresh interpreters, started together)."""
    procs = {m: subprocess.Popen([sys.executable, "-c", f"import distntk.{m}"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True) for m in MODULES}
    failed = {}
    for m, p in procs.items():
        _, err = p.communicate(timeout=600)
        if p.returncode:
            failed[m] = (err.strip().splitlines() or [str(p.returncode)])[-1]
    assert not failed, f"modules that do not import alone: {failed}"


def test_every_error_for_users_has_the_one_base():
    """Every ``*Error`` class defined in distntk derives from ``DistntkError`` (one line, an exit code), so
    ``cli.main`` catches one type; ``ServiceError`` (the run failed) exits 1, the others 2."""
    import importlib
    import inspect

    from distntk.errors import DistntkError

    found = {}
    for m in MODULES:
        mod = importlib.import_module(f"distntk.{m}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__ and issubclass(cls, Exception):
                found[f"{m}.{name}"] = cls
    assert len(found) >= 12
    assert [n for n, c in found.items() if not issubclass(c, DistntkError)] == []
    assert {n for n, c in found.items() if c.exit_code == 1} == {"service.ServiceError", "service.UnitFailed"}


def _private_names_imported(pkg: Path, module: str) -> list[str]:
    """``"store._meta"`` for each private name (``_x``, not ``__x__``) ``module`` imports from a sibling."""
    tree = ast.parse((pkg / f"{module}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out += [f"{node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_module_imports_another_modules_private_names(tmp_path):
    """A private name is its module's business: shared helpers get a public name (private *modules*,
    ``_fast``, ``_text``, ``_location``, are the package's own and may be imported)."""
    found = {m: got for m in MODULES if (got := _private_names_imported(PKG, m))}
    assert found == {}
    (tmp_path / "a.py").write_text("from .b import _helper, public\n")  # the check is not vacuous
    assert _private_names_imported(tmp_path, "a") == ["b._helper"]


def test_io_modules_import_no_user_interface():
    """Stores, runs and rows do not depend on how they are shown (the catalog builds its rows with
    :mod:`distntk.rows`, not with the query command's renderer)."""
    for m in sorted(IO & set(MODULES)):
        assert not (_imports(m) & UI), f"distntk.{m} imports {sorted(_imports(m) & UI)}"


def test_importing_the_report_leaves_matplotlibs_backend_alone():
    """A notebook keeps its backend: the report draws on Figure objects, never through pyplot's backend."""
    code = ("import matplotlib; import distntk.report as r, distntk.estimator; "
            "assert matplotlib.get_backend().lower() == 'svg', matplotlib.get_backend(); "
            "assert 'matplotlib.pyplot' not in __import__('sys').modules")
    env = {**__import__("os").environ, "MPLBACKEND": "svg"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
