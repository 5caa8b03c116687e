"""Shared fixtures: the MODEL.md section 6 sticky chain computed in-process.

``assemble`` builds a dataset in the result-store schema of CONTRACT.md from
``Experiment.compute`` results, so the estimator and the report are tested
against the schema without the store writer (store.py) or Ray.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import xarray as xr

import distntk
from distntk.chain import markov_chain, window_chain
from distntk.experiment import Experiment
from distntk.rnn import RNNConfig
from s3_server import s3_bucket, s3_server  # noqa: F401  (fixtures, found by name; the S3 server lives in s3_server.py)
from distntk.target import make_target


def sticky_experiment(widths=(128, 256, 512), n_init=16, n_data=32, block=16, seed=11) -> Experiment:
    """MODEL.md section 6: sticky binary chain, tanh, beta = 3/4, T = 2, L = 8, 3 most likely probes."""
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1.0, 0.8], outer=[0.0, 0.0, 0.3])
    win = window_chain(chain, 8)
    return Experiment(chain=chain, target=target, model=RNNConfig(), T=2.0, times=(0.5, 1.0, 1.5, 2.0), L=8,
                      probes=win.histories[win.most_likely(3)], widths=tuple(widths), n_init=n_init,
                      n_data=n_data, block=block, seed=seed, name="sticky-test")


def assemble(exp: Experiment, results: dict) -> xr.Dataset:
    """A store-schema Dataset holding ``results`` (``{Unit: exp.compute(unit)}``); other units NaN/not done."""
    pred = exp.predictions()
    W, I, R = len(exp.widths), exp.n_init, exp.n_data
    nt, P = len(exp.times), len(exp.probes)
    nb = -(-R // exp.block)
    out = np.full((W, I, R, nt, P), np.nan)
    risk = np.full((W, I, R, nt), np.nan)
    done = np.zeros((W, I, R), dtype=bool)
    wall = np.full((W, I, nb), np.nan)
    node = np.full((W, I, nb), "", dtype=object)
    writes = np.zeros((W, I, nb), dtype=np.int64)
    for u, res in results.items():
        iw, sl, b = exp.widths.index(u.width), slice(u.data_start, u.data_stop), u.data_start // exp.block
        out[iw, u.init, sl] = res["output"]
        if "risk" in res:
            risk[iw, u.init, sl] = res["risk"]
        done[iw, u.init, sl] = True
        wall[iw, u.init, b], node[iw, u.init, b], writes[iw, u.init, b] = 1.0, "127.0.0.1", 1
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    ds = xr.Dataset(
        {
            "output": (("width", "init", "data", "time", "probe"), out),
            "risk": (("width", "init", "data", "time"), risk),
            "done": (("width", "init", "data"), done),
            "unit_wall_time": (("width", "init", "block"), wall),
            "unit_node": (("width", "init", "block"), node.astype(str)),
            "unit_writes": (("width", "init", "block"), writes),
            "probe_window": (("probe", "lag"), np.asarray(exp.probes, dtype=np.int64)),
        },
        coords={"width": np.asarray(exp.widths, dtype=np.int64), "init": np.arange(I, dtype=np.int64),
                "data": np.arange(R, dtype=np.int64), "block": np.arange(nb, dtype=np.int64)},
    )
    ds = ds.merge(pred.drop_attrs() if hasattr(pred, "drop_attrs") else pred, combine_attrs="drop")
    ds.attrs = {
        "spec": "", "spec_hash": "", "seed": exp.seed, "beta": exp.model.beta, "alpha": exp.model.alpha,
        "T": exp.T, "L": exp.L, "block": exp.block, "memory_bound": pred.attrs["memory_bound"],
        "kernel_error": pred.attrs["kernel_error"], "distntk_version": distntk.__version__,
        "created": now, "updated": now, "title": f"distntk store: {exp.name}",
        "history": "assembled in-process by tests/conftest.py", "source": "distntk tests",
    }
    return ds


@pytest.fixture(scope="session")
def sticky():
    """``(experiment, {unit: result})`` for the sticky chain at N = 128, 256, 512, 16 inits x 32 data."""
    exp = sticky_experiment()
    return exp, {u: exp.compute(u) for u in exp.units()}


@pytest.fixture(scope="session")
def sticky_store(sticky):
    exp, results = sticky
    return assemble(exp, results)
