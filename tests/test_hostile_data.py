"""Hostile stores, data classes: no number may be silently wrong with every check green.

Each case doctors a copy of one clean tiny store (2 widths x 2 inits x 8 data, block 4: 8 units, written by
the driver's writer without Ray, conftest.write_store) the way a careless or hostile hand would, and asserts
the exact outcome: the damage named in one line (``verify`` exit 1 for damaged units, exit 2 for a store that
cannot be judged), the same numbers as the clean store where the doctoring must not matter, and a plain
rerun (the real ``distntk run`` on an embedded Ray) that repairs the store bit for bit.

* chunk identity: a valid chunk of another unit at a unit's key; values edited and re-checksummed; a chunk
  deleted under an edited ``fill_value``; a codec added to an array's metadata;
* attributes outside the hash: ``beta``, ``block``, ``seed``, ``L``, the spec's text, ``store_schema``, a
  coordinate;
* CF decoding: ``scale_factor``/``add_offset`` on a prediction or on the outputs, ``_FillValue``, time units;
* missing arrays: the whole ``risk`` array, a prediction, the unit records.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import ROOT, write_store
from raytools import VENV_BIN, cleanup, new_mark, scoped_env, short_tmp, tiny_spec

from distntk import estimate
from distntk.catalog import open_catalog
from distntk.cli import main
from distntk.spec import load_spec
from distntk.store import chunk_digest, open_store
from distntk.verify import Verification, open_checked, open_checked_many, verify

HIT = "width 32, init 0, data 4-7"  # the unit (width index 1, init 0, block 1) most cases doctor


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile-data")
    spec_path = tiny_spec(tmp / "tiny.toml")
    spec = load_spec(spec_path)
    e = spec.experiment
    write_store(tmp / "clean.zarr", spec, {u: e.compute(u) for u in e.units()})
    return spec_path, spec, tmp / "clean.zarr"


def _copy(clean, tmp_path) -> Path:
    path = tmp_path / "s.zarr"
    shutil.copytree(clean[2], path)
    return path


def _meta_edit(path: Path, name: str, edit) -> None:
    """Edit array ``name``'s zarr.json in place (``edit(doc)``), as a hand with a text editor would."""
    f = path / name / "zarr.json"
    doc = json.loads(f.read_text())
    edit(doc)
    f.write_text(json.dumps(doc))


def _verify_lines(path, capsys) -> tuple[int, list[str], str]:
    code = main(["verify", str(path)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _one_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("distntk: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def _query_rows(path, capsys, *args) -> list[dict]:
    assert main(["query", str(path), "--format", "json", *args]) == 0
    return json.loads(capsys.readouterr().out)["rows"]


# ----------------------------------------------------------------------------------------- chunk identity

@pytest.mark.parametrize("name", ["output", "risk"])
def test_another_units_valid_chunk_at_a_units_key_is_damage(clean, tmp_path, capsys, name):
    path = _copy(clean, tmp_path)
    tail = ".0.0" if name == "output" else ".0"
    shutil.copy(path / name / f"c.1.1.1{tail}", path / name / f"c.1.0.1{tail}")  # (32, 1, 4-7) -> (32, 0, 4-7)
    code, lines, err = _verify_lines(path, capsys)
    assert code == 1 and lines == [f"{HIT}: {name} chunk does not match the digest in the unit's record "
                                   "(another unit's chunk at this key, or changed values)"]
    ds, bad = open_checked(path)
    assert [str(u.width) + "/" + str(u.init) for u in bad] == ["32/0"] and not ds.done.values[1, 0, 4:8].any()
    [(many, bad_many)] = open_checked_many([path])
    assert bad_many == bad  # the catalog's reader judges as verify does


def test_values_edited_through_zarr_keep_a_valid_checksum_but_not_the_digest(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    g["output"][1, 0, 4:8] = g["output"][1, 0, 4:8] * 1.001  # a plausible edit: finite, checksum recomputed
    code, lines, _ = _verify_lines(path, capsys)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"{HIT}: output chunk does not match the digest")


def test_a_deleted_chunk_under_an_edited_fill_value_is_refused_not_read_as_data(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    (path / "output" / "c.1.0.1.0.0").unlink()
    _meta_edit(path, "output", lambda d: d.update(fill_value=0.0))
    for cmd in (["verify"], ["query"], ["report", "--out", str(tmp_path / "rep")]):
        code = main([cmd[0], str(path), *cmd[1:]])
        _one_error(code, capsys.readouterr().err, "array 'output' has fill_value 0.0, distntk writes NaN")
    assert not (tmp_path / "rep").exists()
    [got] = open_checked_many([path])
    assert "array 'output' has fill_value 0.0" in str(got)


def test_a_codec_added_to_an_arrays_metadata_is_refused(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    _meta_edit(path, "h", lambda d: d["codecs"].insert(0, {"name": "transpose", "configuration": {"order": [1, 0]}}))
    _one_error(main(["query", str(path)]), capsys.readouterr().err, "array 'h' has codecs",
               "distntk writes only")


def test_records_without_digests_are_still_read(clean, tmp_path, capsys):
    """A store written before digests existed: its records carry none; verify checks the rest, as before."""
    path = _copy(clean, tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    recs = g["unit"][...]
    g["unit"][...] = np.array([json.dumps({k: v for k, v in json.loads(str(t)).items() if k != "digest"})
                               for t in recs.ravel()], dtype=recs.dtype).reshape(recs.shape)
    assert verify(path) == Verification((), ())
    assert "digest" not in json.loads(str(zarr.open_group(str(path), mode="r")["unit"][0, 0, 0]))


def test_the_digest_binds_key_and_values():
    v = np.arange(6.0).reshape(2, 3)
    d = chunk_digest("output/0.0.1.0.0", v)
    assert d == chunk_digest("output/0.0.1.0.0", v.copy())
    assert d != chunk_digest("output/0.1.0.0.0", v)  # the same values at another unit's key
    assert d != chunk_digest("output/0.0.1.0.0", v + 1e-12)
    assert d != chunk_digest("output/0.0.1.0.0", v.reshape(3, 2))


# ------------------------------------------------------------------------------ attributes outside the hash

@pytest.mark.parametrize(("attr", "value", "says"), [
    ("beta", 0.6, "attribute 'beta' is 0.6, its canonical spec says 0.75"),
    ("block", 2, "attribute 'block' is 2, its canonical spec says 4"),
    ("seed", 8, "attribute 'seed' is 8, its canonical spec says 7"),
    ("L", "4", "attribute 'L' is '4', its canonical spec says 4"),
    ("store_schema", 4, "attribute 'store_schema' is 4; this distntk reads store schemas 1, 2 and 3"),
    ("spec", None, "attribute 'spec' (the spec's text) is not the spec its spec_hash names"),
])
def test_an_attribute_that_disagrees_with_the_hashed_spec_is_named(clean, tmp_path, capsys, attr, value, says):
    path = _copy(clean, tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    g.attrs[attr] = g.attrs["spec"].replace("beta", "beta = 0.9\n#") if attr == "spec" else value
    for cmd in ("verify", "query"):
        _one_error(main([cmd, str(path)]), capsys.readouterr().err, says)
    _one_error(main(["run", str(clean[0]), "--store", str(path), "--no-progress"]), capsys.readouterr().err, says)
    [got] = open_checked_many([path])
    assert says in str(got)


def test_a_doctored_store_in_a_root_is_named_and_the_others_summarised(clean, tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(clean[2], root / "a.zarr")
    shutil.copytree(clean[2], root / "b.zarr")
    zarr.open_group(str(root / "b.zarr"), mode="r+").attrs["beta"] = 0.55
    cat = open_catalog(root)
    rows = cat.rows()
    assert {r["store"] for r in rows} == {"a"}
    assert "attribute 'beta' is 0.55" in {**cat.problems, **cat.damaged}["b"]


def test_a_doctored_coordinate_is_named(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    zarr.open_group(str(path), mode="r+")["width"][...] = np.array([16, 64])
    _one_error(main(["query", str(path)]), capsys.readouterr().err, "coordinate 'width' is not the canonical spec's")
    [got] = open_checked_many([path])
    assert "coordinate 'width'" in str(got)


# ------------------------------------------------------------------------------------------- CF decoding

@pytest.mark.parametrize(("name", "attrs"), [
    ("h", {"scale_factor": 10.0, "add_offset": 1.0}),
    ("output", {"scale_factor": 2.0}),
    ("output", {"_FillValue": 0.0, "missing_value": 0.0}),
    ("time", {"units": "days since 2000-01-01", "calendar": "standard"}),
    ("nvar_poisson", {"add_offset": -0.1}),
])
def test_cf_attributes_change_no_number(clean, tmp_path, capsys, name, attrs):
    """Stored arrays are read raw on every path: the single store, the catalog, the report."""
    want = _query_rows(clean[2], capsys)
    path = _copy(clean, tmp_path)
    zarr.open_group(str(path), mode="r+")[name].attrs.update(attrs)
    assert _query_rows(path, capsys) == want
    root = tmp_path / "root"
    root.mkdir()
    shutil.move(path, root / "s.zarr")
    assert main(["query", str(root), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [{k: r[k] for k in w} for r, w in zip(rows, want, strict=True)] == want
    assert main(["report", str(root / "s.zarr"), "--out", str(tmp_path / "rep")]) == 0
    assert "Traceback" not in capsys.readouterr().err and (tmp_path / "rep" / "report.md").exists()


# ---------------------------------------------------------------------------------------- missing arrays

def test_a_deleted_risk_array_is_damage_of_every_unit(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    shutil.rmtree(path / "risk")
    code, lines, _ = _verify_lines(path, capsys)
    assert code == 1 and len(lines) == 8 and all(ln.endswith(": array 'risk' is missing (the spec records the risk)")
                                                  for ln in lines)
    [got] = open_checked_many([path])
    assert "array(s) 'risk' missing" in str(got)


@pytest.mark.parametrize("name", ["h", "risk_h", "var_init_coef"])
def test_a_deleted_prediction_is_named(clean, tmp_path, capsys, name):
    path = _copy(clean, tmp_path)
    shutil.rmtree(path / name)
    code, lines, _ = _verify_lines(path, capsys)
    assert code == 1 and lines == [f"predictions: {name!r} is missing"]
    _one_error(main(["query", str(path)]), capsys.readouterr().err, f"lost its predictions: {name!r} is missing")


@pytest.mark.parametrize("name", ["unit", "width"])
def test_a_deleted_bookkeeping_array_is_one_line(clean, tmp_path, capsys, name):
    path = _copy(clean, tmp_path)
    shutil.rmtree(path / name)
    _one_error(main(["verify", str(path)]), capsys.readouterr().err, f"'{name}'", "missing",
               "rerun distntk run with the same spec and --store to rebuild")


def _rerun(spec_path, path, tmp_path) -> subprocess.CompletedProcess:
    mark, temp = new_mark(), short_tmp("dnhostile")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    try:
        return subprocess.run([f"{VENV_BIN}/distntk", "run", str(spec_path), "--store", str(path), "--no-progress",
                               "--actors", "1", "--check"], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=900)
    finally:
        cleanup(mark, temp)


def _same_as_clean(path, clean_path) -> None:
    a, b = open_store(path), open_store(clean_path)
    for name in ("output", "risk", "done", "h", "nvar_poisson", "var_init_coef", "risk_h", "nvar_risk_poisson"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_run_check_repairs_a_foreign_chunk_and_rebuilds_lost_predictions(clean, tmp_path):
    """One `distntk run --check`: the unit holding another unit's chunk is recomputed (only it), the predictions
    solved again (a rerun without --check rebuilds lost predictions and arrays too; it reads no unit's chunks)."""
    path = _copy(clean, tmp_path)
    shutil.copy(path / "output" / "c.1.1.1.0.0", path / "output" / "c.1.0.1.0.0")
    shutil.rmtree(path / "h")
    g = zarr.open_group(str(path), mode="r+")
    g["nvar_poisson"][...] = g["nvar_poisson"][...] * 2  # and an edited prediction: every prediction rewritten
    p = _rerun(clean[0], path, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "1 of 8 units to compute" in p.stderr
    assert verify(path) == Verification((), ())
    _same_as_clean(path, clean[2])
    assert "rebuilt h" in zarr.open_group(str(path), mode="r").attrs["history"]


def test_a_plain_rerun_rebuilds_a_deleted_risk_array(clean, tmp_path):
    path = _copy(clean, tmp_path)
    shutil.rmtree(path / "risk")
    p = _rerun(clean[0], path, tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "8 of 8 units to compute" in p.stderr
    assert verify(path) == Verification((), ())
    _same_as_clean(path, clean[2])


# ------------------------------------------------------------------------- predictions bound to the store

@pytest.mark.parametrize("how", ["edited h", "edited solver attribute"])
def test_predictions_edited_after_creation_are_named(clean, tmp_path, capsys, how):
    path = _copy(clean, tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    if how == "edited h":
        g["h"][...] = g["h"][...] * 1.01  # finite, checksummed: only the digest tells
    else:
        g.attrs["memory_bound"] = 1e-12
    code, lines, _ = _verify_lines(path, capsys)
    assert code == 1 and lines == ["predictions: the predictions or the limit solver's attributes do not match the "
                                   "digest written when the store was created (edited?)"]
    _one_error(main(["query", str(path)]), capsys.readouterr().err, "lost its predictions: the predictions")
    [got] = open_checked_many([path])
    assert "lost its predictions: the predictions" in str(got)


def test_prediction_errors_reach_every_reader(clean, tmp_path, capsys):
    """A sampled limit's standard errors (``*_se``) widen the verdicts on the single-store and catalog paths alike."""
    from distntk.store import create_store

    spec = clean[1]
    e = spec.experiment
    pred = e.predictions()
    for name in ("h", "nvar_poisson", "nvar_iid", "var_init_coef"):
        pred[f"{name}_se"] = abs(pred[name]) * 0.05 + 1e-3
    root = tmp_path / "root"
    rs = create_store(root / "s.zarr", spec, pred)
    for u in e.units():
        rs.write_unit(u, e.compute(u), 0.1, "n")
    one = estimate(open_checked(root / "s.zarr")[0])
    many = estimate(open_catalog(root).checked("s")[0])
    for name in ("ratio_poisson_lo", "ratio_poisson_hi", "mean_error_lo", "ratio_init_hi"):
        np.testing.assert_array_equal(many[name].values, one[name].values, err_msg=name)
    plain = estimate(open_checked(clean[2])[0])
    assert (one.ratio_poisson_hi.values > plain.ratio_poisson_hi.values).all()  # the errors widen the intervals
