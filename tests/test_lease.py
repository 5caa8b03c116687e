"""One driver per store (distntk/lease.py), on a local path and on s3:// (the moto server on loopback).

The cases of issue 9, item 2: a live lease refuses a second driver at once with
one line naming the holder; a stale lease (holder dead, or no heartbeat for
longer than STALE_AFTER_S) is taken over; of drivers starting on one new store
at the same instant exactly one proceeds, the other gets one line.  And the
writer's retry: a store that drops every connection for a few seconds (the
latency proxy) loses nothing and marks nothing done without its data.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from latency_proxy import latency_proxy
from raytools import cleanup, new_mark, scoped_env, short_tmp, tiny_spec

from distntk import open_store
from distntk.cli import main
from distntk.lease import STALE_AFTER_S, LeaseError, acquire
from distntk.spec import load_spec
from distntk.store import open_or_create

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """``(store location, storage options, read(), write(dict))`` of the lease object, local or on s3://."""
    if request.param == "local":
        path = str(tmp_path / "stores" / "x.zarr")
        key = path + ".lease.json"

        def read():
            with open(key) as f:
                return json.load(f)

        def write(d):
            with open(key, "w") as f:
                json.dump(d, f)

        return path, None, read, write
    bucket = request.getfixturevalue("s3_bucket")
    fs = bucket.filesystem()
    key = f"{bucket.name}/stores/x.zarr.lease.json"
    return (bucket.url("stores/x.zarr"), bucket.storage_options(), lambda: json.loads(fs.cat_file(key)),
            lambda d: fs.pipe_file(key, json.dumps(d).encode()))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_live_lease_refused_then_released(where):
    path, opts, read, _write = where
    held = acquire(path, opts, heartbeat=False)
    assert held.taken_over is None
    d = read()
    assert d["host"] == socket.gethostname() and d["pid"] == os.getpid() and abs(d["heartbeat"] - time.time()) < 60
    with pytest.raises(LeaseError, match=rf"^store {path} is in use by distntk run on host {d['host']} "
                                         rf"\(pid {os.getpid()}\), started .* last heartbeat \d+ s ago"):
        acquire(path, opts, heartbeat=False)
    held.release()
    with pytest.raises(FileNotFoundError):
        read()
    acquire(path, opts, heartbeat=False).release()  # free again


@pytest.mark.parametrize("how", ["dead-holder", "no-heartbeat", "fresh-other-host"])
def test_stale_lease_taken_over_live_one_kept(where, how):
    path, opts, read, write = where
    first = acquire(path, opts, heartbeat=False)
    d = read()
    if how == "dead-holder":  # same host, its process gone: stale at once, whatever the heartbeat
        d.update(pid=_dead_pid(), pid_start="")
    elif how == "no-heartbeat":  # another host, silent for longer than the timeout
        d.update(host="elsewhere.example", heartbeat=time.time() - STALE_AFTER_S - 5)
    else:  # another host, heartbeat 5 s ago: live
        d.update(host="elsewhere.example", heartbeat=time.time() - 5)
    write(d)
    del first  # its token no longer matches: it must not delete the new holder's lease
    if how == "fresh-other-host":
        with pytest.raises(LeaseError, match="in use by distntk run on host elsewhere.example"):
            acquire(path, opts, heartbeat=False)
        return
    lease = acquire(path, opts, heartbeat=False)
    why = "its process is gone" if how == "dead-holder" else "no heartbeat for"
    assert why in lease.taken_over and str(d["pid"]) in lease.taken_over
    assert read()["token"] == lease.data["token"]
    lease.release()


def test_concurrent_acquire_exactly_one_wins(where):
    path, opts, _read, _write = where
    n = 6
    barrier, got = threading.Barrier(n), []

    def go():
        barrier.wait()
        try:
            got.append(acquire(path, opts, heartbeat=False))
        except LeaseError as exc:
            got.append(str(exc))

    threads = [threading.Thread(target=go) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [g for g in got if not isinstance(g, str)]
    assert len(got) == n and len(winners) == 1, got
    assert all("is in use by" in g for g in got if isinstance(g, str))
    winners[0].release()


def test_heartbeat_notices_a_takeover(tmp_path, monkeypatch):
    import distntk.lease as lease_mod

    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.1)
    path = str(tmp_path / "s.zarr")
    lease = acquire(path)
    d = json.loads(open(path + ".lease.json").read())
    d["token"] = "someone-else"
    open(path + ".lease.json", "w").write(json.dumps(d))
    deadline = time.time() + 60
    while lease._lost is None and time.time() < deadline:  # wait for the condition, not a fixed time
        time.sleep(0.05)
    with pytest.raises(LeaseError, match="was taken over by"):
        lease.check()
    lease.release()
    assert json.loads(open(path + ".lease.json").read())["token"] == "someone-else"  # not removed: not ours


def test_cli_refuses_a_held_store_in_one_line(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "t.toml")
    store = str(tmp_path / "held.zarr")
    with acquire(store, heartbeat=False):
        t0 = time.perf_counter()
        assert main(["run", str(spec), "--store", store, "--no-progress"]) == 2
        assert time.perf_counter() - t0 < 30  # at once: before any limit solve or Ray start
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"distntk: error: store {store} is in use by distntk run on host "
                                                   f"{socket.gethostname()} (pid {os.getpid()})"), err


def test_two_drivers_on_one_new_store_at_the_same_instant(tmp_path):
    """Two `distntk run` processes start on one new store at the same instant: one runs, one gets one line."""
    spec = tiny_spec(tmp_path / "t.toml", widths=(16,), n_init=2, n_data=4, block=2)
    store = str(tmp_path / "race.zarr")
    mark, temp = new_mark(), short_tmp("dnrace")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    at = time.time() + 8  # both are imported and waiting by then, even on a loaded machine
    code = ("import sys, time; from distntk.cli import main; at = float(sys.argv[1]); "
            "time.sleep(max(0.0, at - time.time())); sys.exit(main(sys.argv[2:]))")
    cmd = [sys.executable, "-c", code, str(at), "run", str(spec), "--store", store, "--no-progress", "--actors", "1"]
    try:
        procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        assert cleanup(mark, temp) == []
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)][1]
    lines = [ln for ln in loser.splitlines() if ln.startswith("distntk: error:")]
    assert len(lines) == 1 and "is in use by distntk run on host" in lines[0], loser
    assert "Traceback" not in loser and "mode 'w-'" not in loser
    winner = outs[[p.returncode for p in procs].index(0)][1]
    assert "distntk run: starting Ray (an embedded local Ray) ..." in winner
    assert "Token authentication is enabled" not in winner  # Ray's notice, silenced for the embedded Ray
    ds = open_store(store)
    assert ds.done.values.all() and (ds.unit_writes.values == 1).all()


def test_writes_survive_a_store_that_drops_connections(s3_bucket, tmp_path):
    """The proxy drops every connection for 6 s in mid-write: retried, nothing lost, no done without data."""
    spec = load_spec(tiny_spec(tmp_path / "drop.toml", widths=(16,), n_init=24, n_data=4, block=2))
    e = spec.experiment
    units = e.units()
    results = {u: e.compute(u) for u in units}
    port = int(s3_bucket.server.endpoint_url.rsplit(":", 1)[1])
    with latency_proxy(port, 0.02, drop_seconds=6.0) as proxy:  # longer than s3fs's own retries (~2 s)
        opts = {**s3_bucket.storage_options(), "endpoint_url": proxy.endpoint_url,
                "config_kwargs": {"retries": {"max_attempts": 1}}}  # botocore: no retry
        url = s3_bucket.url("stores/drop.zarr")
        rs = open_or_create(url, spec, e.predictions, opts)
        with rs.writer(max_pending=8) as w:
            for k, u in enumerate(units):
                w.submit(u, results[u], 0.5, "n")
                if k % 4 == 3:
                    w.flush()
                if k == len(units) // 3:
                    proxy.drop()
            w.close()
            assert len(w.completed()) == len(units)
            retries = w.retries
            # backpressure: flush() waits while more than max_pending are unwritten, so at most one batch more
            assert w.peak_pending <= 8 + 4
    assert retries >= 1  # the drop was seen, and survived
    ds = open_store(url, s3_bucket.storage_options()).load()
    assert ds.done.values.all()
    for u in units:
        np.testing.assert_array_equal(ds.output.values[0, u.init, u.data_start:u.data_stop], results[u]["output"])
    assert set(np.unique(ds.unit_writes.values)) == {1}
