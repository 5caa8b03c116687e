"""Catalog benchmark: list and summarise many small stores under one root (issue: 1,000 in <= 10 s).

Builds ``--stores`` small stores on local disk: one real store written by
``distntk.store`` (2 widths x 4 inits x 16 data, 2 times, 3 probes, half its units
done), copied under distinct member names, each copy then given the spec attributes
(text, canonical form, hash) of the same spec with its own seed, so the catalog sees a
varying key and every store passes the spec-hash check.  Then times
``open_catalog(root)`` (one listing, every store's attributes read and its spec hash
checked; the datasets are opened lazily, on access) and ``catalog.rows()``
(``distntk query``'s rows for every store: every store read and checked as ``distntk
query`` checks one, then the estimator) separately, median of ``--repeats``.  The
load average before and after is printed: the machine may be shared; so is the CPU
time of the repeat with the median total (this process and its worker processes),
which other jobs on the machine disturb less than the wall time.  ``--parts N``
then splits the CPU time per store of the first ``N`` stores, read in this process
only, into reading (zarr), checking (``verify._checked_from``: checks and the
Dataset) and summarising (``distntk query``'s rows: the estimator).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build(root: Path, n: int) -> None:
    import zarr
    from raytools import section6_toml

    from distntk.spec import canonical_json, parse_spec
    from distntk.store import create_store

    def spec_of(seed):
        return parse_spec(section6_toml(name="bench", seed=seed, widths=(16, 32), n_init=4, n_data=16, block=8,
                                        most_likely=3))

    spec = spec_of(1)
    exp = spec.experiment
    tmpl = root / "template.zarr"
    rs = create_store(str(tmpl), spec, exp.predictions())
    units = exp.units()
    for u in units[: len(units) // 2]:
        rs.write_unit(u, exp.compute(u), 0.01, "bench")
    for k in range(n):
        dst = root / f"seed={k}.zarr"
        shutil.copytree(tmpl, dst)
        mine = spec_of(k)
        zarr.open_group(str(dst), mode="r+").attrs.update(
            {"spec": mine.text, "spec_hash": mine.hash, "spec_canonical": canonical_json(mine.canonical), "seed": k})
    shutil.rmtree(tmpl)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", type=int, default=0, metavar="N",
                    help="also split the CPU time per store of the first N stores (one process)")
    args = ap.parse_args(argv)
    from distntk.catalog import open_catalog

    print("## Catalog: list and summarise many stores (bench/bench_catalog.py)")
    for line in machine_info():
        print(line)
    with tempfile.TemporaryDirectory(prefix="dn-catalog-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build(root, args.stores)
        print(f"built {args.stores} stores in {time.perf_counter() - t0:.1f} s")
        print("load average (1, 5, 15 min) before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        t_open, t_rows, cpu, n_rows = [], [], [], 0
        for _ in range(args.repeats):
            c0 = _cpu()
            t0 = time.perf_counter()
            cat = open_catalog(str(root))
            t1 = time.perf_counter()
            rows = cat.rows()
            t2 = time.perf_counter()
            c1 = _cpu()
            t_open.append(t1 - t0)
            t_rows.append(t2 - t1)
            cpu.append((c1[0] - c0[0], c1[1] - c0[1]))
            n_rows = len(rows)
            assert len(cat.stores) == args.stores and not cat.problems and cat.keys == ["seed"] and not cat.damaged
        print("load average (1, 5, 15 min) after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
        o, r = statistics.median(t_open), statistics.median(t_rows)
        totals = [a + b for a, b in zip(t_open, t_rows, strict=True)]
        mine, workers = cpu[totals.index(statistics.median_low(totals))]
        print("| stores | rows | list + open s | summarise s | total s | stores/s | CPU s (this process + workers) |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {args.stores} | {n_rows} | {o:.2f} | {r:.2f} | {o + r:.2f} | {args.stores / (o + r):.0f} "
              f"| {mine + workers:.1f} ({mine:.1f} + {workers:.1f}) |")
        print("total s of each repeat: " + ", ".join(f"{t:.2f}" for t in totals))
        if args.parts:
            _parts(sorted(str(p) for p in root.glob("*.zarr"))[: args.parts])


def _parts(paths: list) -> None:
    """CPU ms per store of reading, checking and summarising ``paths`` in this process (verify's own steps)."""
    import functools

    from zarr.core.sync import sync

    from distntk import verify
    from distntk.catalog import _store_rows

    c0 = time.process_time()
    parsed = {}
    with verify._reading():  # zarr's configuration as open_checked_many reads
        raws = sync(verify._each(paths, functools.partial(verify._read_store, parsed=parsed), None))
    c1 = time.process_time()
    checked = [verify._checked_from(p, *raw) for p, raw in zip(paths, raws, strict=True)]
    c2 = time.process_time()
    for ds, _ in checked:
        _store_rows(ds, (None, None, None))
    c3 = time.process_time()
    per = lambda a, b: 1e3 * (b - a) / len(paths)  # noqa: E731
    print(f"CPU ms per store ({len(paths)} stores, one process): read {per(c0, c1):.1f}, check "
          f"{per(c1, c2):.1f}, summarise {per(c2, c3):.1f}, in all {per(c0, c3):.1f}")


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished child processes (the catalog's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()
