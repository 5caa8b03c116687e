"""Ray scaling: throughput with 1 and 2 actors, per-unit overhead, whole quickstart run.

Everything runs through the real service (``distntk.driver.run`` -> Ray actors ->
the driver writing a Zarr store on local disk), inside one embedded Ray started
once, so Ray's start-up is not charged to the throughput figures.

* Scaling: the same units (``--width``, ``--block`` replicas each, the
  quickstart model otherwise) on 1 and on 2 actors, ``--repeat`` times each into
  fresh stores.  Steady throughput counts the units completed after the first
  ``actors`` completions, over the time since then (actor start-up and the
  pipeline fill excluded; scheduling, transfers and store writes included); the
  whole run's wall time is printed too.  The in-process compute time of one
  unit is measured in the same process for reference.
* Overhead: many tiny units (width 4, one replica, T = 0.25) on one actor; the
  median interval between their completions minus their compute time is the
  per-unit overhead in steady state (scheduling + transfer + driver write, less
  what the pipeline of 2 queued units per actor hides), and the Zarr write of
  one unit is also timed alone.  The unit size
  that amortises the overhead to 5% is ``20 x overhead`` of compute, reported
  in replicas at each width with the measured kernel rate.
* Whole run: ``distntk run jobs/quickstart.toml`` in a subprocess into a fresh
  store, Ray start included (the figure docs/performance.md quotes for the quickstart).

Usage: python bench/bench_ray.py [--repeat 3] [--width 2048] [--block 8] [--units 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ray  # noqa: E402
from _common import machine_info, median, table  # noqa: E402

from distntk import driver  # noqa: E402
from distntk.spec import load_spec, parse_spec  # noqa: E402
from distntk.store import open_or_create  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "jobs" / "quickstart.toml"


def _spec(width: int, n_init: int, n_data: int, block: int, T: float = 2.0):
    text = QUICKSTART.read_text()
    base = load_spec(QUICKSTART)
    text = text.replace("widths = [64, 128, 256]", f"widths = [{width}]")
    text = text.replace("n_init = 16", f"n_init = {n_init}").replace("n_data = 128", f"n_data = {n_data}")
    text = text.replace("block = 32", f"block = {block}").replace("T = 2.0", f"T = {T}")
    text = text.replace("times = [0.5, 1.0, 1.5, 2.0]", f"times = [{T}]")
    spec = parse_spec(text, default_name=f"bench-{width}")
    assert spec.experiment.replicas.widths == (width,) and base.experiment.model == spec.experiment.model
    return spec


def _timed_run(spec, actors: int, tmp: Path, tag: str):
    path = tmp / f"{tag}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    open_or_create(str(path), spec, spec.experiment.predictions)  # solve the limit and allocate outside the timed part
    walls, stamps = [], []

    def on_unit(u, info):
        walls.append(info.wall_time)
        stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    rep = driver.run(spec, str(path), actors=actors, progress=False, on_unit=on_unit)
    elapsed = time.perf_counter() - t0
    n = len(spec.experiment.units())
    assert rep.computed == n
    steady = (n - actors) / (stamps[-1] - stamps[actors - 1])
    return elapsed, steady, walls, stamps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--tiny-units", type=int, default=200)
    ap.add_argument("--skip-quickstart", action="store_true")
    args = ap.parse_args(argv)
    print("## Ray scaling (embedded Ray, local Zarr store)")
    for line in machine_info():
        print("  " + line)
    tmp = Path(tempfile.mkdtemp(prefix="distntk-bench-ray-"))
    try:
        spec = _spec(args.width, args.units, args.block, args.block)
        exp = spec.experiment
        exp.solve()
        unit = exp.units()[0]
        exp.compute(unit)  # compile / warm up
        t = time.perf_counter()
        exp.compute(unit)
        t_unit = time.perf_counter() - t
        unit_steps = args.block * int(exp.T * args.width) * args.width
        kernel_rate = unit_steps / t_unit

        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        _timed_run(spec, 2, tmp, "warm")  # first actor start-up and numba cache load
        rows = []
        best = {}
        for actors in (1, 2):
            runs = [_timed_run(spec, actors, tmp, f"a{actors}-{i}") for i in range(args.repeat)]
            best[actors] = median([r[1] for r in runs])
            rows.append([actors, len(exp.units()), median([r[0] for r in runs]), best[actors]])
        print(f"units: width {args.width}, {args.block} replicas x T = {exp.T} each "
              f"({unit_steps:.3g} unit-steps); in-process compute {t_unit:.3f} s/unit "
              f"({kernel_rate:.3g} unit-steps/s)")
        print(table(["actors", "units", "median wall s (whole run)", "steady units/s"], rows,
                    ["{}", "{}", "{:.2f}", "{:.2f}"]))
        print(f"speed-up 2 actors / 1 actor (steady throughput): {best[2] / best[1]:.2f}x")

        tiny = _spec(4, args.tiny_units, 1, 1, T=0.25)
        tiny.experiment.solve()
        _timed_run(tiny, 1, tmp, "tiny-warm")
        _, _, walls, stamps = _timed_run(tiny, 1, tmp, "tiny")
        import numpy as np

        overhead = median(np.diff(stamps)) - median(walls)
        from distntk.store import open_result_store

        rs = open_result_store(str(tmp / "tiny.zarr"))
        u = tiny.experiment.units()[0]
        res = tiny.experiment.compute(u)
        w = []
        for _ in range(20):
            t = time.perf_counter()
            rs.write_unit(u, res, 0.0, "bench")
            w.append(time.perf_counter() - t)
        print()
        print(f"per-unit overhead (tiny units on 1 actor: completion interval minus compute): {overhead * 1e3:.1f} ms; "
              f"of which the driver's Zarr write of one unit: {median(w) * 1e3:.1f} ms")
        amort = []
        for N in (256, 1024, 4096, 8192):
            per_replica = 2.0 * N * N / kernel_rate
            amort.append([N, per_replica, max(1, int(round(20 * overhead / per_replica + 0.5)))])
        print("unit size that keeps the overhead under 5% (compute >= 20 x overhead), T = 2:")
        print(table(["N", "s per replica", "replicas per unit"], amort, ["{}", "{:.4f}", "{}"]))
        ray.shutdown()

        if not args.skip_quickstart:
            store = tmp / "quickstart.zarr"
            env = dict(os.environ)
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "distntk", "run", str(QUICKSTART), "--store", str(store),
                            "--no-progress"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print()
            print(f"whole run: distntk run jobs/quickstart.toml (Ray start, limit, "
                  f"{len(load_spec(QUICKSTART).experiment.units())} units, store): {time.perf_counter() - t:.1f} s")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
