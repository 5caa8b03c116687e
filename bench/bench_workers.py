"""Workers write, the driver commits: driver CPU per unit, units/s and record writes of ``distntk run``.

A real ``driver.run`` (one embedded 2-CPU Ray, started once, 2 actors) of a near-zero-compute spec
(sticky chain, N = 16, four replicas per unit, T = 0.25) into

* a local store; the same behind zarr's ``LatencyStore`` (``zarr.testing.store``: an asyncio sleep of
  0 or 50 ms before every get and set, no server behind it), in the driver *and* in every actor: the
  benchmark puts it there by replacing ``distntk.store.locations.zarr_group`` in each Ray worker
  process (Ray's ``worker_process_setup_hook``) for the stores under one directory; and the moto S3
  server on loopback, directly and behind ``tests/latency_proxy.py`` at 20 ms and 50 ms per response;
* by two paths: **workers write** (a schema-3 store, the default: actors store their units' chunks
  and return digests, the driver commits records in chunks of up to 1,024 units) and **driver
  writes** (a schema-2 store, created first: the driver's pipelined writer of distntk 0.5);
* at 64 and ``--units`` units (default 2,048).

Printed per case, one JSON line: the driver's CPU (``getrusage(RUSAGE_SELF)``, user + system: every
thread of the driver process, Ray's included) in total and per unit, units/s in steady state (10th to
90th percentile of the completions), record writes (``unit`` objects written), and the load
average.  Then the marginal driver CPU per unit between the two sizes (fixed costs, the store's
creation and the limit, cancel).  With ``--open N``: the open phase alone, a local store of ``N``
units every one done (written here as workers write them: ``write_chunks``, then the records
committed) opened for resume (``open_result_store`` and ``pending``): the records by chunk (a plain
resume), then with ``check`` (``distntk run --check``: every done unit's chunks read and their digests
checked), wall and CPU.  With ``--logical K C``: ``K`` actor processes with ``C`` calls in flight each
(threads: ``max_concurrency``) on units that sleep 1 s, units/s in steady state against the ideal
``K C``.  It asserts nothing.

    python bench/bench_workers.py                 # about 4 minutes on 2 cores
    python bench/bench_workers.py --units 4096
    python bench/bench_workers.py --units 4096 --where "LatencyStore 0 ms" "LatencyStore 50 ms"
    python bench/bench_workers.py --open 100000 --where   # the open phase only
    python bench/bench_workers.py --logical 4 128 --where  # 512 logical workers in 4 processes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from _common import machine_info  # noqa: E402
from bench_store import _loadavg, _spec  # noqa: E402  (the same near-zero-compute units as the store benchmark)
from latency_proxy import latency_proxy  # noqa: E402
from s3_server import running_s3_server  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _latency_hook(dirs: dict):
    """A setup hook for a process (the driver and each Ray worker): the stores under a directory of ``dirs``
    (directory -> seconds) are opened through zarr's ``LatencyStore`` over a ``LocalStore``, every get and
    set delayed by that many seconds; every other location as before."""

    def install() -> None:
        import zarr
        from zarr.storage import LocalStore
        from zarr.testing.store import LatencyStore

        import distntk.store.locations as loc

        plain = loc.zarr_group

        def zarr_group(path, mode, storage_options=None, client="fsspec"):
            for top, delay in dirs.items():
                if str(path).startswith(top):
                    store = LatencyStore(LocalStore(str(path), read_only=mode == "r"),
                                         get_latency=delay, set_latency=delay)
                    return zarr.open_group(store, mode=mode, zarr_format=loc.ZARR_FORMAT, use_consolidated=False)
            return plain(path, mode, storage_options, client)

        loc.zarr_group = zarr_group

    return install


def _case(url: str, opts: dict | None, n: int, path: str) -> dict:
    from distntk.driver import run
    from distntk.store import create_store

    spec = _spec(n, f"bench-workers-{n}")
    pred = spec.experiment.predictions()  # solved here for both paths: not part of what is measured
    create_store(url, spec, pred, opts, schema=3 if path == "workers write" else 2)
    stamps: list = []
    c0, t0 = _cpu(), time.perf_counter()
    rep = run(spec, url, actors=2, progress=False, storage_options=opts,
              on_unit=lambda u, info: stamps.append(time.perf_counter()))
    cpu, wall = _cpu() - c0, time.perf_counter() - t0
    stamps.sort()
    a, b = len(stamps) // 10, (9 * len(stamps)) // 10
    assert rep.computed == n
    return dict(path=path, units=n, driver_cpu_s=round(cpu, 3), driver_cpu_ms_per_unit=round(1e3 * cpu / n, 3),
                wall_s=round(wall, 2), units_per_s=round((b - a) / max(stamps[b] - stamps[a], 1e-9), 1),
                record_writes=rep.record_writes, load=_loadavg())


def _open_phase(n: int, tmp: Path) -> dict:
    from distntk.store import create_store, open_result_store, write_chunks

    spec = _spec(n, f"bench-open-{n}")
    e = spec.experiment
    url = str(tmp / f"open-{n}.zarr")
    rs = create_store(url, spec, e.predictions())
    units = e.units()
    result = e.compute(units[0])  # the same values for every unit: its chunk digests still differ by key
    target = rs.chunk_target()
    t0 = time.perf_counter()
    with rs.writer() as w:
        for lo in range(0, n, 1024):
            batch = units[lo:lo + 1024]
            for u, digest in zip(batch, write_chunks(target, [(u, result) for u in batch]), strict=True):
                w.commit(u, 0.001, "bench", digest)
            w.flush()
    written = time.perf_counter() - t0
    out = dict(open_phase_units=n, write_s=round(written, 1))
    for check in (False, True):
        c0, t0 = _cpu(), time.perf_counter()
        pending = open_result_store(url).pending(units, check=check)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        assert pending == []
        what = "check" if check else "records"
        out.update({f"open_{what}_s": round(wall, 2), f"open_{what}_cpu_s": round(cpu, 2)})
    return {**out, "load": _loadavg()}


def _nap(unit):
    time.sleep(1.0)
    return unit


def _logical(actors: int, per: int, rounds: int = 6) -> dict:
    """``actors`` actor processes with ``per`` calls in flight each (threads in the actor: ``max_concurrency``),
    units that sleep 1 s: units/s in steady state (10th-90th percentile) against the ideal ``actors x per``."""
    from distntk.service import ActorPool

    pool = ActorPool(_nap, actors, num_cpus=0.01, in_flight=per)
    try:
        for _ in range(actors):  # started and warm before the clock
            pool.submit(-1, -1)
        while pool.busy():
            pool.completed(timeout=1.0)
        n, sent, stamps = actors * per * rounds, 0, []
        c0 = _cpu()
        while len(stamps) < n:
            while sent < n and pool.has_room():
                pool.submit(sent, sent)
                sent += 1
            got = pool.completed(timeout=1.0)
            now = time.perf_counter()
            stamps += [now] * len(got)
        cpu = _cpu() - c0
    finally:
        pool.shutdown()
    a, b = len(stamps) // 10, (9 * len(stamps)) // 10
    rate = (b - a) / max(stamps[b] - stamps[a], 1e-9)
    return dict(logical_workers=actors * per, actors=actors, units_per_s=round(rate, 1),
                of_ideal=round(rate / (actors * per), 3), driver_cpu_ms_per_unit=round(1e3 * cpu / n, 3),
                load=_loadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=2048)
    ap.add_argument("--where", nargs="*", default=["local", "LatencyStore 0 ms", "LatencyStore 50 ms", "S3 loopback",
                                                   "S3 + 20 ms", "S3 + 50 ms"])
    ap.add_argument("--paths", nargs="+", default=["workers write", "driver writes"],
                    choices=["workers write", "driver writes"])
    ap.add_argument("--open", type=int, default=0, help="also time opening a local store of this many done units")
    ap.add_argument("--logical", type=int, nargs=2, metavar=("ACTORS", "PER_ACTOR"),
                    help="also time ACTORS x PER_ACTOR logical workers (calls in flight) on units that sleep 1 s")
    args = ap.parse_args()
    import ray

    for line in machine_info():
        print(line)
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    if args.open:
        print(json.dumps(_open_phase(args.open, tmp)), flush=True)
    if not args.where and not args.logical:
        return
    lat = {f"LatencyStore {ms} ms": (str(tmp / f"latency{ms}") + os.sep, ms / 1e3) for ms in (0, 50)}
    hook = _latency_hook(dict(lat.values()))
    hook()  # in the driver; the same in every Ray worker process
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"worker_process_setup_hook": hook})

    @ray.remote(num_cpus=0)
    def hooked() -> str:
        import distntk.store.locations as loc

        return loc.zarr_group.__qualname__

    # the latency cases measure what they say only if a worker process opens stores through the hook
    assert ray.get(hooked.remote()) == "_latency_hook.<locals>.install.<locals>.zarr_group"
    try:
        if args.logical:
            print(json.dumps(_logical(*args.logical)), flush=True)
        if not args.where:
            return
        with running_s3_server() as s3:
            import s3fs

            s3fs.S3FileSystem(skip_instance_cache=True, **s3.storage_options()).mkdir("bench")
            port = int(s3.endpoint_url.rsplit(":", 1)[1])
            with latency_proxy(port, 0.020) as p20, latency_proxy(port, 0.050) as p50:
                where = {"local": lambda tag: (str(tmp / f"{tag}.zarr"), None),
                         **{name: (lambda tag, top=top: (top + f"{tag}.zarr", None)) for name, (top, _) in lat.items()},
                         "S3 loopback": lambda tag: (f"s3://bench/{tag}.zarr", s3.storage_options()),
                         "S3 + 20 ms": lambda tag: (f"s3://bench/{tag}.zarr",
                                                    {**s3.storage_options(), "endpoint_url": p20.endpoint_url}),
                         "S3 + 50 ms": lambda tag: (f"s3://bench/{tag}.zarr",
                                                    {**s3.storage_options(), "endpoint_url": p50.endpoint_url})}
                for name in args.where:
                    for path in args.paths:
                        got = {}
                        for n in (64, args.units):
                            url, opts = where[name](f"{name.replace(' ', '')}-{path[0]}-{n}-{os.getpid()}")
                            got[n] = _case(url, opts, n, path)
                            print(json.dumps({"where": name, **got[n]}), flush=True)
                        marginal = (got[args.units]["driver_cpu_s"] - got[64]["driver_cpu_s"]) / (args.units - 64)
                        print(json.dumps({"where": name, "path": path, "marginal_driver_cpu_ms_per_unit":
                                          round(1e3 * marginal, 3)}), flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
