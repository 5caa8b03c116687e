"""A sweep run through Ray: `distntk run SWEEP --store ROOT`, resume, refusal of a changed sweep,
`distntk query ROOT` (catalog table, --where, json) and `distntk report ROOT`, as subprocesses."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from raytools import VENV_BIN, cleanup, new_mark, scoped_env, section6_toml, short_tmp

from distntk import open_store
from distntk.catalog import open_catalog
from distntk.query import summary
from distntk.sweep import parse_sweep

pytestmark = pytest.mark.timeout(600)  # generous: the suite must pass on a loaded machine

BASE = section6_toml(name="sw", seed=9, widths=(16, 32), n_init=2, n_data=8, block=4)
SWEEP = BASE + '[sweep]\n"model.beta" = [0.6, 0.8]\n[sweep.zip]\nname = ["sticky", "anti"]\n' \
               '"chain.transition" = [[[0.8, 0.2], [0.3, 0.7]], [[0.2, 0.8], [0.7, 0.3]]]\n'


def _cli(args, env, tmp, timeout=300):
    return subprocess.run([f"{VENV_BIN}/distntk", *args], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep run once into ROOT (4 members x 8 units, 2 actors), then rerun."""
    tmp = tmp_path_factory.mktemp("sweep-run")
    (tmp / "sweep.toml").write_text(SWEEP)
    mark, temp = new_mark(), short_tmp("dnsw")
    env = scoped_env(tmp / "home", mark, RAY_TMPDIR=temp)
    root = tmp / "root"
    try:
        first = _cli(["run", "sweep.toml", "--store", str(root), "--actors", "2", "--no-progress"], env, tmp)
        again = _cli(["run", "sweep.toml", "--store", str(root), "--actors", "2", "--no-progress"], env, tmp)
    finally:
        left = cleanup(mark, temp)
    return tmp, root, env, first, again, left


def test_every_member_computed_once_and_equal_to_in_process(swept):
    tmp, root, _, first, again, left = swept
    assert first.returncode == 0, first.stderr[-3000:]
    assert "sweep sw (4 members)" in first.stderr and "32 of 32 units to compute" in first.stderr
    assert left == []
    sweep = parse_sweep(SWEEP, default_name="sw")
    for m in sweep.members:
        ds = open_store(root / f"{m.name}.zarr")
        assert ds.attrs["spec_hash"] == m.spec.hash
        assert ds.done.values.all() and (ds.unit_writes.values == 1).all()
        u = m.spec.experiment.units()[-1]  # a unit recomputed in-process gives the same bits
        got = ds.output.sel(width=u.width, init=u.init, data=list(u.data)).values
        np.testing.assert_array_equal(got, m.spec.experiment.compute(u)["output"])
    assert json.loads((root / "sweep.json").read_text())["members"][0]["name"] == "model.beta=0.6,sticky"


def test_rerun_computes_nothing(swept):
    _, _, _, _, again, _ = swept
    assert again.returncode == 0, again.stderr[-3000:]
    assert "all 32 units already done" in again.stderr


def test_changed_sweep_on_the_same_root_is_refused(swept):
    tmp, root, env, *_ = swept
    (tmp / "changed.toml").write_text(SWEEP.replace('"model.beta" = [0.6, 0.8]', '"model.beta" = [0.6, 0.9]'))
    p = _cli(["run", "changed.toml", "--store", str(root), "--no-progress"], env, tmp)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "the sweep differs from the one recorded" in p.stderr and "new members: model.beta=0.9,anti" in p.stderr


def test_query_root_is_one_table_with_the_swept_keys(swept):
    tmp, root, env, *_ = swept
    p = _cli(["query", str(root), "--time", "1.0", "--format", "json"], env, tmp)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    # the swept keys first, then the keys that differ as a consequence (the chains' most likely windows)
    assert out["keys"] == ["model.beta", "chain.transition", "probes.windows"] and out["problems"] == {}
    rows = out["rows"]
    assert len(rows) == 4 * 2 * 2  # members x widths x probes
    cat = open_catalog(str(root))
    for r in rows:  # the same numbers distntk query prints for the member store alone
        ref = [x for x in summary(cat.checked(r["store"])[0], width=r["width"], time=1.0) if x["probe"] == r["probe"]]
        assert r["mean"] == pytest.approx(ref[0]["mean"], rel=1e-12) and r["n"] == ref[0]["n"] == 2 * 8
    p = _cli(["query", str(root), "--where", "model.beta=0.8", "--where", 'chain.transition=[[0.2,0.8],[0.7,0.3]]',
              "--width", "32", "--time", "1.0"], env, tmp)
    assert p.returncode == 0, p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("model.beta=")]
    assert len(lines) == 2 and all(ln.startswith("model.beta=0.8,anti ") for ln in lines), p.stdout


def test_report_root_writes_the_sweep_report(swept):
    tmp, root, env, *_ = swept
    p = _cli(["report", str(root), "--out", str(tmp / "rep")], env, tmp)
    assert p.returncode == 0, p.stderr
    text = (tmp / "rep" / "sweep.md").read_text()
    assert "4 of 4 stores are complete" in text and "None: every member is complete." in text
    assert "| `model.beta=0.8,anti` | 0.8 | [[0.2,0.8],[0.7,0.3]] | 32 |" in text


@pytest.mark.parametrize("table, expected", [
    ('[sweep]\n"model.bta" = [0.6]\n', "sweep member model.bta=0.6: model.bta"),
    ('[sweep]\n"model.beta" = 3\n', 'sweep."model.beta": expected a non-empty list'),
])
def test_bad_sweeps_exit_2_in_one_line(tmp_path, table, expected):
    (tmp_path / "bad.toml").write_text(BASE + table)
    p = subprocess.run([f"{VENV_BIN}/distntk", "run", "bad.toml", "--store", str(tmp_path / "r")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and expected in p.stderr, p.stderr
    assert not (tmp_path / "r").exists()
