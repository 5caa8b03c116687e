"""A catalog of stores under a root: listing, manifest, tidy rows, filters, DataTree, sweep report.

Stores here are real Zarr stores written by distntk.store from in-process computations
(conftest.write_store); the Ray path of a sweep is tested in test_sweep_run.py.
"""

from __future__ import annotations

import json

import pytest
from conftest import write_store
from raytools import section6_toml

from distntk.catalog import CatalogError, format_catalog, open_catalog, read_manifest, write_manifest
from distntk.query import COLUMNS, summary
from distntk.report import write_sweep_report
from distntk.store import StoreError
from distntk.sweep import parse_sweep

BASE = section6_toml(name="cat", seed=5, widths=(16,), n_init=3, n_data=8, block=4)
SWEEP = parse_sweep(BASE + '[sweep]\n"model.beta" = [0.6, 0.8, 0.9]\n', default_name="cat")


def _write_members(root, members, units=None):
    """Write ``members`` under ``root``: all their units, or the first ``units`` of each."""
    for m in members:
        exp = m.spec.experiment
        todo = exp.units() if units is None else exp.units()[:units]
        write_store(f"{root}/{m.name}.zarr", m.spec, {u: exp.compute(u) for u in todo})


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    """A partial sweep: member 0 complete, member 1 with 2 of 6 units, member 2 never started, a junk child."""
    root = tmp_path_factory.mktemp("sweep-root")
    write_manifest(str(root), SWEEP.manifest)
    _write_members(root, SWEEP.members[:1])
    _write_members(root, SWEEP.members[1:2], units=2)
    (root / "junk.zarr").mkdir()
    return root


def test_catalog_lists_members_keys_and_problems(sweep_root):
    cat = open_catalog(str(sweep_root))
    assert sorted(cat.stores) == sorted(m.name for m in SWEEP.members[:2])
    assert cat.keys == ["model.beta"]
    assert cat.problems[SWEEP.members[2].name].startswith("not started")
    assert "junk" in cat.problems and "no distntk store" in cat.problems["junk"]


def test_rows_are_the_query_rows_of_each_store_plus_the_keys(sweep_root):
    cat = open_catalog(str(sweep_root))
    rows = cat.rows(time=1.0)
    for m in SWEEP.members[:2]:
        mine = [r for r in rows if r["store"] == m.name]
        expected = summary(cat.stores[m.name], time=1.0)
        assert len(mine) == len(expected) > 0
        for r, e in zip(mine, expected, strict=True):
            assert r["model.beta"] == m.values["model.beta"]
            assert all((r[k] == e[k]) or (r[k] != r[k] and e[k] != e[k]) for k in e)  # NaN == NaN here
    complete = [r for r in rows if r["store"] == SWEEP.members[0].name]
    partial = [r for r in rows if r["store"] == SWEEP.members[1].name]
    assert all(r["units_done"] == r["units"] == 6 for r in complete)
    assert all(r["units_done"] == 2 and r["units"] == 6 for r in partial)


def test_where_filters_by_spec_key(sweep_root):
    cat = open_catalog(str(sweep_root))
    assert list(cat.where(**{"model.beta": 0.8}).stores) == [SWEEP.members[1].name]
    assert list(cat.where(**{"model.beta": 0.7}).stores) == []
    assert len(cat.where(**{"training.L": 4}).stores) == 2


def test_datatree_one_node_per_store_with_the_spec_in_attrs(sweep_root):
    tree = open_catalog(str(sweep_root)).tree
    names = sorted(tree.children)
    assert names == sorted(m.name for m in SWEEP.members[:2])
    for m in SWEEP.members[:2]:
        node = tree[m.name]
        assert node.attrs["spec:model.beta"] == m.values["model.beta"]
        assert node.attrs["spec_hash"] == m.spec.hash
        assert "output" in node.to_dataset()


def test_folder_of_unrelated_stores_shows_the_keys_that_differ(tmp_path):
    a = parse_sweep(BASE + '[sweep]\n"seed" = [1]\n').members[0]
    b = parse_sweep(section6_toml(name="x", seed=2, widths=(16, 32), n_init=3, n_data=8, block=4)
                    + '[sweep]\n"model.b_max" = [0.2]\n').members[0]
    _write_members(tmp_path, [a, b], units=1)
    cat = open_catalog(str(tmp_path))
    assert cat.manifest is None and not cat.problems
    assert cat.keys == ["model.b_max", "replicas.widths", "seed"]


def test_changed_sweep_is_refused_naming_the_change(tmp_path):
    write_manifest(str(tmp_path), SWEEP.manifest)
    write_manifest(str(tmp_path), SWEEP.manifest)  # the same sweep again: accepted
    changed = parse_sweep(BASE + '[sweep]\n"model.beta" = [0.6, 0.8, 0.95]\n', default_name="cat")
    with pytest.raises(CatalogError) as err:
        write_manifest(str(tmp_path), changed.manifest)
    msg = str(err.value)
    assert "members no longer in the sweep: model.beta=0.9" in msg and "new members: model.beta=0.95" in msg
    assert read_manifest(str(tmp_path))["members"] == json.loads(json.dumps(SWEEP.manifest["members"]))


def test_roots_that_are_not_catalogs_are_one_line_errors(tmp_path):
    with pytest.raises(CatalogError, match="no directory or prefix"):
        open_catalog(str(tmp_path / "nope"))
    with pytest.raises(CatalogError, match="no distntk stores under"):
        open_catalog(str(tmp_path))
    (tmp_path / "sweep.json").write_text("{not json")
    with pytest.raises(CatalogError, match="is not a distntk sweep manifest"):
        read_manifest(str(tmp_path))


def test_catalog_columns_are_the_query_columns(sweep_root):
    """One spelling per concept: the catalog's table, CSV and JSON name the query columns as distntk.query.COLUMNS."""
    cat = open_catalog(str(sweep_root))
    rows = cat.rows(time=1.0)
    names = [name for name, _ in COLUMNS]
    head = format_catalog(cat, rows, "table").splitlines()[1].split()
    assert head[:2] == ["store", "model.beta"]
    shown = head[2:]
    assert shown == [n for n in names if n in shown] and "nvar_poisson" in shown  # a part of the list, in its order
    assert format_catalog(cat, rows, "csv").splitlines()[0].split(",") == ["store", "model.beta", *names, "units_done",
                                                                            "units"]
    assert all(list(r)[2:-2] == names for r in json.loads(format_catalog(cat, rows, "json"))["rows"])


def test_sweep_report_names_missing_members_and_units(sweep_root, tmp_path):
    cat = open_catalog(str(sweep_root))
    path = write_sweep_report(cat, tmp_path / "rep")
    text = path.read_text()
    assert (tmp_path / "rep" / "ratios.png").stat().st_size > 0 and (tmp_path / "rep" / "init.png").exists()
    assert f"`{SWEEP.members[2].name}`: not started" in text
    assert f"`{SWEEP.members[1].name}`: 4 units not done" in text
    assert "1 of 2 stores are complete" in text
    for m in SWEEP.members[:2]:
        assert f"| `{m.name}` | {m.values['model.beta']} | 16 |" in text


def test_sweep_report_reads_at_a_glance(sweep_root, tmp_path):
    """Tables under headings, one legend per figure, every axis labelled, a glossary into docs/model.md."""
    import re

    import matplotlib.pyplot as plt

    from distntk.report import MODEL_ANCHORS, plot_sweep_init, plot_sweep_ratios, sweep_headlines

    cat = open_catalog(str(sweep_root))
    lines = write_sweep_report(cat, tmp_path / "rep").read_text().splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("|") and not lines[i - 1].startswith("|")]
    assert starts and all(lines[i - 2].startswith("### ") and not lines[i - 1] for i in starts)
    refs = re.findall(r"model\.md#([a-z-]+)", "\n".join(lines))
    assert "## Glossary" in lines and refs and set(refs) <= set(MODEL_ANCHORS)
    assert sum(ln.startswith("- *What it means (") for ln in lines) == 3  # Poisson, i.i.d., initialisation
    rows = sweep_headlines(cat)
    for fig in (plot_sweep_ratios(rows, cat.swept, 0.99), plot_sweep_init(rows, 0.99, cat.swept)):
        assert len(fig.legends) + sum(ax.get_legend() is not None for ax in fig.axes) == 1
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel() and ax.get_yscale() in ("linear", "log")
        plt.close(fig)


def test_sweep_init_figure_tells_chains_apart_at_equal_beta():
    """Two chains at the same beta and width get different markers and line styles, on a log axis that holds
    a lower bound of 0 and a ratio of 0 (no symlog axis, no empty negative half)."""
    import matplotlib.pyplot as plt

    from distntk.report import plot_sweep_init

    keys = ["model.beta", "chain.transition"]
    chains = {"sticky": [[0.8, 0.2], [0.3, 0.7]], "anti": [[0.2, 0.8], [0.7, 0.3]]}
    rows = [{"store": f"model.beta={b},{name}", "model.beta": b, "chain.transition": P, "beta": b, "width": 64,
             "ratio_init": r, "ratio_init_lo": lo, "ratio_init_hi": hi}
            for b in (0.6, 0.8) for (name, P), (r, lo, hi) in zip(chains.items(), [(1.1, 0.0, 3.0), (0.0, 0.0, 2.0)],
                                                                    strict=True)]
    fig = plot_sweep_init(rows, 0.99, keys)
    [ax] = fig.axes
    assert ax.get_yscale() == "log" and ax.get_ylim()[0] > 0
    styles = {c.get_label(): (c.lines[0].get_marker(), c.lines[0].get_linestyle()) for c in ax.containers}
    assert set(styles) == {"N = 64, sticky", "N = 64, anti"}
    assert styles["N = 64, sticky"][0] != styles["N = 64, anti"][0]
    assert styles["N = 64, sticky"][1] != styles["N = 64, anti"][1]
    [legend] = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == ["N = 64, anti", "N = 64, sticky"]
    plt.close(fig)


def test_catalog_on_s3(s3_bucket, tmp_path):
    root = s3_bucket.url("campaign")
    so = s3_bucket.storage_options()
    write_manifest(root, SWEEP.manifest, so)
    m = SWEEP.members[0]
    exp = m.spec.experiment
    write_store(f"{root}/{m.name}.zarr", m.spec, {u: exp.compute(u) for u in exp.units()[:3]},
                storage_options=so)
    cat = open_catalog(root, so)
    assert list(cat.stores) == [m.name]
    assert sorted(cat.problems) == sorted(x.name for x in SWEEP.members[1:])
    rows = cat.rows(time=1.0)
    assert rows and all(r["model.beta"] == 0.6 and r["units_done"] == 3 for r in rows)


@pytest.fixture(scope="module")
def complete_root(tmp_path_factory):
    """The three members of SWEEP, all complete (block 4: each unit is one chunk of 4 replicas)."""
    root = tmp_path_factory.mktemp("complete-root")
    write_manifest(str(root), SWEEP.manifest)
    _write_members(root, SWEEP.members)
    return root


def test_damaged_members_are_named_and_never_summarised_as_complete(complete_root, tmp_path, capsys):
    """One member per kind of damage: a deleted chunk (judged on the whole arrays), random bytes in a
    chunk (read again unit by unit), a lost prediction and a doctored spec (the whole store refused)."""
    import shutil

    import numpy as np
    import zarr

    from distntk.cli import main

    root = tmp_path / "root"
    shutil.copytree(complete_root, root)
    a, b, c = (m.name for m in SWEEP.members)
    # the per-unit arrays' chunk keys are c.i.j.k (store schema 2)
    (root / f"{a}.zarr" / "output" / "c.0.1.0.0.0").unlink()  # init 1, data 0-3
    chunk = root / f"{b}.zarr" / "output" / "c.0.2.1.0.0"  # init 2, data 4-7
    chunk.write_bytes(np.random.default_rng(5).bytes(chunk.stat().st_size))
    (root / f"{c}.zarr" / "nvar_poisson" / "c" / "0" / "0").unlink()
    shutil.copytree(root / f"{a}.zarr", root / "doctored.zarr")
    g = zarr.open_group(str(root / "doctored.zarr"), mode="r+")
    g.attrs["spec_canonical"] = g.attrs["spec_canonical"].replace('"beta":0.6', '"beta":0.7')

    cat = open_catalog(str(root))
    assert "does not hash to its spec_hash" in cat.problems["doctored"] and "doctored" not in cat.stores
    rows = cat.rows(time=1.0)
    by = {n: [r for r in rows if r["store"] == n] for n in (a, b, c)}
    assert by[a] and all(r["units_done"] == 5 and r["units"] == 6 and r["n"] == 20 for r in by[a])
    assert by[b] and all(r["units_done"] == 5 and r["units"] == 6 and r["n"] == 20 for r in by[b])
    assert by[c] == []  # nothing to compare with: not summarised at all
    assert "width 16, init 1, data 0-3" in cat.damaged[a]
    assert "width 16, init 2, data 4-7" in cat.damaged[b]
    assert cat.damaged[c].startswith("not summarised:") and "lost its predictions: 'nvar_poisson'" in cat.damaged[c]
    with pytest.raises(StoreError, match="lost its predictions"):
        cat.checked(c)

    assert main(["query", str(root), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert {r["store"] for r in doc["rows"]} == {a, b} and set(doc["damaged"]) == {a, b, c}
    assert "doctored" in doc["problems"]
    lines = err.splitlines()
    assert len(lines) == 4 and "Traceback" not in err
    assert lines[0].startswith("distntk: warning: 1 member(s) missing or unreadable: doctored:")
    assert [ln.split(":")[2].strip() for ln in lines[1:]] == sorted([a, b, c])


def test_worker_processes_give_the_same_rows(complete_root):
    """The path of large catalogs (stores split over worker processes) returns what one process returns."""
    from distntk.catalog import _read_summarised, _summarised

    locations = [f"{complete_root}/{m.name}.zarr" for m in SWEEP.members]
    select = (None, 1.0, None)
    here = _summarised(locations, None, select)
    there = _read_summarised(locations, None, select, workers=2)
    assert [rows for _, rows in there] == [rows for _, rows in here] and len(here) == 3
    for (ds_here, bad_here), (ds_there, bad_there) in ((h, t) for (h, _), (t, _) in zip(here, there, strict=True)):
        assert bad_here == bad_there == {} and ds_here.identical(ds_there)


def test_a_swept_table_is_a_column_of_its_keys():
    """A sweep may vary a whole table ("target"); its column holds the table's keys, not nothing."""
    from distntk.catalog import _value

    flat = {"target.name": "linear", "target.weights": [1.0], "model.beta": 0.6}
    assert _value(flat, "target") == {"name": "linear", "weights": [1.0]}
    assert _value(flat, "model.beta") == 0.6 and _value(flat, "chain") is None


# --------------------------------------------------------------------------- the catalog's fast paths

def test_local_reads_give_the_bytes_zarrs_local_store_gives(complete_root):
    """distntk.store.local_read_store (files read in the coroutine, not in a thread) against zarr's own
    LocalStore."""
    import asyncio

    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    from distntk.store import local_read_store

    path = complete_root / f"{SWEEP.members[0].name}.zarr"
    keys = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert len(keys) > 20 and "output/zarr.json" in keys
    proto = default_buffer_prototype()

    async def both(key, byte_range=None):
        ours, theirs = local_read_store(path), LocalStore(path, read_only=True)
        a, b = await ours.get(key, proto, byte_range), await theirs.get(key, proto, byte_range)
        return (None if a is None else a.to_bytes()), (None if b is None else b.to_bytes())

    for key in [*keys, "output/c.9.9.9.9.9", "no-such-array/zarr.json", "output"]:
        a, b = asyncio.run(both(key))
        assert a == b and (a is None) == (key not in keys), key
    from zarr.abc.store import RangeByteRequest

    a, b = asyncio.run(both("output/zarr.json", RangeByteRequest(3, 40)))
    assert a == b and len(a) == 37


def test_each_store_is_read_with_its_own_array_metadata(complete_root, tmp_path):
    """Metadata documents are parsed once per batch by their bytes: a store whose document differs
    (doctored: a fill value distntk does not write) is judged by its own, never by a sibling's; one that does
    not parse is named."""
    import shutil

    from distntk.verify import open_checked, open_checked_many

    src = complete_root / f"{SWEEP.members[0].name}.zarr"
    names = ["a", "doctored", "a-again", "garbage", "group"]
    for n in names:
        shutil.copytree(src, tmp_path / f"{n}.zarr")
    meta = tmp_path / "doctored.zarr" / "output" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["fill_value"] = 0.0  # a layout distntk does not write: refused for this store only
    meta.write_text(json.dumps(doc))
    (tmp_path / "garbage.zarr" / "h" / "zarr.json").write_text('{"node_type": "array", "shape": "nonsense"}')
    (tmp_path / "group.zarr" / "risk" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    got = dict(zip(names, open_checked_many([tmp_path / f"{n}.zarr" for n in names]), strict=True))
    assert isinstance(got["doctored"], StoreError) and "array 'output' has fill_value 0.0" in str(got["doctored"])
    for n in ("a", "a-again"):
        assert got[n][0].identical(open_checked(tmp_path / f"{n}.zarr")[0].drop_vars(["block", "unit_wall_time",
                                                                                       "unit_node", "unit_writes"],
                                                                                      errors="ignore"))
    assert isinstance(got["garbage"], StoreError) and "the metadata of 'h' do not parse" in str(got["garbage"])
    assert isinstance(got["group"], StoreError) and "'risk'" in str(got["group"])
    assert all("\n" not in str(got[n]) for n in ("garbage", "group"))


def test_kept_quantiles_are_scipys():
    """estimate._quantile keeps scipy's values by their exact arguments: the same numbers, shared read-only."""
    import numpy as np
    from scipy import stats

    from distntk.estimator import _quantile

    df = np.array([[1.0, 3.0, np.nan], [0.0, 7.5, 3.0]])
    for dist, method, args in ((stats.t, "isf", (df,)), (stats.chi2, "ppf", (df,)), (stats.f, "isf", (df, df[0])),
                               (stats.norm, "isf", ())):
        expected = getattr(dist, method)(0.005, *args)
        first, again = _quantile(dist, method, 0.005, *args), _quantile(dist, method, 0.005, *args)
        np.testing.assert_array_equal(first, expected)  # NaN where scipy gives NaN, bit for bit elsewhere
        np.testing.assert_array_equal(again, expected)
        if isinstance(first, np.ndarray):
            assert first is again and not again.flags.writeable
    other = np.array([2.0, 2.0])
    np.testing.assert_array_equal(_quantile(stats.t, "isf", 0.005, other), stats.t.isf(0.005, other))


def test_query_rows_are_the_estimates_numbers(sweep_root):
    """summary reads the estimator's arrays without its Dataset: the same numbers as estimate()."""
    import numpy as np

    from distntk.estimator import estimate

    cat = open_catalog(str(sweep_root))
    for m in SWEEP.members[:2]:
        ds = cat.checked(m.name)[0]
        est = estimate(ds)
        rows = summary(ds)
        assert len(rows) == ds.sizes["width"] * ds.sizes["time"] * ds.sizes["probe"]
        for r in rows:
            cell = est.sel(width=r["width"], time=r["time"], probe=r["probe"])
            for field, name, scale in (("n", "n_obs", 1), ("h", "h", 1), ("mean", "mean", 1), ("se", "mean_se", 1),
                                       ("nvar", "within", r["width"]), ("var_init", "between_raw", 1)):
                np.testing.assert_array_equal(r[field], float(cell[name]) * scale, err_msg=f"{m.name} {field}")


def test_inline_zstd_decodes_as_zarrs_codec(complete_root, monkeypatch):
    """verify._ZstdInline (small chunks decoded in the coroutine) reads what zarr's ZstdCodec reads, on both
    of its paths (inline, and a thread above _INLINE_BYTES), and is selected only inside open_checked_many."""
    import numpy as np
    import zarr
    from zarr.codecs import ZstdCodec

    from distntk import verify

    path = complete_root / f"{SWEEP.members[0].name}.zarr"
    calls = []
    decode = verify._ZstdInline._decode_single

    async def counted(self, chunk_bytes, chunk_spec):
        calls.append(len(chunk_bytes))
        return await decode(self, chunk_bytes, chunk_spec)

    monkeypatch.setattr(verify._ZstdInline, "_decode_single", counted)
    (inline,) = verify.open_checked_many([path])
    assert calls and max(calls) <= verify._INLINE_BYTES  # the bench-sized chunks all decode inline
    monkeypatch.setattr(verify, "_INLINE_BYTES", -1)  # every chunk through ZstdCodec's thread
    (threaded,) = verify.open_checked_many([path])
    plain = zarr.open_group(str(path), mode="r")["h"]  # a prediction: Zstd-compressed (the per-replica arrays
    assert ZstdCodec in {type(c) for c in plain.metadata.codecs}  # zarr's own class outside open_checked_many
    assert verify._ZstdInline not in {type(c) for c in plain.metadata.codecs}
    assert inline[0].identical(threaded[0]) and inline[1] == threaded[1] == {}
    np.testing.assert_array_equal(inline[0]["h"].values, plain[...])  # are not)


@pytest.mark.parametrize("how", ["never starts", "dies holding a batch"])
def test_stores_of_a_failed_worker_are_read_by_the_catalog_itself(complete_root, tmp_path, monkeypatch, how):
    """A worker that does not start, or that dies with a batch, loses nothing: the rows are those of one process."""
    import stat
    import sys

    from distntk.catalog import _read_summarised, _summarised

    took = tmp_path / "took-a-batch"
    fake = tmp_path / "fake-python"
    body = ("exit 3" if how == "never starts" else
            f"exec {sys.executable} -c \"import pickle, sys; pickle.load(sys.stdin.buffer); "
            f"pickle.dump('ready', sys.stdout.buffer); sys.stdout.flush(); pickle.load(sys.stdin.buffer); "
            f"open('{took}', 'w').close(); sys.exit(3)\"")
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    locations = [f"{complete_root}/{m.name}.zarr" for m in SWEEP.members] * 12  # 36 stores, batches of 3
    select = (None, 1.0, None)
    here = _summarised(locations, None, select)
    monkeypatch.setattr(sys, "executable", str(fake))
    there = _read_summarised(locations, None, select, workers=1)
    assert [rows for _, rows in there] == [rows for _, rows in here] and len(there) == 36
    assert took.exists() == (how == "dies holding a batch")
