"""Damaged stores: found by `distntk verify`, left out by query and report, repaired by `distntk run --check`.

Each test damages a real store written by distntk.store's writer (conftest.write_store, the driver's code
path without Ray) in one way the issue measured: a deleted chunk, ``done`` over NaN data, a chunk
overwritten with random bytes, one unit's values multiplied by 10, an old store without checksums;
locally and on the S3 server on loopback.  The repair runs the real `distntk run` (embedded Ray).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import ROOT, write_store
from raytools import VENV_BIN, cleanup, new_mark, scoped_env, short_tmp, tiny_spec

from distntk.cli import main
from distntk.spec import load_spec
from distntk.store import StoreError, open_or_create, open_result_store, open_store
from distntk.verify import OUTLIER_Z, Verification, init_variance, open_checked, open_checked_many, outliers, verify


def _unit_text(u) -> str:
    return f"width {u.width}, init {u.init}, data {u.data_start}-{u.data_stop - 1}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A complete tiny store (2 widths x 2 inits x 8 data, block 4: 8 units) and its spec file.

    ``tiny[2]`` has the current layout (schema 3); ``tiny[3]`` the same units in the schema-1 layout
    (stores made by distntk 0.2 and earlier: ``done``, ``unit_writes``, ... as arrays of their own);
    ``tiny[4]`` in the schema-2 layout (one ``unit`` record per chunk, distntk 0.3 to 0.5).
    """
    tmp = tmp_path_factory.mktemp("tiny")
    spec_path = tiny_spec(tmp / "tiny.toml")
    spec = load_spec(spec_path)
    e = spec.experiment
    results = {u: e.compute(u) for u in e.units()}
    write_store(tmp / "clean.zarr", spec, results)
    write_store(tmp / "clean-schema1.zarr", spec, results, schema=1)
    write_store(tmp / "clean-schema2.zarr", spec, results, schema=2)
    return spec_path, spec, tmp / "clean.zarr", tmp / "clean-schema1.zarr", tmp / "clean-schema2.zarr"


def _copy(tiny, tmp_path, schema: int = 3) -> Path:
    path = tmp_path / "s.zarr"
    shutil.copytree({3: tiny[2], 2: tiny[4], 1: tiny[3]}[schema], path)
    return path


def _chunk(path: Path, name: str, wi: int, i: int, b: int) -> Path:
    """The file of chunk (width index wi, init i, block b) of a per-unit array (keys "c/..." or "c.", as stored)."""
    rest = {"output": ["0", "0"], "risk": ["0"], "done": [], "unit_writes": [], "unit": []}[name]
    meta = json.loads(path.joinpath(name, "zarr.json").read_text())
    sep = meta["chunk_key_encoding"]["configuration"]["separator"]
    return path.joinpath(name, sep.join(["c", str(wi), str(i), str(b), *rest]))


def _damage(path: Path, how: str) -> None:
    """Damage the unit (width index 1, init 0, block 1) = (32, 0, 4-7) of a tiny store."""
    if how == "deleted output chunk":
        _chunk(path, "output", 1, 0, 1).unlink()
    elif how == "done over NaN data":
        zarr.open_group(str(path), mode="r+")["output"][1, 0, 4:8] = np.nan
    elif how == "random bytes in output":
        f = _chunk(path, "output", 1, 0, 1)
        f.write_bytes(np.random.default_rng(1).bytes(f.stat().st_size))
    elif how == "random bytes in done":
        f = _chunk(path, "done", 1, 0, 1)
        f.write_bytes(np.random.default_rng(2).bytes(max(f.stat().st_size, 8)))
    elif how == "deleted risk chunk":
        _chunk(path, "risk", 1, 0, 1).unlink()
    elif how == "random bytes in unit_writes":
        f = _chunk(path, "unit_writes", 1, 0, 1)
        f.write_bytes(np.random.default_rng(4).bytes(max(f.stat().st_size, 8)))
    elif how == "random bytes in unit record":
        f = _chunk(path, "unit", 1, 0, 1)
        f.write_bytes(np.random.default_rng(5).bytes(f.stat().st_size))
    elif how == "unit record not JSON":  # a chunk that decodes, holding no record
        zarr.open_group(str(path), mode="r+")["unit"][1, 0, 1] = "{writes: 1"
    else:  # pragma: no cover
        raise ValueError(how)


# (layout, damage): the current layout, and schemas 2 and 1 (old stores) where their own arrays differ (a
# schema-3 unit record chunk holds every record of a width: tests/test_store.py damages one)
DAMAGES = [(3, "deleted output chunk"), (3, "done over NaN data"), (3, "random bytes in output"),
           (2, "random bytes in unit record"), (3, "unit record not JSON"), (3, "deleted risk chunk"),
           (1, "random bytes in done"), (1, "random bytes in unit_writes"), (1, "deleted output chunk")]


@pytest.mark.parametrize("schema", [3, 2, 1])
def test_a_clean_store_verifies(tiny, capsys, schema):
    path = {3: tiny[2], 2: tiny[4], 1: tiny[3]}[schema]
    assert verify(path) == Verification((), ())
    assert main(["verify", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "every done unit intact" in err


def test_both_layouts_read_alike(tiny):
    """The same units written in any layout: the same Dataset (values, flags, counters, nodes)."""
    a, b, c = open_store(tiny[2]), open_store(tiny[3]), open_store(tiny[4])
    assert "unit" not in a and "done" in a and a.attrs["store_schema"] == 3 and "store_schema" not in b.attrs
    assert c.attrs["store_schema"] == 2
    for name in ("output", "risk", "done", "unit_writes", "unit_node", "unit_wall_time"):
        for other in (b, c):
            assert a[name].dims == other[name].dims and a[name].dtype.kind == other[name].dtype.kind, name
            np.testing.assert_array_equal(a[name].values, other[name].values, err_msg=name)
    assert a.done.values.all() and (a.unit_writes.values == 1).all()


@pytest.mark.parametrize(("schema", "how"), DAMAGES)
def test_damage_is_found_named_and_left_out(tiny, tmp_path, capsys, schema, how):
    spec_path, spec = tiny[:2]
    path = _copy(tiny, tmp_path, schema)
    _damage(path, how)
    units = spec.experiment.units()
    hit = [u for u in units if (u.width, u.init, u.data_start) == (32, 0, 4)]
    # verify: the damaged unit, one line, exit 1
    assert main(["verify", str(path)]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(_unit_text(hit[0]) + ": "), out
    # the driver's plan: exactly that unit is computed again, and it can be written back
    rs = open_result_store(path)
    assert rs.pending(units, check=True) == hit
    # a plain resume reads the records only: it recomputes a unit whose record is damaged, not one whose data are
    records = how in ("random bytes in unit record", "unit record not JSON", "random bytes in done")
    assert open_result_store(path).pending(units) == (hit if records else [])
    if how == "random bytes in unit_writes":
        rs.write_unit(hit[0], spec.experiment.compute(hit[0]), 0.1, "repair")
        assert verify(path) == Verification((), ()) and open_store(path).unit_writes.values[1, 0, 1] == 1
        return
    # query: one warning line naming the unit, the unit left out, no traceback
    assert main(["query", str(path), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("distntk: warning: 1 damaged unit(s) left out") and \
        _unit_text(hit[0]) in err
    doc = json.loads(out)
    assert [p["replicas_done"] for p in doc["progress"]] == [16, 12]
    assert {r["n"] for r in doc["rows"] if r["width"] == 32} == {12}
    if how not in ("deleted output chunk", "random bytes in output"):
        return  # the report reads the store as query does; two kinds suffice for it
    # report: the same warning, a partial store naming the unit, never "Complete"
    assert main(["report", str(path), "--out", str(tmp_path / "rep")]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and _unit_text(hit[0]) in err and "Traceback" not in err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Complete store" not in md and "**Damaged units left out.**" in md
    assert f"- {_unit_text(hit[0])}" in md  # listed with the missing units


@pytest.mark.parametrize("schema", [3, 2, 1])
def test_run_check_repairs_a_damaged_store_bit_for_bit(tiny, tmp_path, schema):
    """`distntk run --check` (embedded Ray) recomputes exactly the damaged units and writes the very same bits.

    Schemas 1 and 2: old stores (made by distntk 0.2 and earlier; 0.3 to 0.5) resume in their own layout,
    written by the driver.
    """
    spec_path, spec, clean = tiny[:3]
    path = _copy(tiny, tmp_path, schema)
    _damage(path, "random bytes in output")
    _chunk(path, "output", 0, 1, 0).unlink()  # and a second unit: (16, 1, 0-3)
    mark, temp = new_mark(), short_tmp("dnverify")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    try:
        p = subprocess.run([f"{VENV_BIN}/distntk", "run", str(spec_path), "--store", str(path), "--no-progress",
                            "--actors", "1", "--check"], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
    finally:
        cleanup(mark, temp)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 of 8 units to compute" in p.stderr and "estimate for the whole spec" in p.stderr
    assert verify(path) == Verification((), ())
    assert ("done" in zarr.open_group(str(path), mode="r")) == (schema == 1)  # the layout kept
    a, b = open_store(path), open_store(clean)
    for name in ("output", "risk", "done"):
        np.testing.assert_array_equal(a[name].values, b[name].values)  # NaN-free, so exact equality is bitwise
    w = a.unit_writes.values
    assert w[1, 0, 1] == 2 and w[0, 1, 0] == 2 and int((w == 1).sum()) == w.size - 2


def test_an_old_store_without_checksums_still_opens_and_its_damage_is_found(tiny, tmp_path, capsys):
    """Stores made before the crc32c codec: zstd only.  They open; a broken chunk fails Zstd decoding."""
    path = _copy(tiny, tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    old = g["output"]
    data, attrs = old[...], dict(old.attrs)
    assert any(type(c).__name__ == "Crc32cCodec" for c in old.metadata.codecs)  # new stores carry the checksum
    new = g.create_array("output", shape=old.shape, chunks=old.chunks, dtype=old.dtype, fill_value=np.nan,
                         dimension_names=old.metadata.dimension_names, attributes=attrs, overwrite=True)
    new[...] = data
    assert not any(type(c).__name__ == "Crc32cCodec" for c in new.metadata.codecs)
    assert verify(path) == Verification((), ())
    f = _chunk(path, "output", 1, 0, 1)
    f.write_bytes(np.random.default_rng(3).bytes(f.stat().st_size))
    [line] = verify(path).problems
    assert line.startswith("width 32, init 0, data 4-7: output chunk does not decode")
    assert main(["query", str(path)]) == 0
    assert "1 damaged unit(s) left out" in capsys.readouterr().err


def test_a_unit_times_ten_is_flagged_and_kept(sticky, tmp_path, capsys):
    """On the sticky store (32 units per width) one unit's values x 10 are flagged; the clean store has none.

    A flag is a note, not damage: verify prints it as a ``flag:`` line and exits 0, and query and report keep
    the unit in every estimate.  The threshold is OUTLIER_Z = 10 expected standard deviations; the clean
    store's largest robust z (MAD only, an upper bound on the flag's z, whose scale also holds the predicted
    spread) is printed by the assertion message for the record (2.8 when measured).
    """
    results = dict(sticky.results)
    clean = write_store(tmp_path / "clean.zarr", sticky.spec, results)
    out = clean.output.values
    done = clean.done.values
    widths = [int(w) for w in clean.width.values]
    init_var = init_variance(clean.attrs, clean.var_init_coef.values, widths)
    assert outliers(out, done, widths, int(clean.attrs["block"]), init_var) == {}
    zmax = max(_mad_z(out[wi], 16).max() for wi in range(out.shape[0]))
    assert zmax < OUTLIER_Z / 2, zmax
    u = sticky.experiment.units()[70]  # width 512, init 3, data 0-15
    results[u] = {k: 10 * v for k, v in results[u].items()}
    write_store(tmp_path / "x10.zarr", sticky.spec, results)
    assert main(["verify", str(tmp_path / "x10.zarr")]) == 0
    out, err = capsys.readouterr()
    [line] = out.splitlines()
    assert line.startswith(f"flag: {_unit_text(u)}: outlier: unit mean") and "kept in every estimate" in line
    assert "1 unit(s) flagged as outliers (kept: not damage)" in err
    assert main(["report", str(tmp_path / "x10.zarr"), "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("distntk: note: 1 unit(s) flagged as outliers and kept") and _unit_text(u) in err
    assert "damaged" not in err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**Outlier flags (kept).**" in md and "Damaged units left out" not in md
    ds, bad = open_checked(tmp_path / "x10.zarr")
    assert bad == {} and ds.done.values.all()  # kept: every unit done, the x10 values in the estimate
    np.testing.assert_array_equal(ds.output.sel(width=u.width, init=u.init, data=list(u.data)).values,
                                  results[u]["output"])


def _mad_z(out_w: np.ndarray, block: int) -> np.ndarray:
    """The robust z of each unit mean of one width by its MAD alone (the flag before the predicted spread)."""
    m = out_w.reshape(out_w.shape[0], -1, block, *out_w.shape[2:]).mean(axis=2).reshape(-1, *out_w.shape[2:])
    med = np.median(m, axis=0)
    return np.abs(m - med) / (1.4826 * np.median(np.abs(m - med), axis=0))


NEAR_HALF = """name = "near-half"
seed = 2
[chain]
inputs = [-1.0, 1.0]
transition = [[0.2, 0.8], [0.7, 0.3]]
[target]
name = "linear"
weights = [1.0]
[model]
beta = 0.6
b_max = 0.3
[training]
T = 2.0
times = [0.5, 1.0, 1.5, 2.0]
L = 8
[replicas]
widths = [32, 64]
n_init = 8
n_data = 32
block = 16
[probes]
most_likely = 3
"""


def test_correct_units_near_beta_one_half_are_neither_flagged_nor_left_out(tmp_path, capsys):
    """The anti-persistent member of a new user's sweep at beta = 0.6 (seed 2): every unit correct.

    One initialisation has a large offset, as the model expects near beta = 1/2 (between-init variance
    ~ N^{1-2 beta}): its units' means lie more than 10 MADs from the median, which the flag without the
    predicted spread called damage (two units left out, a biased between-init variance).  With the
    between-init spread in the scale: no flag, every unit in the estimate, verify exits 0.
    """
    (tmp_path / "s.toml").write_text(NEAR_HALF)
    spec = load_spec(tmp_path / "s.toml")
    e = spec.experiment
    ds = write_store(tmp_path / "s.zarr", spec, {u: e.compute(u) for u in e.units()})
    out = ds.output.values
    assert _mad_z(out[0], e.replicas.block).max() > OUTLIER_Z  # the case the MAD-only scale got wrong
    assert main(["verify", str(tmp_path / "s.zarr")]) == 0
    out_, err = capsys.readouterr()
    assert out_ == "" and "every done unit intact" in err and "flag" not in err
    assert main(["query", str(tmp_path / "s.zarr")]) == 0
    assert capsys.readouterr().err == ""
    checked, bad = open_checked(tmp_path / "s.zarr")
    assert bad == {} and checked.done.values.all() and "distntk_flagged" not in checked.attrs


def test_verify_on_s3(tiny, s3_bucket, capsys):
    """The same checks on an s3:// store (moto on loopback); one chunk object overwritten with random bytes."""
    spec = tiny[1]
    url = s3_bucket.url("v/s.zarr")
    e = spec.experiment
    rs = open_or_create(url, spec, spec.experiment.predictions)
    for u in e.units():
        rs.write_unit(u, e.compute(u), 0.1, "n")
    assert main(["verify", url]) == 0
    capsys.readouterr()
    fs = s3_bucket.filesystem()
    key = f"{s3_bucket.name}/v/s.zarr/output/c.0.1.0.0.0"
    assert fs.exists(key)
    fs.pipe_file(key, os.urandom(len(fs.cat_file(key))))
    assert main(["verify", url, "--storage-option", f"endpoint_url={s3_bucket.server.endpoint_url}"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "width 16, init 1, data 0-3: output chunk does not decode (checksum mismatch or corrupt bytes)"]


@pytest.mark.parametrize("how", DAMAGES + [(3, "clean"), (2, "clean"), (1, "clean"),
                                           (3, "old store without checksums")])
def test_many_stores_at_once_are_checked_as_one_is(tiny, tmp_path, how):
    """The catalog's reader (every array of many stores in flight at once) finds what open_checked finds.

    Same damaged units with the same reasons, and the same numbers in every variable both hold; a
    corrupt chunk sends the store through the unit-by-unit path, a deleted one is judged on the
    whole arrays.
    """
    schema, how = how
    path = _copy(tiny, tmp_path, schema)
    if how == "old store without checksums":
        g = zarr.open_group(str(path), mode="r+")
        old = g["output"]
        data, attrs = old[...], dict(old.attrs)
        new = g.create_array("output", shape=old.shape, chunks=old.chunks, dtype=old.dtype, fill_value=np.nan,
                             dimension_names=old.metadata.dimension_names, attributes=attrs, overwrite=True)
        new[...] = data
        f = _chunk(path, "output", 1, 0, 1)
        f.write_bytes(np.random.default_rng(3).bytes(f.stat().st_size))
    elif how != "clean":
        _damage(path, how)
    one, bad_one = open_checked(path)
    [(many, bad_many)] = open_checked_many([path])
    assert bad_many == bad_one and (how == "clean") == (not bad_one)
    assert set(many.variables) == set(one.variables) - {"block", "unit_wall_time", "unit_node", "unit_writes"}
    for name, var in many.variables.items():
        assert var.dims == one[name].dims and var.dtype == one[name].dtype and var.attrs == one[name].attrs
        np.testing.assert_array_equal(var.values, one[name].values)
    assert many.attrs == one.attrs


def test_many_stores_at_once_refuse_what_open_checked_refuses(tiny, tmp_path):
    """Lost predictions, a doctored spec and a folder that is no store: each a one-line StoreError, the others read."""
    lost, doctored = _copy(tiny, tmp_path / "a"), _copy(tiny, tmp_path / "b")
    (lost / "h" / "c" / "0" / "0").unlink()
    g = zarr.open_group(str(doctored), mode="r+")
    g.attrs["spec_canonical"] = g.attrs["spec_canonical"].replace('"seed":7', '"seed":8')
    (tmp_path / "empty.zarr").mkdir()
    got = open_checked_many([lost, doctored, tmp_path / "empty.zarr", tiny[2]])
    assert [type(g).__name__ for g in got] == ["StoreError"] * 3 + ["tuple"]
    assert "lost its predictions: 'h' has non-finite values" in str(got[0])
    assert "does not hash to its spec_hash" in str(got[1])
    assert "no distntk store at" in str(got[2])
    with pytest.raises(StoreError, match="does not hash to its spec_hash"):
        open_checked(doctored)
    assert all("\n" not in str(g) for g in got[:3])
