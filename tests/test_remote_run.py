"""Remote stores end to end: ``distntk run`` and ``query`` on ``s3://`` against the loopback moto server.

Covers issue 6, item 4: a run killed with SIGKILL mid-way and resumed (done units
not recomputed, values equal to an uninterrupted computation), a query, the
one-line errors (missing bucket, unreachable endpoint, missing s3fs, bad
``--storage-option``), and the write pattern on object storage: one whole-object
PUT per chunk of the unit, never a read of a chunk, data before ``done``.

The resume run gets the server only through ``--storage-option`` flags, with no
``AWS_*`` variables in its environment, which its Ray workers inherit: were a
worker to open the store it would look for real AWS and fail the run.  Only the
driver touches the store.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
import zarr.storage
from latency_proxy import latency_proxy
from raytools import cleanup, done_units, free_port, new_mark, scoped_env, short_tmp, sigkill_when, tiny_spec

from distntk import open_store
from distntk.cli import main
from distntk.experiment import Experiment
from distntk.spec import load_spec
from distntk.store import StoreError, create_store

pytestmark = pytest.mark.timeout(420)  # generous: the suite must pass on a loaded machine


def _flags(server) -> list[str]:
    opts = server.storage_options()
    return ["--storage-option", f"endpoint_url={opts['endpoint_url']}", "--storage-option", f"key={opts['key']}",
            f"--storage-option=secret={opts['secret']}",
            "--storage-option", "client_kwargs=" + json.dumps(opts["client_kwargs"])]


def _without_aws(env: dict) -> dict:
    """``env`` with no way to reach any S3 (the test server included) except explicit storage options."""
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return env


def test_run_sigkill_resume_and_query_on_s3(s3_bucket, tmp_path, capsys):
    # 32 units of 0.1-0.2 s each on the reference kernel (test_resume.py has 48)
    spec_path = tiny_spec(tmp_path / "remote.toml", widths=(768, 1536), T=2.0, times=(1.0, 2.0), n_init=4,
                          n_data=8, block=2)
    spec_path.write_text(spec_path.read_text().replace('seed = 7', 'seed = 7\nkernel = "reference"'))
    e = load_spec(spec_path).experiment
    n_units = len(e.units())
    server, opts = s3_bucket.server, s3_bucket.storage_options()
    url = s3_bucket.url("stores/remote.zarr")
    mark, temp = new_mark(), short_tmp("dns3")
    env = server.subprocess_env(scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp))
    cmd = [sys.executable, "-m", "distntk", "run", str(spec_path), "--store", url, "--actors", "2", "--no-progress"]
    port = int(server.endpoint_url.rsplit(":", 1)[1])
    try:
        # 1. a run configured by the standard environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), killed mid-way,
        #    its store 50 ms away (tests/latency_proxy.py), so that batches of writes are in flight at the kill
        with latency_proxy(port, 0.05) as proxy:
            proc = subprocess.Popen(cmd, env={**env, "AWS_ENDPOINT_URL": proxy.endpoint_url}, cwd=tmp_path,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            sigkill_when(proc, lambda: done_units(url, e.replicas.block, opts) >= 6, "fewer than 6 units done",
                         timeout=240)
        before = open_store(url).load()
        done_before = before.done.values[:, :, :: e.replicas.block]  # (width, init, block)
        n_before = int(done_before.sum())
        assert 6 <= n_before < n_units, f"{n_before} of {n_units} units done at the kill; units too fast?"
        assert (before.unit_writes.values[done_before] == 1).all()
        # the killed driver's Ray agents (see test_resume.py): ended here, and none of that run may survive
        assert cleanup(mark) == []

        # 2. resume with the server given only as --storage-option flags: no AWS_* for the driver nor its workers
        rerun = subprocess.run(cmd + _flags(server), env=_without_aws(env), cwd=tmp_path, capture_output=True,
                               text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert f"{n_units - n_before} units" in rerun.stderr and f"{n_before} already done" in rerun.stderr
        assert "lease of " in rerun.stderr and "taken over from" in rerun.stderr  # the killed driver's, stale
    finally:
        cleanup(mark, temp)

    after = open_store(url).load()
    assert after.done.values.all()
    writes = after.unit_writes.values
    assert (writes[done_before] == 1).all()  # finished units were not recomputed
    np.testing.assert_array_equal(after.unit_wall_time.values[done_before], before.unit_wall_time.values[done_before])
    np.testing.assert_array_equal(after.unit_node.values[done_before], before.unit_node.values[done_before])
    # the others: once by the rerun, or twice if the kill fell between a unit's data and its flag
    assert set(np.unique(writes[~done_before])) <= {1, 2}
    for u in e.units():  # values identical to an uninterrupted computation, bit for bit
        wi = list(e.replicas.widths).index(u.width)
        ref = e.compute(u)
        np.testing.assert_array_equal(after.output.values[wi, u.init, u.data_start:u.data_stop], ref["output"])
        np.testing.assert_array_equal(after.risk.values[wi, u.init, u.data_start:u.data_stop], ref["risk"])
    # the history names both commands, without the secret
    history = after.attrs["history"]
    assert history.count("run: computed") == 1 and "--storage-option=secret=..." in history
    assert history.count("lease taken over from") == 1 and "(its process is gone)" in history
    assert server.secret not in history and "key=..." in history

    # 3. query: by the environment (set by the fixture), and by flags
    assert main(["query", url, "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [p["units_done"] for p in got["progress"]] == [n_units // 2] * 2
    assert {r["n"] for r in got["rows"]} == {e.replicas.n_init * e.replicas.n_data}
    assert all(r["mean"] is not None and r["nvar"] is not None for r in got["rows"])
    assert main(["query", url, "--width", "768", "--format", "csv"] + _flags(server)) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(e.times) * len(e.probes)


@pytest.fixture
def small(tmp_path):
    """A 3-unit spec whose last block is short (data 4..6 of a block of 4)."""
    return tiny_spec(tmp_path / "small.toml", widths=(16,), n_init=1, n_data=6, block=4)


def _one_line_error(capsys, start: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"distntk: error: {start}") and err.count("\n") == 1, err
    return err


def test_errors_are_one_line_exit_2(small, s3_bucket, monkeypatch, capsys):
    def solve(self):
        raise AssertionError("the limit was solved for a store that cannot be written")

    monkeypatch.setattr(Experiment, "predictions", solve)
    absent = s3_bucket.url("stores/absent.zarr").replace(s3_bucket.name, s3_bucket.name + "-absent")
    assert main(["run", str(small), "--store", absent]) == 2
    _one_line_error(capsys, f"cannot create store at {absent}: The specified bucket does not exist")

    assert main(["query", s3_bucket.url("stores/absent.zarr")]) == 2
    _one_line_error(capsys, f"no distntk store at {s3_bucket.url('stores/absent.zarr')}")

    # nothing listens there; one attempt (s3fs itself still retries briefly)
    t0 = time.perf_counter()
    unreachable = [f"endpoint_url=http://127.0.0.1:{free_port()}", 'config_kwargs={"retries": {"max_attempts": 1}}']
    assert main(["run", str(small), "--store", s3_bucket.url("u.zarr")]
                + [a for o in unreachable for a in ("--storage-option", o)]) == 2
    _one_line_error(capsys, f"cannot open store {s3_bucket.url('u.zarr')}: EndpointConnectionError: ")
    assert time.perf_counter() - t0 < 30

    assert main(["query", "stores/local.zarr", "--storage-option", "anon=true"]) == 2
    _one_line_error(capsys, "storage options apply to fsspec URLs")
    assert main(["query", s3_bucket.url("x.zarr"), "--storage-option", "anon"]) == 2
    _one_line_error(capsys, "--storage-option anon: expected KEY=VALUE")


def test_missing_backend_names_the_extra(small, tmp_path):
    """Without s3fs (gcsfs): one line naming ``pip install 'distntk[s3]'`` (``[gcs]``), exit 2, no traceback."""
    code = ("import sys; sys.modules['s3fs'] = sys.modules['gcsfs'] = None\n"
            "from distntk.cli import main\n"
            f"print(main(['run', {str(small)!r}, '--store', 's3://bucket/s.zarr']), file=sys.stderr)\n"
            "print(main(['query', 'gs://bucket/s.zarr']), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], env=_without_aws(dict(os.environ)), cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stderr.splitlines() == [
        "distntk: error: s3:// stores need s3fs, which is not installed: pip install 'distntk[s3]'", "2",
        "distntk: error: gs:// stores need gcsfs, which is not installed: pip install 'distntk[gcs]'", "2",
    ], out.stderr


class _Recorder(zarr.storage.WrapperStore):
    """Records every key read, written or deleted through it, in order."""

    def __init__(self, store, log):
        super().__init__(store)
        self.log = log

    def _with_store(self, store):
        return type(self)(store, self.log)

    async def get(self, key, *args, **kwargs):
        self.log.append(("get", key))
        return await super().get(key, *args, **kwargs)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        self.log.extend(("get", k) for k, _ in key_ranges)
        return await super().get_partial_values(prototype, key_ranges)

    async def set(self, key, value, *args, **kwargs):
        self.log.append(("set", key))
        return await super().set(key, value, *args, **kwargs)

    async def delete(self, key):
        self.log.append(("delete", key))
        return await super().delete(key)


def test_unit_writes_are_whole_object_puts_on_s3(small, s3_bucket):
    """Per unit: one PUT per chunk of that unit, no GET of any chunk, data -> the record chunk (done).

    Schema 3: the records of a width share one ``unit`` chunk, rewritten whole from the driver's copy (read
    once, when the first unit is written), so a batch of units costs one record PUT, not one per unit."""
    from distntk.store import ResultStore

    spec = load_spec(small)
    url = s3_bucket.url("stores/puts.zarr")
    create_store(url, spec, spec.experiment.predictions())
    log = []
    g = zarr.open_group(url, mode="r+", use_consolidated=False)
    rs = ResultStore(url, zarr.open_group(_Recorder(g.store, log), mode="r+", zarr_format=3, use_consolidated=False))
    e = spec.experiment
    first, edge = e.units()[0], e.units()[1]  # data 0..4, and the short last block 4..6
    rs.write_unit(first, e.compute(first), 0.5, "node-a")  # also reads the write counters once
    log.clear()
    rs.write_unit(edge, e.compute(edge), 0.25, "node-b")
    chunk_io = [(op, k) for op, k in log if "/c." in k]
    # the data concurrently (any order), then the record chunk (the unit's `done`) strictly after
    assert sorted(chunk_io[:2]) == [("set", "output/c.0.0.1.0.0"), ("set", "risk/c.0.0.1.0")]
    assert chunk_io[2:] == [("set", "unit/c.0.0.0")]
    assert not [k for op, k in log if op == "get" and "/c." in k]  # never a read of a chunk
    log.clear()
    with rs.writer() as w:  # the batched path: two units, still one PUT per chunk, no read, records last
        for u in (first, edge):
            w.submit(u, e.compute(u), 0.125, "node-c")
    chunk_io = [(op, k) for op, k in log if "/c." in k]
    assert len(chunk_io) == 5 and all(op == "set" for op, _ in chunk_io) and len(set(chunk_io)) == 5
    assert chunk_io[-1] == ("set", "unit/c.0.0.0")  # both records in one PUT, after the four data chunks
    ds = open_store(url)
    assert ds.done.values[0, 0].all() and ds.unit_writes.values[0, 0].tolist() == [2, 2]
    assert ds.unit_node.values[0, 0].tolist() == ["node-c", "node-c"]
    with pytest.raises(StoreError, match="^cannot create store at"):
        create_store(url, spec, spec.experiment.predictions())  # exists: never overwritten
