"""Shared fixtures: the reference sticky chain (docs/model.md#reference-case), as real result stores.

``sticky`` computes the sticky-chain experiment in-process (``Experiment.compute``,
bit for bit what a Ray actor computes for the same unit); :func:`write_store`
writes any subset of those results into a real store with distntk.store's writer
(``create_store`` + ``ResultStore.write_unit``, the driver's code path without
Ray), so the estimator and the report read exactly what ``distntk run`` writes.

``quickstart_demo`` runs ``distntk demo`` (jobs/quickstart.toml through an
embedded Ray, then the query table and the report) once per test session;
the demo test and the estimator's test on a real Ray store share it.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr
from raytools import VENV_BIN, cleanup, new_mark, scoped_env, section6_toml, short_tmp
from s3_server import s3_bucket, s3_server  # noqa: F401  (fixtures, found by name; the S3 server lives in s3_server.py)

from distntk.spec import Spec, parse_spec
from distntk.store import SCHEMA, create_store, open_store

ROOT = Path(__file__).resolve().parents[1]

def sticky_spec(widths=(128, 256, 512), n_init=16, n_data=32, block=16, seed=11) -> Spec:
    """The sticky-chain spec (model defaults of RNNConfig: beta = 3/4, alpha = 1, b_max = 0.3, RTRL)."""
    return parse_spec(section6_toml(name="sticky-test", seed=seed, T=2.0, times=(0.5, 1.0, 1.5, 2.0), L=8,
                                    widths=widths, n_init=n_init, n_data=n_data, block=block, most_likely=3))


def write_store(path, spec: Spec, results: dict, seconds: dict | None = None,
                storage_options: dict | None = None, schema: int = SCHEMA) -> xr.Dataset:
    """A real store at ``path`` for ``spec`` holding ``results`` (``{Unit: Experiment.compute(unit)}``).

    Units are written in the experiment's order by ``ResultStore.write_unit``
    (data, then the unit's record: ``done``); the others stay NaN / not done.
    ``schema`` 1 writes the layout of stores made by distntk 0.2 and earlier.  Returns ``open_store(path)``.
    """
    rs = create_store(path, spec, spec.experiment.predictions(), storage_options,
                      command="tests/conftest.py write_store", schema=schema)
    for u in spec.experiment.units():
        if u in results:
            rs.write_unit(u, results[u], (seconds or {}).get(u, float("nan")), "in-process")
    return open_store(path, storage_options)


@dataclass(frozen=True)
class Sticky:
    spec: Spec
    results: dict  # Unit -> {"output", "risk"}
    seconds: dict  # Unit -> compute seconds

    @property
    def experiment(self):
        return self.spec.experiment


@pytest.fixture(scope="session")
def sticky() -> Sticky:
    """The sticky chain at N = 128, 256, 512, 16 inits x 32 data, every unit computed in-process."""
    spec = sticky_spec()
    results, seconds = {}, {}
    for u in spec.experiment.units():
        t0 = time.perf_counter()
        results[u] = spec.experiment.compute(u)
        seconds[u] = time.perf_counter() - t0
    return Sticky(spec, results, seconds)


@pytest.fixture(scope="session")
def sticky_store(sticky, tmp_path_factory) -> xr.Dataset:
    """The complete sticky-chain store (a real Zarr store written by distntk.store), opened."""
    return write_store(tmp_path_factory.mktemp("sticky") / "sticky.zarr", sticky.spec, sticky.results, sticky.seconds)


@dataclass(frozen=True)
class Demo:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    store: Path
    out: Path  # the report directory


@pytest.fixture(scope="session")
def quickstart_demo(tmp_path_factory) -> Demo:
    """``distntk demo --store S --out R`` in a subprocess (embedded Ray), once per session."""
    tmp = tmp_path_factory.mktemp("demo")
    mark, temp = new_mark(), short_tmp("dndemo")
    env = scoped_env(tmp / "home", mark, RAY_TMPDIR=temp)
    store, out = tmp / "quickstart.zarr", tmp / "report"
    t0 = time.time()
    try:
        p = subprocess.run([f"{VENV_BIN}/distntk", "demo", "--store", str(store), "--out", str(out)], env=env,
                           cwd=ROOT, capture_output=True, text=True, timeout=900)  # generous: loaded machines
    finally:
        cleanup(mark, temp)
    return Demo(p.returncode, p.stdout, p.stderr, time.time() - t0, store, out)
