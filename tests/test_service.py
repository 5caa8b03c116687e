"""The Ray layer on a real embedded Ray: end to end bit for bit, resume in-process, actor failures."""

import os

import numpy as np
import pytest
import ray
from raytools import cleanup, new_mark, short_tmp, tiny_spec

from distntk import open_store
from distntk.driver import run
from distntk.service import ACTOR_PREFIX, UnitFailed, run_units
from distntk.spec import load_spec
from distntk.store import StoreError

pytestmark = pytest.mark.timeout(420)  # generous: the suite must pass on a loaded machine


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One embedded 2-CPU Ray for this module, with its own HOME (token file) and temp root."""
    home = tmp_path_factory.mktemp("home")
    mark = new_mark()
    saved = {k: os.environ.get(k) for k in ("HOME", "DISTNTK_TEST_MARK", "RAY_ADDRESS", "PYTHONPATH")}
    # workers inherit this environment: the marker, and this directory for the test-local unit functions
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ.update(HOME=str(home), DISTNTK_TEST_MARK=mark,
                      PYTHONPATH=os.pathsep.join(p for p in (here, saved["PYTHONPATH"]) if p))
    os.environ.pop("RAY_ADDRESS", None)
    temp = short_tmp("dnsvc")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert cleanup(mark, temp) == []


def _assert_store_equals_in_process(path, spec):
    """Every replica's bits equal an in-process ``Experiment.compute``; every unit written once."""
    ds = open_store(path)
    e = spec.experiment
    assert ds.done.values.all()
    assert (ds.unit_writes.values == 1).all()
    for u in e.units():
        ref = e.compute(u)
        wi = list(e.replicas.widths).index(u.width)
        sl = slice(u.data_start, u.data_stop)
        np.testing.assert_array_equal(ds.output.values[wi, u.init, sl], ref["output"], strict=True)
        np.testing.assert_array_equal(ds.risk.values[wi, u.init, sl], ref["risk"], strict=True)
    return ds


def test_end_to_end_bit_for_bit(local_ray, tmp_path):
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    path = str(tmp_path / "s.zarr")
    rep = run(spec, path, actors=2, progress=False)
    assert rep.computed == rep.total == len(spec.experiment.units()) == 8
    ds = _assert_store_equals_in_process(path, spec)
    assert np.isfinite(ds.unit_wall_time.values).all() and (ds.unit_wall_time.values > 0).all()
    node = ray.get_runtime_context().get_node_id()
    assert set(ds.unit_node.values.ravel()) == {node}
    assert rep.summary.nodes == {node: 8} and rep.summary.actors == 2
    # the workers wrote every chunk (their receipts' digests are in the records); the driver wrote the records,
    # in whole chunks: one object per width (schema 3), not one per unit
    import json

    import zarr

    recs = zarr.open_group(path, mode="r")["unit"][...]
    assert {json.loads(str(r))["writer"] for r in recs.ravel()} == {"worker"}
    assert sorted(f.name for f in (tmp_path / "s.zarr" / "unit").iterdir() if f.name != "zarr.json") == \
        ["c.0.0.0", "c.1.0.0"]
    # rerun: nothing left to do, nothing rewritten
    again = run(spec, path, actors=2, progress=False)
    assert again.computed == 0 and again.skipped == 8
    assert (open_store(path).unit_writes.values == 1).all()
    # a different spec on this store is refused, naming the keys
    other = load_spec(tiny_spec(tmp_path / "other.toml", seed=8, n_init=3))
    with pytest.raises(StoreError, match=r"in keys: replicas.n_init, seed \("):
        run(other, path, progress=False)


def test_sampled_limit_segments_run_on_actors_bit_for_bit(local_ray, tmp_path):
    """A spec with the infinite-past limit (limit.memory = "sampled"): the driver computes the path
    segments on Ray actors; the stored predictions and their standard errors equal the in-process
    ones bit for bit, on 1 and on 2 actors (the segments are keyed by their index, not by who runs them)."""
    text = tiny_spec(tmp_path / "tiny.toml", widths=(16,), n_data=4).read_text()
    limit = '[limit]\nmemory = "sampled"\nl0 = 3\nsegments = 4\nsegment_steps = 512\n\n'
    text = text.replace("[replicas]", limit + "[replicas]")
    (tmp_path / "lm.toml").write_text(text)
    spec = load_spec(tmp_path / "lm.toml")
    assert spec.experiment.limit.memory == "sampled"
    ref = spec.experiment.predictions()
    for actors in (1, 2):
        path = str(tmp_path / f"lm{actors}.zarr")
        run(spec, path, actors=actors, progress=False)
        ds = open_store(path)
        for name in ("h", "h_se", "nvar_poisson", "nvar_poisson_se", "var_init_coef_se", "nvar_risk_poisson_se"):
            np.testing.assert_array_equal(ds[name].values, ref[name].values, strict=True)
        assert ds.attrs["memory_method"] == "sampled" and ds.attrs["memory_segments"] == 4
        assert (ds.nvar_poisson_se.values > 0).all()


def test_a_run_probes_a_new_store_once(local_ray, tmp_path, monkeypatch):
    """``distntk run`` into a new local store writes and removes its probe object once (a PUT and a DELETE on
    object storage): the check before the lease; the creation under the lease does not probe again."""
    from distntk.store import locations

    probes, real = [], locations.probe_write
    monkeypatch.setattr(locations, "probe_write", lambda path, opts=None: (probes.append(str(path)), real(path, opts)))
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml", widths=(16,), n_init=1, n_data=4, block=4))
    path = str(tmp_path / "s.zarr")
    assert run(spec, path, actors=1, progress=False).computed == 1
    assert probes == [path]
    assert run(spec, path, actors=1, progress=False).computed == 0 and probes == [path]  # resumed: no probe


def test_resume_in_process_computes_only_missing_units(local_ray, tmp_path):
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    path = str(tmp_path / "s.zarr")
    units = spec.experiment.units()
    # a partial store: half the units written by hand
    from distntk.store import open_or_create

    rs = open_or_create(path, spec, spec.experiment.predictions)
    for u in units[::2]:
        rs.write_unit(u, spec.experiment.compute(u), 123.0, "by-hand")
    rep = run(spec, path, actors=2, progress=False)
    assert rep.skipped == 4 and rep.computed == 4
    ds = _assert_store_equals_in_process(path, spec)
    walls = ds.unit_wall_time.values.ravel()
    nodes = ds.unit_node.values.ravel()
    assert (walls[::2] == 123.0).all() and (nodes[::2] == "by-hand").all()
    assert (walls[1::2] != 123.0).all() and "by-hand" not in set(nodes[1::2])


@pytest.mark.parametrize("no_restart", [True, False], ids=["killed-for-good", "killed-and-restarted"])
def test_actor_killed_mid_run(local_ray, tmp_path, no_restart):
    """An actor killed while it holds calls: its units (some of whose chunks it may have written already, with no
    record) are computed again on the other actor or its restart, every unit is delivered once, the store holds
    the in-process bits and every record says one write.

    The kill comes from a watcher thread as soon as the workers have stored a few output chunks (the driver's
    records, and with them ``on_unit``, follow up to 2 s later), so it lands while the run is under way."""
    import threading
    import time

    spec = load_spec(tiny_spec(tmp_path / "tiny.toml", widths=(64, 128), n_init=4, n_data=16, block=2))
    path = tmp_path / "s.zarr"
    delivered, killed, stop = [], [], threading.Event()

    def watch():
        while not stop.is_set():
            if (path / "output").is_dir() and sum(1 for _ in (path / "output").glob("c.*")) >= 4:
                try:
                    ray.kill(ray.get_actor(f"{ACTOR_PREFIX}-1"), no_restart=no_restart)
                    killed.append(1)
                except ValueError:  # pragma: no cover - the pool is gone: the run ended first
                    pass
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rep = run(spec, str(path), actors=2, progress=False, on_unit=lambda u, info: delivered.append(u))
    finally:
        stop.set()
        watcher.join()
    assert killed, "the run ended before the watcher saw four chunks"
    n = len(spec.experiment.units())
    assert rep.computed == n and len(delivered) == n and len(set(delivered)) == n
    if no_restart:
        assert rep.summary.retried >= 1  # its calls went back to the queue, on the other actor
    _assert_store_equals_in_process(str(path), spec)


def _boom(unit):
    if unit == 3:
        raise ValueError("unit three is broken")
    return unit * 2


def test_a_failing_unit_stops_the_run_after_delivering_the_others(local_ray):
    got = {}
    with pytest.raises(UnitFailed, match="unit 3 failed: ValueError: unit three is broken"):
        for batch in run_units(_boom, range(6), actors=1, in_flight=1, progress=False):
            got.update((u, r) for u, r, _ in batch)
    assert got == {0: 0, 1: 2, 2: 4}


def _stamp(unit):
    import time

    t = time.time()
    time.sleep(0.05)
    return t


def test_in_flight_is_bounded_per_actor(local_ray):
    """Unit j (submitted in order) cannot start before j - actors * in_flight + 1 results were delivered."""
    import time

    starts, delivered = {}, []

    run = run_units(_stamp, list(range(24)), actors=2, in_flight=2, progress=False)
    for batch in run:
        for u, t, _ in batch:
            starts[u] = t
            delivered.append(time.time())
    summary = run.summary
    assert sorted(starts) == list(range(24)) and summary.units == 24 and summary.actors == 2
    slots = 2 * 2
    for j in range(slots, 24):
        assert starts[j] >= delivered[j - slots] - 1e-3, j


def test_calls_hold_about_a_second_of_work_and_short_calls_keep_more_in_flight():
    """The driver's plan: a call holds at most UNITS_PER_CALL units and CALL_SECONDS of estimated compute
    (one unit at least), units of one store only, every unit once in order; calls of milliseconds keep up
    to MAX_IN_FLIGHT in flight per actor (a store's latency hidden behind the others), calls of a second
    or more keep 2 (little queued on a slow actor)."""
    from distntk.driver import CALL_SECONDS, MAX_IN_FLIGHT, UNITS_PER_CALL, _calls, _in_flight

    todo = [(k, (k, j)) for k in (0, 1) for j in range(400)]
    cost = {0: 0.3, 1: 1e-4}  # seconds per unit: store 0 slow, store 1 fast
    calls, median = _calls(todo, 2, lambda k, unit: cost[k])
    assert [(k, u) for k, us in calls for u in us] == todo
    assert all(all(u[0] == k for u in us) for k, us in calls)
    assert max(len(us) for k, us in calls if k == 0) == int(CALL_SECONDS / 0.3)
    assert max(len(us) for k, us in calls if k == 1) == UNITS_PER_CALL
    assert _in_flight(median) in range(2, MAX_IN_FLIGHT + 1)
    assert _calls([(0, u) for u in range(5)], 1, lambda k, unit: 7.0)[0] == [(0, (u,)) for u in range(5)]
    assert _in_flight(16 * 1e-4) == MAX_IN_FLIGHT and _in_flight(1.0) == 2 and _in_flight(7.0) == 2
    assert len(_calls([(0, u) for u in range(40)], 2, lambda k, unit: 0.0)[0]) >= 16  # >= 8 calls per actor
