"""The rows of a result store: progress per width, and one record per (width, time, probe) that sets
the simulation beside the limit and the predictions.

For width ``N``, time ``t`` and probe window ``z``, over the replicas marked done, the numbers of
:func:`distntk.estimator.estimate` (one estimator: ``query``, ``report`` and the catalog agree on every
store, complete, partial or unbalanced).  The columns, each with its one-line meaning, are
:data:`COLUMNS`: one list, one spelling per concept, for the query table's header, the CSV header, the
JSON keys, the catalog's rows and the column table of docs/guides/laptop.md (``tests/test_cli.py``
holds them equal):

* ``mean``: the mean of the per-initialisation means, beside the limit ``h``
  (``h_t``, docs/model.md#limit-ode); ``se``: its standard error (the estimator's
  ``mean_se``; it includes the between-initialisation variability);
* ``nvar``: ``N`` times the pooled within-initialisation variance ``within``,
  beside the predictions ``nvar_poisson`` (``V_t``, Poisson equation,
  docs/model.md#poisson) and ``nvar_iid`` (the naive i.i.d. one, docs/model.md#iid);
* ``var_init``: the between-initialisation component ``between_raw`` (not
  truncated at 0), an estimate of ``Var_theta E[g | theta]``, beside
  ``var_init_pred = N^(1 - 2 beta) var_init_coef`` (``var_init_coef`` =
  ``E_t C_0 E_t^T``, docs/model.md#init).

Intervals, verdicts and rates are in the report.

Selecting a probe (``probe=``, ``--probe``): a probe's label is its window of
states, ``L`` digits (``"000000"``).  A value equal to a label selects that probe;
a value of the labels' form (``L`` digits) that equals none is an error listing
the labels, never read as an index (``000001`` is not probe 1).  An index is a
non-negative integer written without leading zeros and not of the labels' form
(so ``1`` with six-digit labels, never ``01`` nor ``000001``), or a Python
``int``; outside ``0..P-1`` it is an error naming that range.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .errors import DistntkError
from .estimator import estimate_cells
from .store.schema import VAR, done_units

__all__ = ["COLUMNS", "QueryError", "progress", "summary"]


class QueryError(DistntkError, ValueError):
    """A selection that the store cannot answer; one-line message."""


COLUMNS: tuple[tuple[str, str], ...] = (
    ("width", "N, the network width"),
    ("time", "t, the training time"),
    ("probe", "the probe window z, its states oldest first"),
    ("n", "replicas done (initialisations x data sequences)"),
    ("h", "the kernel limit h_t of g at (t, z)"),
    ("mean", "the mean of the per-initialisation means of g"),
    ("se", "the standard error of mean; it includes the variability across initialisations"),
    ("nvar", "N times the pooled variance of g across data sequences within an initialisation"),
    ("nvar_poisson", "the Poisson-equation prediction V_t of nvar"),
    ("nvar_iid", "the naive i.i.d. prediction of nvar"),
    ("var_init", "the variance of g across initialisations (between-init component, not truncated at 0)"),
    ("var_init_pred", "its prediction N^(1-2 beta) E_t C_0 E_t^T"),
    ("r_inf", "nvar / nvar_poisson extrapolated to N -> infinity across the store's widths: r_inf in "
              "r_inf (1 + c N^-gamma), the same in every row of the cell"),
    ("r_inf_lo", "the lower end of r_inf's 95 % interval (the estimator's own uncertainty included)"),
    ("r_inf_hi", "the upper end of r_inf's 95 % interval"),
    ("gamma", "the exponent gamma of the fit (profiled over 0.02 to 1.5; needs 3 widths or more)"),
    ("limit", "consistent (the interval holds 1), inconsistent, or n/a"),
)
"""The columns of ``distntk query`` (table, CSV, JSON) and of docs/guides/laptop.md's table: ``(name, meaning)``."""

def progress(ds: xr.Dataset) -> list[dict]:
    """Per width: replicas and units (data blocks) done, and in total."""
    done = np.asarray(ds[VAR.done].transpose(VAR.width, VAR.init, VAR.data).values, dtype=bool)
    units = done_units(done, int(ds.attrs["block"]))  # (width, init, block)
    out = []
    for wi, N in enumerate(ds[VAR.width].values):
        out.append({
            "width": int(N),
            "replicas_done": int(done[wi].sum()),
            "replicas": int(done[wi].size),
            "units_done": int(units[wi].sum()),
            "units": int(units[wi].size),
        })
    return out


def _select(ds: xr.Dataset, width=None, time=None, probe=None):
    widths = [int(w) for w in ds[VAR.width].values]
    wsel = widths
    if width is not None:
        if int(width) not in widths:
            raise QueryError(f"--width {width}: not in the store's widths {widths}")
        wsel = [int(width)]
    times = [float(t) for t in ds[VAR.time].values]
    tsel = list(range(len(times)))
    if time is not None:
        hit = [i for i, t in enumerate(times) if math.isclose(t, float(time), rel_tol=1e-9, abs_tol=1e-12)]
        if not hit:
            raise QueryError(f"--time {time}: not on the store's time grid {times}")
        tsel = hit
    labels = [str(p) for p in ds[VAR.probe].values]
    psel = list(range(len(labels))) if probe is None else [_probe_index(probe, labels)]
    return wsel, tsel, psel


def _probe_index(probe: int | str, labels: list[str]) -> int:
    """The position of ``probe`` (a label, or an index) in ``labels``; the rule is the module docstring's."""
    last = len(labels) - 1
    shown = ", ".join(labels[:8]) + (f", ... ({len(labels)} in all)" if len(labels) > 8 else "")

    def digits(v: str) -> bool:
        return v.isascii() and v.isdigit()

    if isinstance(probe, int) and not isinstance(probe, bool):
        index = probe
    else:
        p = str(probe)
        if p in labels:
            return labels.index(p)
        widths = {len(lab) for lab in labels}
        form = widths.pop() if len(widths) == 1 and all(digits(lab) for lab in labels) else None
        if digits(p) and len(p) == form:
            raise QueryError(f"--probe {p}: no probe has this label; the store's probe labels are {shown} "
                             f"(an index 0..{last} is written with fewer digits than a label)")
        if not digits(p) or (p != "0" and p.startswith("0")):
            raise QueryError(f"--probe {p}: neither a probe label ({shown}) nor an index 0..{last} "
                             "(an index is written without leading zeros)")
        index = int(p)
    if not 0 <= index <= last:
        raise QueryError(f"--probe {probe}: index out of range 0..{last} (the store's probe labels are {shown})")
    return index


def summary(ds: xr.Dataset, width: int | None = None, time: float | None = None,
            probe: int | str | None = None) -> list[dict]:
    """One record per selected (width, time, probe); see the module docstring for the columns."""
    wsel, tsel, psel = _select(ds, width, time, probe)
    # the estimator's arrays, without its Dataset; the rows are the output's: its risk is not estimated
    est, coords, attrs = estimate_cells(ds, risk=False)
    beta = float(ds.attrs["beta"])
    v = ds.variables
    widths = [int(w) for w in v[VAR.width].values]
    times = [float(t) for t in v[VAR.time].values]
    labels = [str(p) for p in v[VAR.probe].values]
    dims = ("width", "time", "probe")
    a = {}
    for k in ("n_obs", "h", "mean", "mean_se", "within", "between_raw"):
        own, values, _ = est[k]
        a[k] = values if tuple(own) == dims else np.transpose(values, [list(own).index(d) for d in dims])
    nvp, nvi, vic = (_on(v[n], (VAR.time, VAR.probe)) for n in (VAR.nvar_poisson, VAR.nvar_iid, VAR.var_init_coef))
    lim = _limit(est, coords, attrs, len(widths), len(times), len(labels))
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
                    **{k: (str(x[ti, pi]) if k == "limit" else _number(x[ti, pi])) for k, x in lim.items()},
                })
    return rows


def _number(v) -> float | None:
    """A float, or None where there is none (no extrapolation: equal across processes, unlike NaN)."""
    v = float(v)
    return v if math.isfinite(v) else None


def _limit(est: dict, coords: dict, attrs: dict, W: int, T: int, P: int) -> dict:
    """The Poisson ratio's extrapolation to ``N -> infinity`` per (time, probe)
    (:func:`distntk.estimator.extrapolate`, gamma fitted), as ``{column: (T, P) array}``."""
    from .estimator import extrapolate

    if W < 3:  # a fitted exponent needs three widths: the columns say n/a
        nan = np.full((T, P), np.nan)
        return {"r_inf": nan, "r_inf_lo": nan, "r_inf_hi": nan, "gamma": nan, "limit": np.full((T, P), "n/a")}
    ext = extrapolate(xr.Dataset(est, coords=coords, attrs=attrs))
    x = ext.sel(quantity="poisson").transpose("time", "probe")
    verdict = np.vectorize(lambda s: s.replace(" in the limit", ""), otypes=[object])(x["verdict_limit"].values)
    return {"r_inf": x["r_inf"].values, "r_inf_lo": x["r_inf_lo"].values, "r_inf_hi": x["r_inf_hi"].values,
            "gamma": x["gamma"].values, "limit": verdict}


def _on(var: xr.Variable, dims: tuple) -> np.ndarray:
    """``var``'s values with its dims in the order ``dims``."""
    return var.values if tuple(var.dims) == dims else var.transpose(*dims).values


