"""What a new user meets first: a quick ``--help``, and a ``distntk demo`` that works after ``pip install``.

* ``distntk --help`` loads none of the heavy modules (xarray, zarr, scipy, numba, Ray, matplotlib): the
  mechanism is asserted here (which modules a fresh interpreter imported); the time is measured, not asserted
  (0.14 s against 3.0 s before, on the development machine).
* The quickstart spec ships inside the package and equals the checkout's ``jobs/quickstart.toml``.
* The wheel, built from this tree without a download and installed into a fresh virtual environment in a
  temporary directory, runs ``distntk demo`` from another directory (its dependencies are the test
  environment's, reached through a ``.pth`` file; the checkout is never on its path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT
from raytools import cleanup, new_mark, scoped_env, short_tmp

HEAVY = ("xarray", "zarr", "scipy", "numba", "ray", "matplotlib", "pandas")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["query", "--help"], ["--version"]])
def test_help_loads_no_heavy_module(argv):
    code = ("import sys, json\nfrom distntk.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []


def test_import_distntk_is_lazy_and_estimate_is_the_function():
    code = ("import sys, json, distntk\nheavy = sorted(m for m in %r if m in sys.modules)\n"
            "from distntk.estimator import variance_components\n"  # the submodule imported by name ...
            "import distntk.estimator\n"
            "print(json.dumps([heavy, callable(distntk.estimate), type(distntk.estimate).__name__, "
            "distntk.open_store.__module__]))") % (HEAVY,)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    heavy, is_callable, kind, where = json.loads(p.stdout.strip().splitlines()[-1])
    assert heavy == [] and is_callable and kind == "function" and where == "distntk.store.reader"  # ... not rebound


def test_the_packaged_quickstart_is_the_checkouts():
    packaged = ROOT / "distntk" / "jobs" / "quickstart.toml"
    assert packaged.read_bytes() == (ROOT / "jobs" / "quickstart.toml").read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_wheel_runs_the_demo_from_any_directory(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = wheels.glob("distntk-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    inst = subprocess.run([str(vpy), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies: this environment's site-packages, as a plain path (its .pth files, among them the
    # checkout's editable install, are not processed from there)
    (site / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(vpy), "-c", "import distntk; print(distntk.__file__)"], cwd=elsewhere,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where
    mark, temp = new_mark(), short_tmp("dnwheel")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    env.pop("PYTHONPATH", None)
    try:
        p = subprocess.run([str(venv / "bin" / "distntk"), "demo", "--store", "q.zarr", "--out", "rep"], env=env,
                           cwd=elsewhere, capture_output=True, text=True, timeout=600)
    finally:
        cleanup(mark, temp)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (elsewhere / "rep" / "report.md").exists() and (elsewhere / "q.zarr" / "zarr.json").exists()
    assert "report summary" in p.stdout and not os.path.exists(elsewhere / "jobs")


def test_run_says_what_it_does_in_order(tmp_path):
    """``distntk run`` names each step before it starts: the limit, the plan, Ray, the result (the preparation
    only when it lasts: bad input gets one line, its error)."""
    from raytools import tiny_spec

    spec = tiny_spec(tmp_path / "t.toml")
    mark, temp = new_mark(), short_tmp("dnphase")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    try:
        p = subprocess.run([f"{Path(sys.executable).parent}/distntk", "run", str(spec), "--store",
                            str(tmp_path / "s.zarr"), "--no-progress", "--actors", "1"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    finally:
        cleanup(mark, temp)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stderr.splitlines()
    marks = ["distntk run: solving the limit (window L = 4",
             "units to compute on an embedded local Ray", "distntk run: starting Ray (an embedded local Ray) ...",
             "units (", "query it with:"]
    at = [next(i for i, ln in enumerate(lines) if m in ln) for m in marks]
    assert at == sorted(at), lines
    assert all(ln.startswith(("distntk run:", "query it with:")) for ln in lines), lines  # no Ray log lines
