"""Object-store client by measurement (issue 19 item 4): s3fs (zarr's ``FsspecStore``) against obstore (zarr's
``ObjectStore`` over ``obstore.store.S3Store``), for the actors and for the driver.

Recommendation (from the figures below, 2026-12-04, the shared 2-core machine at load 10-18)
-------------------------------------------------------------------------------------------
* **Actors: obstore.**  ``write_chunks`` costs 1.1-1.3 ms of CPU per unit through obstore against 4.1 ms
  through s3fs (3.2-3.6x less, the same 512 PUTs for 256 units), and a call's wall time halves; an actor
  process starts its client with 2 ms of import and 9 ms of first use (11 MiB) against 179 + 108 ms (30 MiB).
  It matters where units are short (the 3 ms saved per unit is a few per cent of a 0.1 s unit).
* **Driver: either; take obstore for the zarr I/O along with the actors.**  Since workers write, the driver's
  client costs are small with both: commits 0.029 (s3fs) and 0.021 (obstore) ms per unit, a resume's open
  0.019 and 0.011 ms per unit (s3fs sends a HEAD before every GET: 18 requests against 9), tens of thousands
  of units/s either way.  The driver's fallback path (it writes the units of a worker that cannot reach the
  store) costs 4.1 against 1.4 ms per unit (2.9x; the earlier 10.7 against 2.45 ms was that path).
* **How:** in ``store.locations.zarr_group`` (the one place a location becomes a Zarr group, which both sides use): an
  ``s3://``/``gs://`` location opens as ``zarr.storage.ObjectStore`` when obstore is importable and every
  storage option translates (:func:`distntk.store.objstore.s3_config`), else through s3fs as now; local paths and ``memory://``
  unchanged.  s3fs stays for what uses fsspec directly (the lease's conditional writes, the creation probe,
  removing an interrupted creation, catalogs' listings), so the driver keeps both clients.
* **Before switching:** add ``"obstore"`` to ``store.locations._TRANSPORT_PACKAGES`` (its ``GenericError``,
  ``PermissionDeniedError``, ... are not ``OSError`` and escape ``storage_errors``: measured below, a store
  that drops connections makes ``write_chunks`` raise instead of handing the units back); give obstore a
  longer backoff than its default (which gave up after 1.5 s of refused connections, where s3fs rode out a 3 s
  outage; ``objstore.RETRY`` did too, in 4.2 s); translate credentials obstore does not read (``AWS_PROFILE`` and
  ``~/.aws`` files, ``AWS_CA_BUNDLE``; it ignores ``AWS_EC2_METADATA_DISABLED``) and set ``allow_http`` for an
  ``http://`` endpoint (else "builder error").  ``gs://`` goes the same way through ``GCSStore`` (not measured
  here: no GCS server).  zarr calls ObjectStore experimental; obstore runs a tokio runtime of cores + 1 threads
  in every process, and a process forked after its first request hangs on its next async one (Ray's workers
  are not forked from the driver).

Figures: ``python bench/bench_s3_client.py --errors`` (medians of 3 fresh processes per case, min-max in
brackets; CPU of the whole process, every thread; 1-minute load average over the rows' runs)::

    where        case                    units  s3fs ms/unit          obstore ms/unit       ratio  requests   load
    S3 loopback  actor_write_chunks        256  4.097 (4.061-4.568)   1.132 (1.042-1.284)   3.62   512 / 512  11.7-17.2
    S3 loopback  driver_resume_open       4096  0.019 (0.019-0.021)   0.011 (0.011-0.013)   1.72    18 / 9    11.4-17.1
    S3 loopback  driver_commit            4096  0.029 (0.028-0.033)   0.021 (0.021-0.024)   1.38    16 / 16   11.4-17.1
    S3 loopback  driver_writes_fallback    256  4.070 (3.823-4.811)   1.411 (1.299-1.731)   2.88   513 / 513  11.9-17.6
    S3 + 20 ms   actor_write_chunks        256  4.091 (3.994-4.361)   1.294 (1.072-1.487)   3.16   512 / 512  12.2-16.4
    S3 + 20 ms   driver_resume_open       4096  0.021 (0.019-0.023)   0.011 (0.011-0.012)   1.88    18 / 9    12.1-16.3
    S3 + 20 ms   driver_commit            4096  0.032 (0.031-0.034)   0.024 (0.022-0.024)   1.37    16 / 16   12.1-16.3
    S3 + 20 ms   driver_writes_fallback    256  4.148 (3.939-4.800)   1.452 (1.450-1.782)   2.86   514 / 513  12.0-16.3
    (per process, ms of CPU in all, 5 fresh processes each)
    S3 loopback  import                      -  178.9 (175.4-207.8)   2.4 (2.2-2.7)                  0 / 0    10.3-13.6
    S3 loopback  first_use                   -  108.0 (104.9-119.5)   8.6 (7.6-8.7)                  4 / 2    10.3-13.6

Where the actor's CPU goes (256 units, by thread): s3fs 1.02-1.16 s on zarr's event-loop thread (aiobotocore,
botocore's request machinery and signing); obstore 0.15-0.19 s there (zarr's own encoding and coroutines) plus
0.11-0.18 s in tokio's threads.  Wall time for the 256 units: 4.7-5.9 s (s3fs), 1.6-2.6 s (obstore).  The
units obstore wrote read back through s3fs with ``pending(check=True)``: 0 of 256 damaged.  ``--errors``: a
closed port, a missing bucket and an unknown option give one-line StoreErrors through s3fs; through obstore the
closed port escapes as ``obstore.exceptions.GenericError`` (a 38-line message), the missing bucket is a
``FileNotFoundError`` (then "no group found", as with s3fs), the unknown option is refused by ``objstore.s3_config``.

What is measured
----------------
Both clients against the same moto S3 server on loopback (``tests/s3_server.py``), reached through a small
proxy in this file that counts the HTTP requests by method (and the bytes each way) and can delay every
response like ``tests/latency_proxy.py``: ``S3 loopback`` (no delay) and ``S3 + 20 ms``.  The stores are made
by distntk's own create path (``create_store``, schema 3, the near-zero-compute units of ``bench_store.py``:
sticky chain, N = 16, four replicas per unit, so one ``output`` and one ``risk`` chunk per unit); the same
distntk code then runs with either client: in a child process the obstore client replaces
``distntk.store.locations.zarr_group`` (the one place a location becomes a Zarr group) by :func:`obstore_group`, which
opens ``s3://`` and ``gs://`` locations through :func:`obstore_zarr_store` (the prototype adapter: it
translates the ``--storage-option`` keys and the ``AWS_*`` environment to obstore's configuration) and leaves
local paths and ``memory://`` to zarr as before.  Nothing in distntk/ changes.

Each case runs in a fresh child process (imports and the first request outside the clock, except in the
``import`` and ``first_use`` cases), three times, the clients interleaved:

* ``actor_write_chunks``: :func:`distntk.store.write_chunks` as an actor calls it (calls of 16 units, a
  warm-up call first), 256 units: 512 chunk PUTs;
* ``driver_resume_open``: ``open_result_store`` and ``pending`` of a 4,096-unit store whose units are all
  done (the records by chunk: 4 ``unit`` chunks of 1,024 records), after a first ``group_exists`` (what the driver
  does before it opens);
* ``driver_commit``: the driver's commits of 4,096 workers' receipts (``UnitWriter.commit``), the record
  chunks flushed every 256 units (16 record-chunk PUTs of 1,024 records each);
* ``driver_writes_fallback``: the driver writing 256 units itself (``UnitWriter.submit``, flushed every 16
  units: the path of a worker that cannot reach the store, and the path of the earlier 10.7 / 2.45 ms
  figures);
* ``import`` and ``first_use``: in a fresh process that has imported distntk.store (hence zarr and fsspec),
  importing the client and then opening the store's group and one array (the first requests: credentials,
  connection, ``zarr.json``), configured from the ``AWS_*`` environment only (no storage options).

CPU is the child's ``getrusage(RUSAGE_SELF)`` (user + system, every thread: zarr's event loop, obstore's tokio
threads), split by thread from ``/proc/self/task/*/schedstat`` (``main``, the other Python threads, ``tokio``),
with the threads' total run-queue wait (time ready but not running: the machine's load as this process felt
it).  Each line also carries the load average at the start and the end, and the command.  ``--errors`` also
checks how each client's failures reach ``distntk.store.storage_errors`` (a closed port, a missing bucket, an
unknown option).  It asserts nothing about speed.

    python bench/bench_s3_client.py                       # about 10 minutes on 2 loaded cores
    python bench/bench_s3_client.py --reps 1 --where "S3 loopback" --errors
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import pickle
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

CLIENTS = ("s3fs", "obstore")
PER_CALL = 16  # units per Ray call (the service's most)
COMMIT_EVERY = 256  # the driver's commit batch (distntk.store.writer._COMMIT_UNITS)
REQUESTS_PATH = "/__requests__"  # answered by the counting proxy itself, never forwarded


# --------------------------------------------------------------------------- the adapter
# The translation of the --storage-option keys and the AWS_* environment to obstore's configuration lives in
# distntk.store.objstore (the actors use it since this measurement); the driver's cases below route every zarr
# open through it (obstore_group), to measure the driver with obstore too.
from distntk.store import objstore  # noqa: E402
from distntk.store.objstore import obstore_zarr_store  # noqa: E402


def obstore_group(path, mode: str, storage_options: dict | None = None, client: str = "fsspec"):
    """``distntk.store.locations.zarr_group`` with object storage through obstore (the rest unchanged)."""
    import zarr

    from distntk.store import locations as ds

    store = obstore_zarr_store(ds.protocol(path), ds.url_path(path), storage_options, read_only=mode == "r")
    if store is None:
        return _ORIGINAL_GROUP(path, mode, storage_options, client)
    return zarr.open_group(store, mode=mode, zarr_format=ds.ZARR_FORMAT, use_consolidated=False)


_ORIGINAL_GROUP = None


def _worker_client(job: dict) -> str:
    """The ``ChunkTarget.client`` of a case: the actors' writes through the client under test."""
    return "fsspec" if job["client"] == "s3fs" else "obstore"


def _use_client(client: str) -> None:
    """Import ``client`` (outside any clock) and, for obstore, route distntk's opens through the adapter."""
    global _ORIGINAL_GROUP
    from distntk.store import locations as ds

    if client == "s3fs":
        import s3fs  # noqa: F401
        import zarr.storage  # noqa: F401
        return
    import obstore.store  # noqa: F401
    from zarr.storage import ObjectStore  # noqa: F401

    if _ORIGINAL_GROUP is None:
        _ORIGINAL_GROUP = ds.zarr_group
        ds.zarr_group = obstore_group


# --------------------------------------------------------------------------- the counting (and delaying) proxy
async def _proxy(upstream_port: int, delay: float) -> None:
    """Forward loopback connections to ``upstream_port``; count the requests by method and the bytes each way;
    deliver every byte of a response ``delay`` seconds after it left the server (as tests/latency_proxy.py).
    ``GET /__requests__`` answers the counts (never forwarded, not counted)."""
    loop = asyncio.get_running_loop()
    counts: collections.Counter = collections.Counter()

    async def down(reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                counts["bytes_down"] += len(data)
                queue.put_nowait((loop.time() + delay, data))
        finally:
            queue.put_nowait((0.0, None))
            with contextlib.suppress(Exception):
                await sender
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(cr, cw) -> None:
        up = pump = None
        try:
            while True:
                try:
                    head = await cr.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                line, _, rest = head.partition(b"\r\n")
                method, target = (line.split(b" ") + [b"", b""])[:2]
                if target.startswith(REQUESTS_PATH.encode()):
                    body = json.dumps(counts).encode()
                    cw.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                    await cw.drain()
                    cw.close()
                    return
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in rest.split(b"\r\n"))}
                if up is None:
                    ur, up = await asyncio.open_connection("127.0.0.1", upstream_port)
                    pump = asyncio.create_task(down(ur, cw))
                counts[method.decode(errors="replace")] += 1
                counts["requests"] += 1
                up.write(head)
                if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                    while True:
                        size_line = await cr.readuntil(b"\r\n")
                        up.write(size_line)
                        size = int(size_line.split(b";")[0].strip(), 16)
                        if size == 0:
                            while (trailer := await cr.readuntil(b"\r\n")) != b"\r\n":
                                up.write(trailer)
                            up.write(b"\r\n")
                            break
                        up.write(await cr.readexactly(size + 2))
                        counts["bytes_up"] += size
                else:
                    n = int(headers.get(b"content-length", b"0") or 0)
                    counts["bytes_up"] += n
                    while n > 0:
                        data = await cr.read(min(n, 65536))
                        if not data:
                            raise ConnectionError("client closed mid-body")
                        up.write(data)
                        n -= len(data)
                await up.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            if up is not None:
                with contextlib.suppress(Exception):
                    up.write_eof()  # the server answers what it has, then closes: the responses still arrive
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pump, 60)
                up.transport.abort()
            cw.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stdin_closed = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: stdin_closed.done() or (
        os.read(sys.stdin.fileno(), 4096) or stdin_closed.set_result(None)))
    async with server:
        await stdin_closed


@contextlib.contextmanager
def counting_proxy(upstream_port: int, delay: float, timeout: float = 60.0):
    """The proxy in a child process; yields its endpoint URL."""
    import select

    from s3_server import stop_by_eof

    proc = subprocess.Popen([sys.executable, __file__, "--proxy", str(upstream_port), str(delay)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            raise RuntimeError(f"counting proxy did not start within {timeout:.0f} s")
        yield f"http://127.0.0.1:{int(line)}"
    finally:
        stop_by_eof(proc)


def _requests(endpoint: str) -> collections.Counter:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(endpoint + REQUESTS_PATH, timeout=30) as r:
        return collections.Counter(json.loads(r.read()))


# --------------------------------------------------------------------------- measuring, in a child
def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _threads() -> dict:
    """``{tid: (group, run ns, run-queue wait ns)}`` of this process's threads (``/proc/self/task/*/schedstat``)."""
    out, pid = {}, os.getpid()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run, wait = (int(x) for x in f.read().split()[:2])
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        group = "main" if int(tid) == pid else "tokio" if comm.startswith("tokio") else \
            "python threads" if comm.startswith("python") else comm
        out[tid] = (group, run, wait)
    return out


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


def _rusage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


class _Measure:
    """One case: CPU (all threads, and by thread), wall, requests through the proxy, load; prints its JSON line."""

    def __init__(self, job: dict, case: str, units: int, extra=None):
        self.job, self.case, self.units, self.extra = job, case, units, extra

    def __enter__(self):
        self.req0 = _requests(self.job["endpoint"])
        self.load0 = _loadavg()
        self.th0 = _threads()
        self.ru0 = _rusage()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            return
        wall = time.perf_counter() - self.t0
        ru = _rusage()
        th = _threads()
        req = _requests(self.job["endpoint"]) - self.req0
        user, sys_ = ru[0] - self.ru0[0], ru[1] - self.ru0[1]
        by: collections.Counter = collections.Counter()
        waited = 0
        for tid, (group, run, wait) in th.items():
            _g, run0, wait0 = self.th0.get(tid, (group, 0, 0))
            by[group] += run - run0
            waited += wait - wait0
        cpu = user + sys_
        n = max(self.units, 1)
        line = {"client": self.job["client"], "case": self.case, "where": self.job["where"], "units": self.units,
                "cpu_s": round(cpu, 4), "cpu_ms_per_unit": round(1e3 * cpu / n, 4) if self.units else None,
                "user_s": round(user, 4), "sys_s": round(sys_, 4), "wall_s": round(wall, 3),
                "requests": req["requests"],
                "requests_per_unit": round(req["requests"] / n, 3) if self.units else None,
                "requests_by_method": {k: v for k, v in sorted(req.items()) if k.isupper() and v},
                "bytes_up": req["bytes_up"], "bytes_down": req["bytes_down"],
                "cpu_ms_by_thread": {k: round(v / 1e6, 1) for k, v in sorted(by.items()) if v},
                "runqueue_wait_s": round(waited / 1e9, 3), "load_start": self.load0, "load": _loadavg(),
                "rep": self.job["rep"], "command": self.job["command"], **(self.extra() if self.extra else {})}
        print(json.dumps(line), flush=True)


def _job_units(job: dict):
    from bench_store import _spec

    return _spec(job["n_store"], job["spec_name"]).experiment.units()


def _child_actor(job: dict) -> None:
    from distntk.store import ChunkTarget, write_chunks

    _use_client(job["client"])
    with open(job["result"], "rb") as f:
        result = pickle.load(f)
    units = _job_units(job)
    n = job["units"]
    target = ChunkTarget(job["url"], job["opts"], job["store_id"], tuple(job["widths"]), job["block"],
                         tuple(job["names"]), _worker_client(job))
    warm = write_chunks(target, [(u, result) for u in units[n:n + PER_CALL]])  # opens the store: not measured
    assert all(isinstance(r, dict) for r in warm), warm[0]
    receipts = []
    with _Measure(job, "actor_write_chunks", n):
        for lo in range(0, n, PER_CALL):
            receipts += write_chunks(target, [(u, result) for u in units[lo:lo + PER_CALL]])
    assert len(receipts) == n and all(isinstance(r, dict) for r in receipts), receipts[0]


def _receipt(result: dict, wi: int, i: int, b: int) -> dict:
    """What a worker's receipt for unit ``(wi, i, b)`` carries: its chunks' digests."""
    from distntk.store import chunk_digest, chunk_keys

    return {name: chunk_digest(key, result[name]) for name, key in chunk_keys(result, wi, i, b).items()}


def _child_driver(job: dict) -> None:
    from distntk.store import group_exists, open_result_store

    _use_client(job["client"])
    with open(job["result"], "rb") as f:
        result = pickle.load(f)
    units = _job_units(job)
    url, opts = job["url"], job["opts"]
    assert group_exists(url, opts)  # the driver's first use of the store (open_or_create): not measured
    with _Measure(job, "driver_resume_open", len(units)):
        rs = open_result_store(url, "r+", opts)
        pending = rs.pending(units)
    assert pending == [], len(pending)
    digests = [_receipt(result, rs.widths.index(u.width), u.init, u.data_start // rs.block) for u in units]
    w = rs.writer()  # reads the records: part of the open, not of the commits
    with _Measure(job, "driver_commit", len(units)):
        for lo in range(0, len(units), COMMIT_EVERY):
            for u, d in zip(units[lo:lo + COMMIT_EVERY], digests[lo:lo + COMMIT_EVERY], strict=True):
                w.commit(u, 0.001, "bench", d)
            w._commits.flush(wait=True)  # one record-chunk PUT per 256 units, as a busy driver does
    assert w._commits.chunk_writes == len(units) // COMMIT_EVERY
    w.close()
    n = job["fallback_units"]
    with _Measure(job, "driver_writes_fallback", n):
        with rs.writer() as w2:
            for k, u in enumerate(units[:n]):
                w2.submit(u, result, 0.001, "bench")
                if k % PER_CALL == PER_CALL - 1:
                    w2.flush()


def _child_import(job: dict) -> None:
    import distntk.store.writer  # noqa: F401  zarr, xarray, fsspec: every distntk process has them already
    from distntk.store import locations as ds

    rss0 = _rss_mib()

    def extra() -> dict:
        return {"config": "environment only (AWS_*), no storage options",
                "rss_growth_mib": round(_rss_mib() - rss0, 1)}  # since distntk.store was imported

    with _Measure(job, "import", 0, extra):
        _use_client(job["client"])
    with _Measure(job, "first_use", 0, extra):
        g = ds.zarr_group(job["url"], "r", None)
        assert "store_id" in dict(g.attrs)
        g["output"]


def _child_errors(job: dict) -> None:
    """How each client's failures come out of ``storage_errors``: a StoreError (one line) or something else."""
    from distntk.store import StoreError, storage_errors

    _use_client(job["client"])
    from distntk.store import locations as ds

    good = job["opts"]
    dead = {**good, "endpoint_url": "http://127.0.0.1:9", "config_kwargs": {"retries": {"max_attempts": 2}}}
    cases = [("closed port", "s3://bench/none.zarr", dead), ("missing bucket", "s3://no-such-bucket/x.zarr", good),
             ("unknown option", "s3://bench/x.zarr", {**good, "no_such_option": 1})]
    for what, url, opts in cases:
        t0 = time.perf_counter()
        try:
            with storage_errors(url, "open store"):
                ds.zarr_group(url, "r", opts)
            raised, text = "nothing", ""
        except StoreError as exc:
            raised, text = "StoreError", str(exc)
        except Exception as exc:  # noqa: BLE001 - what escapes distntk's translation is the finding
            raised, text = f"{type(exc).__module__}.{type(exc).__name__} (not translated)", str(exc)
        _error_line(job, what, raised, text, time.perf_counter() - t0)
    _dropped_connections(job, "adapter's retry config")
    if job["client"] == "obstore":
        objstore.RETRY = None
        objstore._STORES.clear()
        _dropped_connections(job, "obstore's default retry config")


def _error_line(job: dict, what: str, raised: str, text: str, seconds: float) -> None:
    print(json.dumps({"client": job["client"], "case": "error", "what": what, "raised": raised,
                      "message": text.splitlines()[0][:200] if text else "", "lines": len(text.splitlines()),
                      "seconds": round(seconds, 2), "load": _loadavg(), "command": job["command"]}), flush=True)


def _dropped_connections(job: dict, retry: str) -> None:
    """An actor's ``write_chunks`` while the store drops every connection for 3 s (tests/latency_proxy.py's drop):
    stored (after retries), handed back to the driver (a one-line reason), or an exception."""
    from latency_proxy import latency_proxy

    from distntk.store import ChunkTarget, write_chunks

    with open(job["result"], "rb") as f:
        result = pickle.load(f)
    units = _job_units(job)[-PER_CALL:]
    from distntk.store import writer

    writer._WORKER_ARRAYS.clear()
    with latency_proxy(job["upstream_port"], 0.0, drop_seconds=3.0) as p:
        target = ChunkTarget(job["url"], {**job["opts"], "endpoint_url": p.endpoint_url}, job["store_id"],
                             tuple(job["widths"]), job["block"], tuple(job["names"]), _worker_client(job))
        assert isinstance(write_chunks(target, [(units[0], result)])[0], dict)  # opened, connections pooled
        p.drop()
        time.sleep(0.2)
        t0 = time.perf_counter()
        try:
            got = write_chunks(target, [(u, result) for u in units])
            stored = sum(isinstance(r, dict) for r in got)
            raised = f"{stored} of {len(got)} units stored" + ("" if stored == len(got) else ", the rest handed back")
            text = "" if stored == len(got) else next(r for r in got if isinstance(r, str))
        except Exception as exc:  # noqa: BLE001 - an exception out of write_chunks fails the actor's call
            raised, text = f"{type(exc).__module__}.{type(exc).__name__} out of write_chunks", str(exc)
        what = "connections dropped for 3 s during write_chunks" + (f" ({retry})" if job["client"] == "obstore" else "")
        _error_line(job, what, raised, text, time.perf_counter() - t0)


# --------------------------------------------------------------------------- the parent
def _run_child(job: dict, env: dict | None = None) -> list:
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                       env=env, timeout=1800)
    lines = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    for ln in p.stdout.splitlines():
        print(ln if ln.startswith("{") else f"  (child) {ln}", flush=True)
    if p.returncode:
        print(f"  (child failed, rc {p.returncode}) {p.stderr[-3000:]}", flush=True)
    return lines


def _prepare(s3, endpoint: str, tmp: Path, n_actor: int, n_driver: int) -> dict:
    """The stores (made with s3fs by distntk's create path, then the driver store's records all committed) and
    one unit's result (the same values for every unit, as in bench_store.py; the digests differ by key)."""
    from bench_store import _spec

    from distntk.store import create_store

    opts = {**s3.storage_options(), "endpoint_url": endpoint}
    out = {}
    actor_spec, driver_spec = _spec(n_actor + PER_CALL, "bench-s3c-actor"), _spec(n_driver, "bench-s3c-driver")
    e = actor_spec.experiment
    pred = e.predictions()
    result = {k: v for k, v in e.compute(e.units()[0]).items() if k in ("output", "risk")}
    with open(tmp / "result.pkl", "wb") as f:
        pickle.dump(result, f)
    for client in CLIENTS:
        url = f"s3://bench/{client}-actor-{os.getpid()}.zarr"
        rs = create_store(url, actor_spec, pred, opts)
        t = rs.chunk_target()
        out[client, "actor"] = dict(url=url, store_id=t.store_id, widths=list(t.widths), block=t.block,
                                    names=list(t.names), n_store=n_actor + PER_CALL, spec_name="bench-s3c-actor")
        url = f"s3://bench/{client}-driver-{os.getpid()}.zarr"
        rs = create_store(url, driver_spec, driver_spec.experiment.predictions(), opts)
        units = driver_spec.experiment.units()
        with rs.writer() as w:
            for u in units:
                w.commit(u, 0.001, "bench", _receipt(result, rs.widths.index(u.width), u.init,
                                                     u.data_start // rs.block))
        out[client, "driver"] = dict(url=url, n_store=n_driver, spec_name="bench-s3c-driver")
    out["result"] = str(tmp / "result.pkl")
    return out


def _interop(prep: dict, opts: dict, n: int) -> dict:
    """The store obstore wrote (the driver's fallback units' chunks and every record), read back by s3fs with
    ``distntk run --check``'s test: every unit's chunks decode and match the digests in its record."""
    from bench_store import _spec

    from distntk.store import open_result_store

    job = prep["obstore", "driver"]
    units = _spec(job["n_store"], job["spec_name"]).experiment.units()[:n]
    damaged = open_result_store(job["url"], "r", opts).pending(units, check=True)
    return {"case": "interop", "what": "the units obstore wrote (driver_writes_fallback: chunks and records), "
            "checked through s3fs (pending, check=True)", "units": len(units), "damaged_or_missing": len(damaged),
            "load": _loadavg()}


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("zarr", "s3fs", "aiobotocore", "botocore", "obstore", "moto"))


def _med(rows: list, key: str) -> float:
    return statistics.median(x[key] for x in rows)


def _summary(lines: list) -> None:
    rows = collections.defaultdict(list)
    for ln in lines:
        if ln.get("case") != "error":
            rows[ln["where"], ln["case"], ln["client"]].append(ln)
    print("\nmedian of the repeats (min-max), CPU of the whole process per unit; requests through the proxy")
    print("| where | case | units | s3fs CPU ms/unit | obstore CPU ms/unit | s3fs / obstore | requests s3fs / "
          "obstore | wall s s3fs / obstore | load (1-min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    keys = sorted({(w, c) for w, c, _ in rows}, key=lambda k: (k[0], ["import", "first_use", "actor_write_chunks",
                                                                       "driver_resume_open", "driver_commit",
                                                                       "driver_writes_fallback"].index(k[1])))
    for where, case in keys:
        a, b = rows.get((where, case, "s3fs"), []), rows.get((where, case, "obstore"), [])
        if not a or not b:
            continue
        per = "cpu_ms_per_unit" if a[0]["units"] else "cpu_s"
        scale = 1.0 if a[0]["units"] else 1e3  # import, first use: ms of CPU in all
        va, vb = [scale * x[per] for x in a], [scale * x[per] for x in b]
        ma, mb = statistics.median(va), statistics.median(vb)
        loads = [float(x["load"].split()[0]) for x in a + b]
        print(f"| {where} | {case} | {a[0]['units'] or '-'} | {ma:.3f} ({min(va):.3f}-{max(va):.3f}) | "
              f"{mb:.3f} ({min(vb):.3f}-{max(vb):.3f}) | {ma / mb:.2f} | "
              f"{_med(a, 'requests'):.0f} / {_med(b, 'requests'):.0f} | "
              f"{_med(a, 'wall_s'):.2f} / {_med(b, 'wall_s'):.2f} | "
              f"{min(loads):.1f}-{max(loads):.1f} |")
    print("(import and first_use rows: ms of CPU in all, not per unit)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--where", nargs="*", default=["S3 loopback", "S3 + 20 ms"])
    ap.add_argument("--actor-units", type=int, default=256)
    ap.add_argument("--driver-units", type=int, default=4096)
    ap.add_argument("--fallback-units", type=int, default=256)
    ap.add_argument("--import-reps", type=int, default=5)
    ap.add_argument("--errors", action="store_true", help="also check the error translation of both clients")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--proxy", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.proxy:
        return asyncio.run(_proxy(int(args.proxy[0]), float(args.proxy[1])))
    if args.child:
        job = json.loads(args.child)
        return {"actor": _child_actor, "driver": _child_driver, "import": _child_import,
                "errors": _child_errors}[job["mode"]](job)

    from _common import machine_info
    from s3_server import running_s3_server

    try:
        import obstore  # noqa: F401
    except ImportError:
        print("obstore is not installed (pip install obstore): nothing to compare")
        return

    command = shlex.join(["python", "bench/bench_s3_client.py"] + sys.argv[1:])
    for line in machine_info():
        print(line)
    print(f"{_versions()}; load {_loadavg()}; {command}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-client-"))
    lines: list = []
    with running_s3_server() as s3:
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **s3.storage_options()).mkdir("bench")
        port = int(s3.endpoint_url.rsplit(":", 1)[1])
        with counting_proxy(port, 0.0) as p0, counting_proxy(port, 0.020) as p20:
            endpoints = {"S3 loopback": p0, "S3 + 20 ms": p20}
            prep = _prepare(s3, p0, tmp, args.actor_units, args.driver_units)
            print(f"stores made (load {_loadavg()})", flush=True)
            base = dict(command=command, result=prep["result"], fallback_units=args.fallback_units)
            if args.errors:
                for client in CLIENTS:
                    lines += _run_child({**base, **prep[client, "actor"], "mode": "errors", "client": client,
                                         "rep": 0, "upstream_port": port,
                                         "opts": {**s3.storage_options(), "endpoint_url": p0}})
            for rep in range(args.reps):
                for where in args.where:
                    ep = endpoints[where]
                    opts = {**s3.storage_options(), "endpoint_url": ep}
                    for client in CLIENTS if rep % 2 == 0 else CLIENTS[::-1]:
                        common = {**base, "client": client, "where": where, "endpoint": ep, "opts": opts, "rep": rep}
                        lines += _run_child({**common, **prep[client, "actor"], "mode": "actor",
                                             "units": args.actor_units})
                        lines += _run_child({**common, **prep[client, "driver"], "mode": "driver"})
            env = s3.subprocess_env()
            env["AWS_ENDPOINT_URL"] = p0
            for rep in range(args.import_reps):
                for client in CLIENTS if rep % 2 == 0 else CLIENTS[::-1]:
                    lines += _run_child({**base, "mode": "import", "client": client, "where": "S3 loopback",
                                         "endpoint": p0, "rep": rep, "url": prep[client, "actor"]["url"]}, env=env)
            opts = {**s3.storage_options(), "endpoint_url": p0}
            print(json.dumps(_interop(prep, opts, args.fallback_units)), flush=True)
    _summary(lines)
    print(f"(load {_loadavg()} at the end)")


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
