"""Driver throughput of the result path (issue 9): units/s a driver stores, and dispatch efficiency.

Four parts, units of near-zero compute (sticky chain, N = 16, four replicas per unit):

1. **Store alone** (no Ray): ``n`` precomputed units written by three candidate
   designs, on (a) a local store, (b) the moto S3 server on loopback, (c) the
   same behind tests/latency_proxy.py at 20 ms and 50 ms per response:
   ``sequential`` (``write_unit`` one after another, the old path),
   ``one batch`` (the batched region writer, one batch in flight) and
   ``pipelined`` (the same with several batches in flight, the writer's default:
   8 on S3, 2 on a local disk; the design chosen),
   all on the current store layout (schema 2: three objects per unit), and
   ``pipelined`` on the schema-1 layout (six objects per unit, Zstd, one
   directory per chunk) for comparison.  For S3 the moto server's own ceiling
   (PUTs/s, and units/s at the layout's objects per unit) is measured too.
2. **``distntk run`` end to end** (``driver.run``, embedded Ray, 2 actors) on a
   local store and on S3 + 20 ms, with the driver's peak RSS and the most units
   it held unwritten (bounded by ``max_pending``, set low here to show it).
3. **Dispatch**: the scheduling loop of ``service.run_units`` over an
   ``ActorPool`` of K started actors of fractional ``num_cpus`` whose units
   sleep 0.25 s, 8 rounds; efficiency = units/s over the ideal K / 0.25 s.

The machine is shared and has 2 cores: the figures are single runs, noisy; the
load average is printed with them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from _common import machine_info, table  # noqa: E402
from latency_proxy import latency_proxy  # noqa: E402
from raytools import section6_toml  # noqa: E402
from s3_server import running_s3_server  # noqa: E402

from distntk.spec import parse_spec  # noqa: E402
from distntk.store import SCHEMA, create_store  # noqa: E402


def _spec(n_units: int, name: str):
    return parse_spec(section6_toml(name=name, seed=3, widths=(16,), n_init=n_units, n_data=4, block=4, T=0.25,
                                    times=(0.25,), L=3, most_likely=2))


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _objects_per_unit(schema: int, risk: bool = True) -> int:
    """Chunk objects one unit writes: output, risk, and its record (schema 2) or done + three fields (schema 1)."""
    return 1 + int(risk) + (1 if schema >= 2 else 4)


def _store_alone(url: str, opts: dict | None, n: int, design: str, schema: int = SCHEMA) -> tuple[float, float]:
    """``(units/s, driver CPU ms per unit)``: the CPU of this process, all its threads (zarr's loop included)."""
    spec = _spec(n, "bench-store")
    e = spec.experiment
    assert e.record_risk  # _objects_per_unit counts the risk chunk
    rs = create_store(url, spec, e.predictions(), opts, schema=schema)
    units = e.units()
    result = e.compute(units[0])  # the same bytes for every unit: compute is not what is measured
    c0, t0 = time.process_time(), time.perf_counter()
    if design == "sequential":
        for u in units:
            rs.write_unit(u, result, 0.001, "bench")
    else:
        with rs.writer(batches=1 if design == "one batch" else None) as w:
            for k, u in enumerate(units):
                w.submit(u, result, 0.001, "bench")
                if k % 16 == 15:  # the driver hands over what one ray.wait drained; 16 is typical
                    w.flush()
    return n / (time.perf_counter() - t0), 1e3 * (time.process_time() - c0) / n


def _steady(times: list) -> float:
    """Units/s between the 10th and the 90th percentile of completion times (no start-up, no tail)."""
    times = sorted(times)
    a, b = len(times) // 10, (9 * len(times)) // 10
    return (b - a) / max(times[b] - times[a], 1e-9)


def _end_to_end(url: str, opts: dict | None, n: int, max_pending: int) -> float:
    from distntk.driver import run

    spec = _spec(n, "bench-run")
    stamps: list = []
    rep = run(spec, url, actors=2, progress=False, storage_options=opts, max_pending=max_pending,
              on_unit=lambda u, info: stamps.append(time.perf_counter()))
    return _steady(stamps), rep.peak_pending


def _server_ceiling(s3) -> float:
    """PUTs/s the moto server takes: 600 small objects, all in flight at once (s3fs ``pipe``)."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, config_kwargs={"max_pool_connections": 128},
                           **s3.storage_options())
    t0 = time.perf_counter()
    fs.pipe({f"bench/ceiling/{i}": b"x" * 256 for i in range(600)})
    return 600 / (time.perf_counter() - t0)


def _dispatch(k: int, rounds: int = 8, sleep: float = 0.25) -> tuple[float, float]:
    """Efficiency of the service's scheduling loop over K started actors: units/s over the ideal K / sleep.

    The actors are started and warmed (one unit each) first: on 2 cores, starting 64
    worker processes takes longer than the measurement itself.  The loop is
    ``run_units``'s: refill free slots, drain completed calls in batches.  Returns
    ``(efficiency, mean PSS of a worker process in MiB)``.
    """
    from distntk.service import ActorPool

    def nap(unit):
        if unit < 0:  # the warm-up call: where it ran
            return os.getpid()
        time.sleep(sleep)
        return unit

    pool = ActorPool(nap, k, num_cpus=max(2 / k, 0.001), in_flight=2)
    try:
        for j in range(k):
            pool.submit(j, -1)
        pids = set()
        while pool.busy():
            pids.update(v[0] for *_, v in pool.completed(timeout=1.0))  # (value, wall, node)
        pss = [_pss_mib(p) for p in pids]
        n, sent, done = k * rounds, 0, 0
        t0 = time.perf_counter()
        while done < n:
            while sent < n and pool.has_room():
                pool.submit(sent, sent)
                sent += 1
            done += len(pool.completed(timeout=1.0))
        seconds = time.perf_counter() - t0
    finally:
        pool.shutdown()
    return (n / seconds) / (k / sleep), sum(pss) / max(len(pss), 1)


def _pss_mib(pid: int) -> float:
    """Proportional set size of a process (its share of shared pages counted once), MiB."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:")) / 1024


def _available_mib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=400, help="units per store measurement")
    ap.add_argument("--dispatch-only", action="store_true", help="only part 3")
    ap.add_argument("--actors", type=int, nargs="*", default=[64],
                    help="actor counts for the dispatch part (each worker process takes about 70 MiB; counts "
                         "that would not fit in 80 %% of the available memory are skipped)")
    args = ap.parse_args()
    for line in machine_info():
        print(line)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    rows, rows2 = [], []
    designs = [("sequential", SCHEMA), ("one batch", SCHEMA), ("pipelined", SCHEMA), ("pipelined", 1)]
    with contextlib.nullcontext() if args.dispatch_only else running_s3_server() as s3:
        if args.dispatch_only:
            return _dispatch_table(args.actors)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True, **s3.storage_options()).mkdir("bench")
        port = int(s3.endpoint_url.rsplit(":", 1)[1])
        with latency_proxy(port, 0.020) as p20, latency_proxy(port, 0.050) as p50:
            where = [("local", lambda tag: (str(tmp / f"{tag}.zarr"), None)),
                     ("S3 loopback", lambda tag: (f"s3://bench/{tag}.zarr", s3.storage_options())),
                     ("S3 + 20 ms", lambda tag: (f"s3://bench/{tag}.zarr",
                                                 {**s3.storage_options(), "endpoint_url": p20.endpoint_url})),
                     ("S3 + 50 ms", lambda tag: (f"s3://bench/{tag}.zarr",
                                                 {**s3.storage_options(), "endpoint_url": p50.endpoint_url}))]
            for name, loc in where:
                rates, cpu = [], []
                for d, schema in designs:
                    # the sequential path is slow behind the proxies: fewer units there
                    n = args.units if d != "sequential" or name in ("local", "S3 loopback") else args.units // 8
                    url, opts = loc(f"{name.replace(' ', '')}-{d.replace(' ', '')}-{schema}")
                    rate, ms = _store_alone(url, opts, n, d, schema)
                    rates.append(rate)
                    cpu.append(ms)
                rows.append([name] + rates + [cpu[2], cpu[3], _loadavg()])
                got = ", ".join(f"{d} (schema {k}) {r:.0f}/s" for (d, k), r in zip(designs, rates, strict=True))
                print(f"  store alone, {name}: {got}", flush=True)
            ceiling = _server_ceiling(s3)
            per_unit = _objects_per_unit(SCHEMA)
            print(f"\nstore alone: units/s written by the driver (no Ray), {args.units} units of 4 replicas, "
                  f"{per_unit} objects per unit (schema {SCHEMA}; schema 1: {_objects_per_unit(1)}); the moto server "
                  f"itself takes {ceiling:.0f} PUTs/s = {ceiling / per_unit:.0f} units/s here "
                  f"(schema 1: {ceiling / _objects_per_unit(1):.0f}) (load {_loadavg()})")
            for row in rows[1:]:
                print(f"  {row[0]}: pipelined reaches {100 * row[3] * per_unit / ceiling:.0f} % of the server's "
                      f"PUT ceiling (schema 1: {100 * row[4] * _objects_per_unit(1) / ceiling:.0f} %)")
            print(table(["store"] + [f"{d}" + (" (schema 1)" if k == 1 else "") for d, k in designs] +
                        ["driver CPU ms/unit, pipelined", "the same, schema 1", "load avg"],
                        rows, ["{}", "{:.0f}", "{:.0f}", "{:.0f}", "{:.0f}", "{:.2f}", "{:.2f}", "{}"]))

            for name, url, opts in [("local", str(tmp / "run.zarr"), None),
                                    ("S3 + 20 ms", "s3://bench/run20.zarr",
                                     {**s3.storage_options(), "endpoint_url": p20.endpoint_url})]:
                rate, peak = _end_to_end(url, opts, args.units, max_pending=64)
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                rows2.append([name, rate, peak, rss, _loadavg()])
            print(f"\ndistntk run end to end (driver.run, embedded Ray, 2 actors, max_pending 64), {args.units} units, "
                  "steady-state rate (10th to 90th percentile of completions)")
            print(table(["store", "units/s", "peak unwritten units", "driver peak RSS MiB", "load avg"], rows2,
                        ["{}", "{:.0f}", "{}", "{:.0f}", "{}"]))

    _dispatch_table(args.actors)


def _dispatch_table(actors: list) -> None:
    import ray

    rows3, per_worker = [], 100.0  # MiB: a first guess, replaced by the measured PSS
    for k in actors:
        need = k * per_worker * 1.2
        if need > 0.8 * _available_mib():  # never push a shared machine into the OOM killer
            print(f"  dispatch with {k} actors not run: about {need / 1024:.1f} GiB needed for the worker processes "
                  f"({per_worker:.0f} MiB each), {_available_mib() / 1024:.1f} GiB available")
            continue
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            eff, per_worker = _dispatch(k)
            rows3.append([k, k / 0.25, eff * k / 0.25, 100 * eff, per_worker, _loadavg()])
            print(f"  dispatch, {k} actors: {100 * eff:.0f} % of ideal; {per_worker:.0f} MiB PSS per worker",
                  flush=True)
        except Exception as exc:  # e.g. out of memory for 512 worker processes on a small machine
            print(f"  dispatch with {k} actors failed: {type(exc).__name__}: {exc}")
        finally:
            ray.shutdown()
    print("\ndispatch: started actors whose units sleep 0.25 s (fractional num_cpus on 2 cores), 8 rounds")
    print(table(["actors", "ideal units/s", "units/s", "% of ideal", "PSS MiB per worker", "load avg"], rows3,
                ["{}", "{:.0f}", "{:.0f}", "{:.0f}", "{:.0f}", "{}"]))


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
