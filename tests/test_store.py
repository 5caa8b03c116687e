"""Result store: schema, chunk layout, write order, spec checks, URLs (no Ray here)."""

import hashlib
import json
import uuid

import numpy as np
import pytest
import zarr
from raytools import tiny_spec

from distntk import open_store
from distntk.spec import load_spec
from distntk.store import StoreError, chunk_digest, create_store, open_or_create, open_result_store, store_spec


@pytest.fixture
def spec(tmp_path):
    return load_spec(tiny_spec(tmp_path / "tiny.toml", n_data=6, block=4))


@pytest.mark.parametrize("schema", [3, 2, 1])
def test_schema(spec, tmp_path, schema):
    """Every layout (3: records in large chunks; 2: one record per chunk; 1: stores by distntk 0.2 and earlier)
    reads as the same Dataset."""
    path = tmp_path / "s.zarr"
    rs = create_store(path, spec, spec.experiment.predictions(), command="pytest", schema=schema)
    assert rs.schema == schema and rs.attrs.get("store_schema", 1) == schema
    ds = open_store(path)
    e = spec.experiment
    W, I, R, nt, P, nb = len(e.replicas.widths), e.replicas.n_init, e.replicas.n_data, len(e.times), len(e.probes), 2
    assert dict(ds.sizes) == {"width": W, "init": I, "data": R, "time": nt, "probe": P, "lag": e.L, "block": nb}
    assert ds.output.dims == ("width", "init", "data", "time", "probe") and ds.output.dtype == np.float64
    assert ds.risk.dims == ("width", "init", "data", "time")
    assert ds.done.dims == ("width", "init", "data") and ds.done.dtype == bool and not ds.done.values.any()
    for v, dt in (("unit_wall_time", np.float64), ("unit_writes", np.int64)):
        assert ds[v].dims == ("width", "init", "block") and ds[v].dtype == dt
    assert ds.unit_node.dims == ("width", "init", "block") and set(ds.unit_node.values.ravel()) == {""}
    assert np.isnan(ds.output.values).all() and np.isnan(ds.unit_wall_time.values).all()
    assert (ds.unit_writes.values == 0).all()
    for v in ("h", "nvar_poisson", "nvar_iid", "var_init_coef"):
        assert ds[v].dims == ("time", "probe") and np.isfinite(ds[v].values).all()
    for v in ("risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef"):
        assert ds[v].dims == ("time",)
    assert ds.f.dims == ds.pi_probe.dims == ("probe",)
    assert ds.probe_window.dims == ("probe", "lag") and ds.probe_window.values.tolist() == e.probes.tolist()
    assert ds.width.values.tolist() == list(e.replicas.widths) and ds.data.values.tolist() == list(range(R))
    assert ds.probe.values.tolist() == e.probe_labels() and ds.block.values.tolist() == [0, 1]
    pred = e.predictions()
    np.testing.assert_array_equal(ds.h.values, pred.h.values)
    np.testing.assert_array_equal(ds.nvar_poisson.values, pred.nvar_poisson.values)
    for k in ("spec", "spec_hash", "seed", "beta", "alpha", "T", "L", "block", "memory_bound", "kernel_error",
              "distntk_version", "ray_version", "numpy_version", "zarr_version", "created", "updated",
              "title", "history", "source"):
        assert k in ds.attrs, k
    assert ds.attrs["spec"] == spec.text and ds.attrs["spec_hash"] == spec.hash and ds.attrs["seed"] == 7
    assert ds.attrs["created"].endswith("Z") and "pytest" in ds.attrs["history"]
    # one unit = one chunk region of every per-replica array, one element of every per-unit array
    g = zarr.open_group(str(path), mode="r")
    assert g["output"].chunks == (1, 1, e.replicas.block, nt, P)
    assert g["risk"].chunks == (1, 1, e.replicas.block, nt)
    per_unit = {3: ["unit"], 2: ["unit"], 1: ["unit_node", "unit_wall_time", "unit_writes"]}[schema]
    assert sorted(k for k in g.array_keys() if k.startswith("unit")) == per_unit
    # schema 3: one chunk holds every record of a width (at least 1,024 records where a width has more)
    assert all(g[k].chunks == ((1, I, nb) if schema == 3 else (1, 1, 1)) for k in per_unit)
    assert ("done" in g) == (schema == 1) and (schema >= 2 or g["done"].chunks == (1, 1, e.replicas.block))


@pytest.mark.parametrize("schema", [3, 2, 1])
def test_write_unit_and_pending(spec, tmp_path, schema):
    path = tmp_path / "s.zarr"
    rs = create_store(path, spec, spec.experiment.predictions(), schema=schema)
    e = spec.experiment
    units = e.units()
    assert rs.pending(units) == units
    u = units[1]  # the short last block: data 4..6 of a block of 4
    assert (u.data_start, u.data_stop) == (4, 6)
    res = e.compute(u)
    rs.write_unit(u, res, 0.25, "node-a")
    assert rs.pending(units) == [v for v in units if v != u]
    ds = open_store(path)
    np.testing.assert_array_equal(ds.output.values[0, 0, 4:6], res["output"])
    np.testing.assert_array_equal(ds.risk.values[0, 0, 4:6], res["risk"])
    assert ds.done.values[0, 0].tolist() == [False] * 4 + [True] * 2
    assert ds.unit_writes.values[0, 0].tolist() == [0, 1]
    assert ds.unit_node.values[0, 0, 1] == "node-a" and ds.unit_wall_time.values[0, 0, 1] == 0.25
    assert np.isnan(ds.output.values[0, 0, :4]).all()  # neighbours untouched
    rs2 = open_result_store(path)  # reopened: the write counter goes on from the store
    rs2.write_unit(u, res, 0.5, "node-b")
    ds = open_store(path)
    assert ds.unit_writes.values[0, 0].tolist() == [0, 2] and ds.unit_node.values[0, 0, 1] == "node-b"
    assert rs2.done_mask()[0, 0].tolist() == [False] * 4 + [True] * 2
    if schema >= 2:  # the record: a JSON object written after the data
        g = zarr.open_group(str(path), mode="r")
        def blake(key, v):  # the digest's definition (store.chunk_digest), written out
            v = np.ascontiguousarray(v, dtype=np.float64)
            return hashlib.blake2b(f"{key}|<f8|{v.shape}|".encode() + v.tobytes(), digest_size=16).hexdigest()

        assert json.loads(str(g["unit"][0, 0, 1])) == {
            "writes": 2, "wall_time": 0.5, "node": "node-b",
            "digest": {"output": blake("output/0.0.1.0.0", res["output"]), "risk": blake("risk/0.0.1.0", res["risk"])},
            **({"writer": "driver"} if schema == 3 else {})}
        assert str(g["unit"][0, 0, 0]) == ""
        # open_store reads no record until a variable is loaded: a record removed after the open reads as not done
        lazy = open_store(path)
        (path / "unit" / ("c.0.0.0" if schema == 3 else "c.0.0.1")).unlink()
        assert not lazy.done.values.any() and lazy.unit_writes.values[0, 0].tolist() == [0, 0]


def test_reopen_same_spec_and_refuse_a_different_one(spec, tmp_path):
    path = tmp_path / "s.zarr"
    create_store(path, spec, spec.experiment.predictions())
    assert open_or_create(path, spec, spec.experiment.predictions).attrs["spec_hash"] == spec.hash
    other = load_spec(tiny_spec(tmp_path / "other.toml", n_data=6, block=4, beta=0.7, widths=(16, 64)))
    with pytest.raises(StoreError, match=r"^spec differs from the store's in keys: model.beta, replicas.widths"):
        open_or_create(path, other, other.experiment.predictions)


def test_memory_url_goes_through_the_same_path(spec):
    url = f"memory://distntk-test/{uuid.uuid4().hex}/s.zarr"
    rs = open_or_create(url, spec, spec.experiment.predictions)
    u = spec.experiment.units()[0]
    rs.write_unit(u, spec.experiment.compute(u), 1.0, "n")
    ds = open_store(url)
    assert int(ds.done.values.sum()) == u.data_stop - u.data_start
    assert open_or_create(url, spec, spec.experiment.predictions).pending([u]) == []


def test_errors_are_one_line(spec, tmp_path):
    with pytest.raises(StoreError, match="^no distntk store at"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="a file is in the way"):
        open_or_create(tmp_path / "file", spec, spec.experiment.predictions)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        open_or_create(tmp_path / "busy", spec, spec.experiment.predictions)
    with pytest.raises(StoreError, match="^cannot create store at /proc/"):
        open_or_create("/proc/distntk-test.zarr", spec, spec.experiment.predictions)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="without distntk attributes"):
        open_result_store(tmp_path / "plain.zarr")


def test_store_spec_rebuilds_the_experiment(spec, tmp_path):
    create_store(tmp_path / "s.zarr", spec, spec.experiment.predictions())
    ds = open_store(tmp_path / "s.zarr")
    again = store_spec(ds)
    assert again.hash == spec.hash and again.name == spec.name == "tiny"
    assert again.experiment.units() == spec.experiment.units()
    assert again.experiment.probe_labels() == [str(p) for p in ds.probe.values]
    ds.attrs["spec"] = ds.attrs["spec"].replace("seed = 7", "seed = 8")
    with pytest.raises(StoreError, match=r"^the spec stored in 'tiny' now hashes to \w{12}, not the store's"):
        store_spec(ds)
    ds.attrs["spec"] = "seed = ["
    with pytest.raises(StoreError, match="^the spec stored in 'tiny' no longer parses: spec of store 'tiny': invalid"):
        store_spec(ds)
    del ds.attrs["spec"]
    with pytest.raises(StoreError, match="has no spec attributes"):
        store_spec(ds)


def test_schema3_records_in_large_chunks(tmp_path):
    """Schema 3: a width of 64 inits x 32 blocks keeps its 2,048 records in two chunks of 32 inits (1,024
    records each), rewritten whole; a chunk that does not decode makes every unit it holds not done (computed
    again), and the commit after them rewrites it whole with the others' records empty."""
    sp = load_spec(tiny_spec(tmp_path / "wide.toml", widths=(16,), n_init=64, n_data=32, block=1, T=0.25,
                             times=(0.25,)))
    path = tmp_path / "s.zarr"
    rs = create_store(path, sp, sp.experiment.predictions())
    g = zarr.open_group(str(path), mode="r")
    assert g["unit"].shape == (1, 64, 32) and g["unit"].chunks == (1, 32, 32)
    e = sp.experiment
    units = e.units()
    w = rs.writer()
    some = [u for u in units if u.init in (0, 40) and u.data_start < 2]  # two units in each record chunk
    for u in some:
        w.submit(u, e.compute(u), 0.1, "n")
    w.close()
    assert sorted(p.name for p in (path / "unit").iterdir() if p.name.startswith("c")) == ["c.0.0.0", "c.0.1.0"]
    assert sorted(rs.pending(units), key=units.index) == [u for u in units if u not in some]
    # damage the first record chunk: its two units are pending again, the other chunk's stay done
    f = path / "unit" / "c.0.0.0"
    f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    rs2 = open_result_store(path)
    pending = rs2.pending(units)
    assert [u for u in some if u in pending] == [u for u in some if u.init == 0]
    u = some[0]
    rs2.write_unit(u, e.compute(u), 0.2, "m")
    ds = open_store(path)
    assert ds.done.values[0, 0, :2].tolist() == [True, False] and ds.done.values[0, 40, :2].all()


def test_a_worker_writes_only_into_the_store_it_was_sent_to(spec, tmp_path):
    """write_chunks stores a unit's chunks and returns their digests; it refuses (one line, nothing written) a
    location holding another store or none; a unit whose chunks are stored but whose record was never
    committed (a driver killed in between) is not done, and rewriting it gives the same bytes."""
    from distntk.store import chunk_digest, write_chunks

    path = tmp_path / "s.zarr"
    rs = create_store(path, spec, spec.experiment.predictions())
    e = spec.experiment
    u = e.units()[0]
    res = e.compute(u)
    target = rs.chunk_target()
    assert target.store_id == rs.attrs["store_id"] and len(target.store_id) == 32
    [digest] = write_chunks(target, [(u, res)])
    assert digest == {"output": chunk_digest("output/0.0.0.0.0", res["output"]),
                      "risk": chunk_digest("risk/0.0.0.0", res["risk"])}
    ds = open_store(path)
    np.testing.assert_array_equal(ds.output.values[0, 0, :4], res["output"])
    assert rs.pending(e.units())[0] == u  # no record: not done
    before = (path / "output" / "c.0.0.0.0.0").read_bytes()
    assert write_chunks(target, [(u, res)]) == [digest] and (path / "output" / "c.0.0.0.0.0").read_bytes() == before
    w = rs.writer()
    w.commit(u, 0.1, "worker-node", digest)
    w.close()
    assert u not in rs.pending(e.units())
    assert json.loads(str(zarr.open_group(str(path), mode="r")["unit"][0, 0, 0]))["writer"] == "worker"
    # another store at the same path (another filesystem), and no store at all: refused, nothing written
    other = create_store(tmp_path / "t.zarr", spec, spec.experiment.predictions())
    import dataclasses

    wrong = dataclasses.replace(other.chunk_target(), store_id=rs.attrs["store_id"])
    [why] = write_chunks(wrong, [(u, res)])
    assert isinstance(why, str) and "store_id" in why and not (tmp_path / "t.zarr" / "output" / "c.0.0.0.0.0").exists()
    gone = dataclasses.replace(target, path=str(tmp_path / "nowhere.zarr"))
    [why] = write_chunks(gone, [(u, res)])
    assert isinstance(why, str) and "no store at" in why and not (tmp_path / "nowhere.zarr").exists()
    assert create_store(tmp_path / "old.zarr", spec, spec.experiment.predictions(), schema=2).chunk_target() is None


def test_records_are_committed_in_few_chunk_writes(tmp_path):
    """600 receipts committed one by one (the driver's flush after each drained batch): the records reach the
    store in at most 600 / 100 chunk writes (one per 256 units waiting, or per 2 s), every unit done after
    close, and no unit reported complete before its record chunk is stored."""
    from distntk.store import write_chunks

    sp = load_spec(tiny_spec(tmp_path / "many.toml", widths=(16,), n_init=600, n_data=4, block=4, T=0.25,
                             times=(0.25,)))
    e = sp.experiment
    rs = create_store(tmp_path / "s.zarr", sp, e.predictions())
    units = e.units()
    result = e.compute(units[0])
    receipts = write_chunks(rs.chunk_target(), [(u, result) for u in units])
    w = rs.writer()
    done = []
    for u, digest in zip(units, receipts, strict=True):
        w.commit(u, 0.001, "n", digest)
        w.flush()
        done += w.completed()
    assert len(done) < len(units)  # some still wait for their record chunk
    w.close()
    done += w.completed()
    assert sorted(done, key=units.index) == units and len(set(done)) == len(units)
    assert 2 <= w.record_writes <= len(units) // 100
    assert rs.pending(units) == [] and open_store(tmp_path / "s.zarr").done.values.all()


def test_a_worker_whose_writes_keep_failing_hands_the_result_to_the_driver(spec, tmp_path, monkeypatch):
    """Storage errors on a worker are retried (here with short delays), then the unit's receipt carries its
    result and one line saying why, and the driver's writer stores it: the unit is not lost."""
    import shutil

    from distntk.driver import _Compute
    from distntk.store import writer

    monkeypatch.setattr(writer, "_WORKER_RETRY_DELAYS", (0.01, 0.01))
    path = tmp_path / "s.zarr"
    rs = create_store(path, spec, spec.experiment.predictions())
    e = spec.experiment
    u, u2 = e.units()[:2]
    work = _Compute([e], [rs.chunk_target()])
    [(unit, receipt, wall)] = work((0, (u,)))  # opens the arrays in this "worker" and writes: fine
    assert unit == u and set(receipt) == {"digest"} and wall > 0
    shutil.copytree(path / "risk", tmp_path / "risk-kept")
    shutil.rmtree(path / "risk")
    (path / "risk").write_text("not a directory")  # every write of a risk chunk now fails (root included)
    [(unit, receipt, wall)] = work((0, (u2,)))
    assert unit == u2 and set(receipt) == {"result", "why"} and "after 2 retries" in receipt["why"]
    (path / "risk").unlink()
    shutil.copytree(tmp_path / "risk-kept", path / "risk")
    with rs.writer() as w:  # the driver's path, as driver.run takes it for such a receipt
        w.commit(u, 0.1, "n", {"output": chunk_digest("output/0.0.0.0.0", e.compute(u)["output"]),
                               "risk": chunk_digest("risk/0.0.0.0", e.compute(u)["risk"])})
        w.submit(u2, receipt["result"], wall, "n")
    assert rs.pending(e.units(), check=True) == e.units()[2:]


def _counted_probes(monkeypatch) -> list:
    """The locations :func:`distntk.store.locations.probe_write` probes from now on (each a write and a delete:
    one PUT and one DELETE on object storage), the probes made as before."""
    from distntk.store import locations

    probes, real = [], locations.probe_write

    def counted(path, storage_options=None):
        probes.append(str(path))
        real(path, storage_options)

    monkeypatch.setattr(locations, "probe_write", counted)
    return probes


def test_a_new_store_is_probed_once(spec, tmp_path, monkeypatch):
    """A new store's location is checked for existence and writability once: ``distntk run``'s early
    ``check_location``, then ``open_or_create(checked=True)`` under the lease, probes once; ``open_or_create``
    or ``create_store`` alone probes once too; an existing store is not probed."""
    from distntk.store import PROBE, check_location

    probes = _counted_probes(monkeypatch)
    path = tmp_path / "new.zarr"
    assert check_location(path) is False
    rs = open_or_create(path, spec, spec.experiment.predictions, checked=True)
    assert probes == [str(path)] and not (path / PROBE).exists() and rs.pending(spec.experiment.units())
    assert check_location(path) is True
    open_or_create(path, spec, spec.experiment.predictions)  # resumed
    assert probes == [str(path)]
    probes.clear()
    open_or_create(tmp_path / "b.zarr", spec, spec.experiment.predictions)
    create_store(tmp_path / "c.zarr", spec, spec.experiment.predictions())
    assert probes == [str(tmp_path / "b.zarr"), str(tmp_path / "c.zarr")]
    with pytest.raises(StoreError, match="a store is already there"):  # refused before any probe
        create_store(tmp_path / "c.zarr", spec, spec.experiment.predictions())
    assert len(probes) == 2


def test_done_units_is_the_one_answer(spec, tmp_path):
    """Which units are done: the records (schemas 2, 3) or ``done`` (schema 1) through ``done_units``, the same
    for a resume's plan, the store's Dataset, the query's progress and ``missing_units``."""
    from distntk import missing_units
    from distntk.rows import progress
    from distntk.store import done_units

    e = spec.experiment
    units = e.units()
    for schema in (3, 2, 1):
        path = tmp_path / f"s{schema}.zarr"
        rs = create_store(path, spec, e.predictions(), schema=schema)
        for u in units[1::3]:
            rs.write_unit(u, e.compute(u), 0.5, "n")
        want = [u for k, u in enumerate(units) if k % 3 != 1]
        assert rs.pending(units) == want and missing_units(open_store(path)) == want
        finished = done_units(open_store(path))
        assert finished.shape == (len(e.replicas.widths), e.replicas.n_init, 2)
        assert int(finished.sum()) == len(units) - len(want)
        assert (finished == done_units(rs.done_mask(), e.replicas.block)).all()
        assert [p["units_done"] for p in progress(open_store(path))] == finished.sum(axis=(1, 2)).tolist()
    edge = np.ones((1, 1, 5), dtype=bool)
    edge[0, 0, 4] = False  # the short last block (data 4) is not done, the first (0-3) is
    assert done_units(edge, 4).tolist() == [[[True, False]]]
