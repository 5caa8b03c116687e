"""The package's layering, checked on its source: no import cycle, every module imports alone,
the science modules import no Ray, the Ray layer imports no science module, no module imports another's
private names, and the I/O modules import no user-interface module.

A subpackage (``distntk/store/``) counts as its modules: ``store`` (its ``__init__``, which re-exports the
others and so depends on all of them) and ``store.locations``, ``store.schema``, ...; every check covers
them, and a private name imported into or out of the package, or between its modules, is refused."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "distntk"


def _modules(pkg: Path) -> list[str]:
    """``chain``, ..., and for a subpackage ``store`` its ``__init__`` as ``store`` and ``store.reader``, ..."""
    out = [p.stem for p in pkg.glob("*.py") if p.stem not in {"__init__", "__main__"}]
    for sub in pkg.iterdir():
        if sub.is_dir() and (sub / "__init__.py").exists():
            out += [sub.name] + [f"{sub.name}.{p.stem}" for p in sub.glob("*.py") if p.stem != "__init__"]
    return sorted(out)


MODULES = _modules(PKG)
SCIENCE = {"chain", "target", "rnn", "_fast", "limit", "longmem", "memory", "experiment", "estimator", "ar1",
           "continuous", "sampler"}
UI = {"cli", "query", "report"}  # what renders for a user: commands, tables, reports
IO = {"store", "catalog", "verify", "lease", "driver", "service", "rows"}  # stores, runs and their rows (and
# every module of the store package)


def _source(pkg: Path, module: str) -> Path:
    """The file of ``module`` (``store`` is ``store/__init__.py``, ``store.reader`` is ``store/reader.py``)."""
    path = pkg.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _package(module: str) -> list[str]:
    """The package ``module`` is in, as parts below distntk: ``[]`` for ``driver``, ``["store"]`` for
    ``store.reader`` and for ``store`` (its ``__init__``)."""
    parts = module.split(".")
    return parts if _source(PKG, module).name == "__init__.py" else parts[:-1]


def _resolve(module: str, node: ast.ImportFrom) -> list[str] | None:
    """The module an ``import from`` names, as parts below distntk (``None``: not a distntk module)."""
    if node.level:
        base = _package(module)[:len(_package(module)) - (node.level - 1)]
        return base + (node.module.split(".") if node.module else [])
    if node.module and (node.module == "distntk" or node.module.startswith("distntk.")):
        return node.module.split(".")[1:]
    return None


def _known(parts: list[str]) -> str | None:
    """The longest prefix of ``parts`` that is a module of :data:`MODULES`."""
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in MODULES:
            return ".".join(parts[:k])
    return None


def _imports(module: str) -> set[str]:
    """The distntk modules ``module`` imports (relative or absolute), at any depth of its source; a package's
    ``__init__`` depends on all of its modules (it re-exports them, imported on first use)."""
    tree = ast.parse(_source(PKG, module).read_text(), filename=f"{module}.py")
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = _resolve(module, node)
            if parts is None:
                continue
            for a in node.names:  # from . import x: x may be a module
                out.add(_known(parts + [a.name]) or _known(parts) or "")
        elif isinstance(node, ast.Import):
            out.update(_known(a.name.split(".")[1:]) or "" for a in node.names if a.name.startswith("distntk."))
    if _source(PKG, module).name == "__init__.py":
        out.update(m for m in MODULES if m.startswith(f"{module}."))
    return (out - {module}) & set(MODULES)


def _unresolved(module: str) -> list[str]:
    """The distntk modules ``module`` imports from that do not exist (``from .ar1 import x`` inside the store
    package names ``store.ar1``), at any depth: an import in a function fails only when it runs."""
    out = []
    for node in ast.walk(ast.parse(_source(PKG, module).read_text())):
        if isinstance(node, ast.ImportFrom) and (parts := _resolve(module, node)):
            if ".".join(parts) not in MODULES:
                out.append(".".join(parts))
    return out


def _third_party(module: str) -> set[str]:
    tree = ast.parse(_source(PKG, module).read_text())
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


def test_every_import_names_a_module():
    assert {m: got for m in MODULES if (got := _unresolved(m))} == {}


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
    """``"store._meta"`` for each private name (``_x``, not ``__x__``) ``module`` imports from another module of
    distntk (``from .x import _y``, ``from ..x import _y``, ``from distntk.x import _y``).  A private *module*
    imported whole (``from . import _fast``) is not a private name."""
    tree = ast.parse(_source(pkg, module).read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.level or node.module == "distntk" or node.module.startswith("distntk.")):
            out += [f"{node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_no_module_imports_another_modules_private_names(tmp_path):
    """A private name is its module's business: shared helpers get a public name (private *modules*,
    ``_fast``, ``_text``, are the package's own and may be imported), also into, out of and within the store
    package."""
    assert {"store", "store.locations", "store.schema", "store.reader", "store.writer"} <= set(MODULES)
    found = {m: got for m in MODULES if (got := _private_names_imported(PKG, m))}
    assert found == {}
    (tmp_path / "a.py").write_text("from .b import _helper, public\n")  # the check is not vacuous
    assert _private_names_imported(tmp_path, "a") == ["b._helper"]
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "__init__.py").write_text("")
    (tmp_path / "p" / "m.py").write_text("from ..b import _out\nfrom .n import _within\nfrom . import _fast\n")
    assert _private_names_imported(tmp_path, "p.m") == ["b._out", "n._within"]


def test_io_modules_import_no_user_interface():
    """Stores, runs and rows do not depend on how they are shown (the catalog builds its rows with
    :mod:`distntk.rows`, not with the query command's renderer)."""
    for m in sorted(m for m in MODULES if m.split(".")[0] in IO):
        assert not (_imports(m) & UI), f"distntk.{m} imports {sorted(_imports(m) & UI)}"


def test_importing_the_report_leaves_matplotlibs_backend_alone():
    """A notebook keeps its backend: the report draws on Figure objects, never through pyplot's backend."""
    code = ("import matplotlib; import distntk.report as r, distntk.estimator; "
            "assert matplotlib.get_backend().lower() == 'svg', matplotlib.get_backend(); "
            "assert 'matplotlib.pyplot' not in __import__('sys').modules")
    env = {**__import__("os").environ, "MPLBACKEND": "svg"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]


def test_the_store_package_re_exports_its_modules():
    """``from distntk.store import X`` for every public name of the store's modules, the very object."""
    import importlib

    import distntk.store as store

    for module, names in store._EXPORTS.items():
        mod = importlib.import_module(f"distntk.store.{module}")
        assert sorted(mod.__all__) == sorted(names), module
        assert all(getattr(store, n) is getattr(mod, n) for n in names), module
    assert sorted(store.__all__) == sorted(n for names in store._EXPORTS.values() for n in names)


def test_only_the_location_layer_reads_a_location():
    """A location's scheme is parsed in distntk/store/locations.py only (service.py parses a Ray address), and
    that module imports no storage library: the command line spells its locations without loading one."""
    files = {p.relative_to(PKG).as_posix() for p in PKG.rglob("*.py") if '"://"' in p.read_text()}
    assert files == {"store/locations.py", "service.py"}
    code = ("import sys, distntk.store.locations; "
            "print(sorted(m for m in ('zarr', 'fsspec', 'xarray', 'numpy') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr[-2000:]
