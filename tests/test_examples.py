"""The scripts in examples/ run as a reader runs them, and print and draw what they say.

Each script runs in a subprocess from a temporary directory, with the repository on ``PYTHONPATH``
and no bytecode written, so that nothing lands in the repository (checked).  The two that run an
embedded Ray (``custom_target.py``, ``sweep_datatree.py``) get their own HOME, Ray temp dir and
test mark (tests/raytools.py), and their processes are ended afterwards; ``comparison_plot.py`` reads
a tiny store written here without Ray.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_store
from raytools import cleanup, new_mark, scoped_env, section6_toml, short_tmp

import distntk
from distntk.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NUM = r"(-?\d+\.\d+)"


def _run(script: str, args: list[str], cwd: Path, ray: bool = False) -> subprocess.CompletedProcess:
    """``python examples/<script> ARGS`` from ``cwd``; examples/ must be left as it was."""
    before = sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.rglob("*"))
    extra = {"PYTHONDONTWRITEBYTECODE": "1",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    mark = new_mark()
    temp = short_tmp("dnex") if ray else None
    env = scoped_env(cwd / "home", mark, **extra, **({"RAY_TMPDIR": temp} if ray else {}))
    try:
        p = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=600)
    finally:
        left = cleanup(mark, *([temp] if temp else []))
    assert p.returncode == 0, p.stderr[-3000:]
    assert left == [], f"{script} left processes behind: {left}"
    assert sorted(p.relative_to(EXAMPLES) for p in EXAMPLES.rglob("*")) == before, f"{script} wrote into examples/"
    return p


def _finite(*xs: str) -> list[float]:
    out = [float(x) for x in xs]
    assert all(math.isfinite(x) for x in out), xs
    return out


@pytest.mark.slow
def test_custom_target_runs_on_ray_and_prints_the_comparison(tmp_path):
    work = tmp_path / "work"
    p = _run("custom_target.py", [str(work)], tmp_path, ray=True)
    assert re.search(r"^12 units computed, 0 already done, in \S+ s$", p.stdout, re.M), p.stdout
    row = re.compile(rf"^ *(\d+) +{NUM} +(\d{{4}}) +{NUM} +{NUM} +{NUM} +{NUM} \[{NUM}, {NUM}\] +(\w+)$", re.M)
    rows = row.findall(p.stdout)
    assert len(rows) == 3 * 2 * 2, p.stdout  # widths x times x probes
    ds = distntk.open_store(work / "switch.zarr")
    assert bool(ds.done.all())
    for N, t, z, nvar, poisson, iid, ratio, lo, hi, verdict in rows:
        nvar, poisson, iid, ratio, lo, hi = _finite(nvar, poisson, iid, ratio, lo, hi)
        # N*Var over its prediction; 4 x 8 replicas per width give intervals a few times wide, never 20x off
        assert 0 < nvar and 0.05 < ratio < 20 and lo <= ratio <= hi, (N, t, z)
        assert verdict in {"consistent", "inconsistent"}
        assert nvar == pytest.approx(ratio * poisson, rel=0.01, abs=2e-4)
        # the printed predictions are the limit solver's, kept in the store beside the replicas
        cell = ds.sel(time=float(t), probe=z)
        assert poisson == pytest.approx(float(cell.nvar_poisson), abs=1e-4)
        assert iid == pytest.approx(float(cell.nvar_iid), abs=1e-4)
    # the store's spec names the script's function and pins the script's source
    canonical = json.loads(ds.attrs["spec_canonical"])["target"]  # read as data: nothing imported
    assert canonical["name"] == "custom_target:switched"
    assert canonical["source_sha256"] == hashlib.sha256((EXAMPLES / "custom_target.py").read_bytes()).hexdigest()

    again = _run("custom_target.py", [str(work)], tmp_path, ray=True)  # resumes: nothing left, Ray not started
    assert re.search(r"^0 units computed, 12 already done, in \S+ s$", again.stdout, re.M), again.stdout
    assert row.findall(again.stdout) == rows


@pytest.mark.slow
def test_sweep_datatree_prints_one_node_and_one_row_per_member(tmp_path):
    work = tmp_path / "work"
    p = _run("sweep_datatree.py", [str(work)], tmp_path, ray=True)
    assert re.search(r"^2 members, 16 units computed, 0 already done", p.stdout, re.M), p.stdout
    nodes = re.findall(r"^  /(\w+): output \{(.*)\}, chain\.transition (\S+)$", p.stdout, re.M)
    assert [n for n, _, _ in nodes] == ["anti", "sticky"], p.stdout
    for _, sizes, _ in nodes:
        assert sizes == "'width': 2, 'init': 4, 'data': 8, 'time': 2, 'probe': 2", sizes
    assert dict((n, tr) for n, _, tr in nodes) == {"sticky": "[[0.8,0.2],[0.3,0.7]]", "anti": "[[0.2,0.8],[0.7,0.3]]"}

    rows = re.findall(rf"^ *(sticky|anti) +32 +1\.00 +(\d{{4}}) +{NUM} +{NUM} +{NUM} +{NUM} +{NUM}$", p.stdout, re.M)
    assert sorted(r[0] for r in rows) == ["anti", "anti", "sticky", "sticky"], p.stdout
    catalog = {(r["store"], r["probe"]): r for r in distntk.open_catalog(str(work / "chains")).rows(width=32, time=1.0)}
    for member, z, nvar, poisson, iid, r_p, r_i in rows:
        nvar, poisson, iid, r_p, r_i = _finite(nvar, poisson, iid, r_p, r_i)
        assert 0.05 < r_p < 20 and 0.01 < r_i < 50, (member, z)
        # the sticky chain's correlations add variance to N*Var, the anti-persistent one's remove it
        assert (poisson > iid) if member == "sticky" else (poisson < iid), (member, z, poisson, iid)
        # each DataTree node's estimate is the catalog's own row (distntk query's numbers)
        ref = catalog[(member, z)]
        assert nvar == pytest.approx(ref["nvar"], abs=1e-4) and poisson == pytest.approx(ref["nvar_poisson"], abs=1e-4)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """A complete store of the reference chain at N = 16, 32, 64 (4 x 8 replicas), written without Ray."""
    spec = parse_spec(section6_toml(name="tiny", seed=5, widths=(16, 32, 64), n_init=4, n_data=8, block=8))
    results = {u: spec.experiment.compute(u) for u in spec.experiment.units()}
    path = tmp_path_factory.mktemp("plot") / "tiny.zarr"
    write_store(path, spec, results)
    return path


def test_comparison_plot_draws_a_png_of_the_estimate(tiny_store, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "figs"
    p = _run("comparison_plot.py", [str(tiny_store), "--out", str(out), "--time", "0.5"], tmp_path)
    png = out / "nvar_vs_width.png"
    assert f"figure: {png}" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(png)
    assert img.shape[0] > 200 and img.shape[1] == 3 * img.shape[0]  # three square panels side by side: 2 probes, risk
    assert np.ptp(img[..., :3]) > 0.5  # something is drawn

    est = distntk.estimate(distntk.open_store(tiny_store)).sel(time=0.5)
    rows = re.findall(rf"^ *(\d{{4}}) +(\d+) +{NUM} +{NUM} +{NUM}$", p.stdout, re.M)
    assert len(rows) == 2 * 3, p.stdout  # probes x widths
    for z, N, nvar, poisson, iid in rows:
        c = est.sel(probe=z, width=int(N))
        assert _finite(nvar, poisson, iid) == pytest.approx(
            [int(N) * float(c[k]) for k in ("within", "pred_within_poisson", "pred_within_iid")], abs=1e-4)
