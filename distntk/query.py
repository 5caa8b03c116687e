"""Summaries of a result store: progress, and simulation vs limit vs predictions.

For width ``N``, time ``t`` and probe window ``z``, over the replicas marked done:

* ``mean``: the average of ``g^N_t(z)`` over all done replicas, beside the limit
  ``h``; ``se``: its standard error (replicas of one initialisation are
  correlated, so it is the spread of the per-initialisation means / sqrt(#init));
* ``nvar``: ``N`` times the within-initialisation variance (``ddof = 1`` per
  initialisation, averaged over initialisations with at least 2 replicas),
  beside the predictions ``nvar_poisson`` (Poisson equation, MODEL 5.1) and
  ``nvar_iid`` (the naive i.i.d. one);
* ``var_init``: the variance across initialisations of the per-initialisation
  means, less the within part ``mean(Var within) / n`` (so it estimates
  ``Var_theta E[g | theta]``), beside ``var_init_pred = N^(1 - 2 beta) var_init_coef``
  (MODEL 5.2).

A proper estimator with intervals and rates lives in ``estimate.py``; this is
the quick look that ``distntk query`` prints.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import xarray as xr

from .experiment import unit_grid

__all__ = ["QueryError", "progress", "summary", "format_records"]

COLUMNS = ["width", "time", "probe", "n", "h", "mean", "se", "nvar", "nvar_poisson", "nvar_iid",
           "var_init", "var_init_pred"]


class QueryError(ValueError):
    """A selection that the store cannot answer; one-line message."""


def progress(ds: xr.Dataset) -> list[dict]:
    """Per width: replicas and units (data blocks) done, and in total."""
    done = np.asarray(ds["done"].values, dtype=bool)  # (width, init, data)
    units = unit_grid(range(done.shape[0]), done.shape[1], done.shape[2], int(ds.attrs["block"]))
    out = []
    for wi, N in enumerate(ds["width"].values):
        mine = [u for u in units if u.width == wi]  # positions, not labels
        out.append({
            "width": int(N),
            "replicas_done": int(done[wi].sum()),
            "replicas": int(done[wi].size),
            "units_done": sum(int(done[wi, u.init, u.data_start:u.data_stop].all()) for u in mine),
            "units": len(mine),
        })
    return out


def _select(ds: xr.Dataset, width=None, time=None, probe=None):
    widths = [int(w) for w in ds["width"].values]
    wsel = widths
    if width is not None:
        if int(width) not in widths:
            raise QueryError(f"--width {width}: not in the store's widths {widths}")
        wsel = [int(width)]
    times = [float(t) for t in ds["time"].values]
    tsel = list(range(len(times)))
    if time is not None:
        hit = [i for i, t in enumerate(times) if math.isclose(t, float(time), rel_tol=1e-9, abs_tol=1e-12)]
        if not hit:
            raise QueryError(f"--time {time}: not on the store's time grid {times}")
        tsel = hit
    labels = [str(p) for p in ds["probe"].values]
    psel = list(range(len(labels)))
    if probe is not None:
        p = str(probe)
        if p in labels:
            psel = [labels.index(p)]
        elif p.lstrip("-").isdigit() and -len(labels) <= int(p) < len(labels):
            psel = [int(p) % len(labels)]
        else:
            raise QueryError(f"--probe {probe}: expected a probe index 0..{len(labels) - 1} or a label in {labels}")
    return wsel, tsel, psel


def _stats(out: np.ndarray, done: np.ndarray):
    """Moments over done replicas; ``out (init, data, time, probe)``, ``done (init, data)``."""
    n_i = done.sum(axis=1)  # replicas per initialisation
    x = np.where(done[..., None, None], out, 0.0)
    shape = out.shape[2:]
    nan = np.full(shape, np.nan)
    has, two = n_i >= 1, n_i >= 2
    m_i = x[has].sum(axis=1) / n_i[has, None, None]  # per-initialisation means
    mean = x.sum(axis=(0, 1)) / done.sum() if done.any() else nan
    if two.any():
        dev = np.where(done[two][..., None, None], out[two] - (x[two].sum(axis=1) / n_i[two, None, None])[:, None], 0.0)
        within = ((dev**2).sum(axis=1) / (n_i[two, None, None] - 1)).mean(axis=0)
    else:
        within = nan
    k = int(has.sum())
    if k >= 2:
        spread = m_i.var(axis=0, ddof=1)
        se = np.sqrt(spread / k)
        var_init = spread - within / n_i[has].mean()
    else:
        se = var_init = nan
    return mean, se, within, var_init


def summary(ds: xr.Dataset, width=None, time=None, probe=None) -> list[dict]:
    """One record per selected (width, time, probe); see the module docstring for the columns."""
    wsel, tsel, psel = _select(ds, width, time, probe)
    beta = float(ds.attrs["beta"])
    widths = [int(w) for w in ds["width"].values]
    times = [float(t) for t in ds["time"].values]
    labels = [str(p) for p in ds["probe"].values]
    h = ds["h"].values
    nvp, nvi, vic = ds["nvar_poisson"].values, ds["nvar_iid"].values, ds["var_init_coef"].values
    rows = []
    for N in wsel:
        wi = widths.index(N)
        done = np.asarray(ds["done"].isel(width=wi).values, dtype=bool)  # (init, data)
        out = np.asarray(ds["output"].isel(width=wi).values)  # (init, data, time, probe)
        mean, se, within, var_init = _stats(out, done)
        for ti in tsel:
            for pi in psel:
                rows.append({
                    "width": N,
                    "time": times[ti],
                    "probe": labels[pi],
                    "n": int(done.sum()),
                    "h": float(h[ti, pi]),
                    "mean": float(mean[ti, pi]),
                    "se": float(se[ti, pi]),
                    "nvar": float(N * within[ti, pi]),
                    "nvar_poisson": float(nvp[ti, pi]),
                    "nvar_iid": float(nvi[ti, pi]),
                    "var_init": float(var_init[ti, pi]),
                    "var_init_pred": float(N ** (1 - 2 * beta) * vic[ti, pi]),
                })
    return rows


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def format_records(ds: xr.Dataset, rows: list[dict], prog: list[dict], fmt: str = "table") -> str:
    """Render progress and summary rows as ``table``, ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps({
            "store": {k: ds.attrs.get(k) for k in ("name", "spec_hash", "created", "updated")},
            "progress": prog,
            "rows": [{k: _clean(v) for k, v in r.items()} for r in rows],
        }, indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if _clean(v) is None else v) for k, v in r.items()})
        return buf.getvalue().rstrip("\n")
    lines = [f"store {ds.attrs.get('name', '?')}  spec {str(ds.attrs.get('spec_hash', ''))[:12]}  "
             f"beta {ds.attrs.get('beta')}  L {ds.attrs.get('L')}  updated {ds.attrs.get('updated')}"]
    for p in prog:
        pct = 100.0 * p["replicas_done"] / max(p["replicas"], 1)
        lines.append(f"  N = {p['width']:>6}: {p['replicas_done']:>7}/{p['replicas']} replicas "
                     f"({p['units_done']}/{p['units']} units, {pct:5.1f}%)")
    pw = max([5] + [len(r["probe"]) for r in rows])
    lines += ["", "simulation vs limit vs predictions (N*Var within an initialisation; "
              "Var_init across initialisations)",
              f"{'N':>6} {'t':>5} {'probe':>{pw}} {'n':>6} {'h_t':>8} {'mean':>8} {'se':>7} {'N*Var':>8} "
              f"{'Poisson':>8} {'iid':>8} {'Var_init':>9} {'pred':>9}"]
    for r in rows:
        lines.append(f"{r['width']:>6} {r['time']:5.2f} {r['probe']:>{pw}} {r['n']:>6} {_fix(r['h'], 8)} "
                     f"{_fix(r['mean'], 8)} {_fix(r['se'], 7)} {_fix(r['nvar'], 8)} {_fix(r['nvar_poisson'], 8)} "
                     f"{_fix(r['nvar_iid'], 8)} {_sci(r['var_init'])} {_sci(r['var_init_pred'])}")
    return "\n".join(lines)


def _fix(v: float, w: int) -> str:
    return f"{'-':>{w}}" if not math.isfinite(v) else f"{v:{w}.4f}"


def _sci(v: float) -> str:
    return f"{'-':>9}" if not math.isfinite(v) else f"{v:9.2e}"
