"""Summaries of a result store: progress, and simulation vs limit vs predictions.

For width ``N``, time ``t`` and probe window ``z``, over the replicas marked
done, the numbers of :func:`distntk.estimate.estimate` (one estimator: ``query``
and ``report`` agree on every store, complete, partial or unbalanced):

* ``n``: replicas done; ``mean``: the mean of the per-initialisation means,
  beside the limit ``h``; ``se``: its standard error ``mean_se`` (it includes
  the between-initialisation variability);
* ``nvar``: ``N`` times the pooled within-initialisation variance ``within``,
  beside the predictions ``nvar_poisson`` (Poisson equation, MODEL 5.1) and
  ``nvar_iid`` (the naive i.i.d. one);
* ``var_init``: the between-initialisation component ``between_raw`` (not
  truncated at 0), an estimate of ``Var_theta E[g | theta]``, beside
  ``var_init_pred = N^(1 - 2 beta) var_init_coef`` (MODEL 5.2).

Intervals, verdicts and rates are in the report; this is the quick look that
``distntk query`` prints.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import xarray as xr

from ._text import printable
from .estimate import _estimate_cells
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
        elif p.isascii() and p.isdigit() and int(p) < len(labels):
            psel = [int(p)]
        else:
            raise QueryError(f"--probe {probe}: expected a probe index 0..{len(labels) - 1} or a label in {labels}")
    return wsel, tsel, psel


def summary(ds: xr.Dataset, width: int | None = None, time: float | None = None,
            probe: int | str | None = None) -> list[dict]:
    """One record per selected (width, time, probe); see the module docstring for the columns."""
    wsel, tsel, psel = _select(ds, width, time, probe)
    # the estimator's arrays, without its Dataset; the rows are the output's: its risk is not estimated
    est, _, _ = _estimate_cells(ds, risk=False)
    beta = float(ds.attrs["beta"])
    v = ds.variables
    widths = [int(w) for w in v["width"].values]
    times = [float(t) for t in v["time"].values]
    labels = [str(p) for p in v["probe"].values]
    dims = ("width", "time", "probe")
    a = {}
    for k in ("n_obs", "h", "mean", "mean_se", "within", "between_raw"):
        own, values, _ = est[k]
        a[k] = values if tuple(own) == dims else np.transpose(values, [list(own).index(d) for d in dims])
    nvp, nvi, vic = (_on(v[n], ("time", "probe")) for n in ("nvar_poisson", "nvar_iid", "var_init_coef"))
    rows = []
    for N in wsel:
        wi = widths.index(N)
        for ti in tsel:
            for pi in psel:
                rows.append({
                    "width": N,
                    "time": times[ti],
                    "probe": labels[pi],
                    "n": int(a["n_obs"][wi, ti, pi]),
                    "h": float(a["h"][wi, ti, pi]),
                    "mean": float(a["mean"][wi, ti, pi]),
                    "se": float(a["mean_se"][wi, ti, pi]),
                    "nvar": float(N * a["within"][wi, ti, pi]),
                    "nvar_poisson": float(nvp[ti, pi]),
                    "nvar_iid": float(nvi[ti, pi]),
                    "var_init": float(a["between_raw"][wi, ti, pi]),
                    "var_init_pred": float(N ** (1 - 2 * beta) * vic[ti, pi]),
                })
    return rows


def _on(var: xr.Variable, dims: tuple) -> np.ndarray:
    """``var``'s values with its dims in the order ``dims``."""
    return var.values if tuple(var.dims) == dims else var.transpose(*dims).values


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
            w.writerow({k: ("" if _clean(v) is None else printable(v) if isinstance(v, str) else v)
                        for k, v in r.items()})
        return buf.getvalue().rstrip("\n")
    a = {k: printable(ds.attrs.get(k, "?" if k == "name" else "" if k == "spec_hash" else None))
         for k in ("name", "spec_hash", "beta", "L", "updated")}
    lines = [f"store {a['name']}  spec {a['spec_hash'][:12]}  beta {a['beta']}  L {a['L']}  updated {a['updated']}"]
    for p in prog:
        pct = 100.0 * p["replicas_done"] / max(p["replicas"], 1)
        lines.append(f"  N = {p['width']:>6}: {p['replicas_done']:>7}/{p['replicas']} replicas "
                     f"({p['units_done']}/{p['units']} units, {pct:5.1f}%)")
    if ds.attrs.get("memory_method") == "sampled":
        lines.append(_sampled_note(ds))
    rows = [{**r, "probe": printable(r["probe"])} for r in rows]
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


def _sampled_note(ds: xr.Dataset) -> str:
    """The sampled limit's line: how it was estimated and its largest Monte Carlo errors."""
    a = ds.attrs

    def rel(name):
        v, se = ds[name].values, ds[name + "_se"].values if name + "_se" in ds else np.nan
        return float(np.nanmax(np.abs(se) / np.maximum(np.abs(v), 1e-300))) if np.size(v) else float("nan")

    h_se = float(np.nanmax(ds["h_se"].values)) if "h_se" in ds else float("nan")
    return (f"  limit over the infinite past, sampled (L0 = {a.get('memory_L0')}, {a.get('memory_segments')} "
            f"segments, {a.get('memory_path_steps')} steps): Monte Carlo standard errors up to {h_se:.1e} on h_t, "
            f"{rel('nvar_poisson'):.1e} relative on Poisson, {rel('nvar_iid'):.1e} on iid, "
            f"{rel('var_init_coef'):.1e} on pred; measured memory correction "
            f"{float(a.get('memory_correction_h', np.nan)):.1e} on h_t")


def _fix(v: float, w: int) -> str:
    return f"{'-':>{w}}" if not math.isfinite(v) else f"{v:{w}.4f}"


def _sci(v: float) -> str:
    return f"{'-':>9}" if not math.isfinite(v) else f"{v:9.2e}"
