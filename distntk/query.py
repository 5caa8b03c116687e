"""``distntk query``: a result store's progress and rows (:mod:`distntk.rows`) as a table, CSV or JSON.

The rows and their columns (:data:`distntk.rows.COLUMNS`) are built in :mod:`distntk.rows`, which the
catalog uses too; this module only renders them.  Intervals, verdicts and rates are in the report; this
is the quick look that ``distntk query`` prints.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import xarray as xr

from ._text import printable
from .rows import COLUMNS, QueryError, progress, summary

__all__ = ["COLUMNS", "QueryError", "progress", "summary", "format_records"]

_NAMES = [name for name, _ in COLUMNS]
# the table's number formats; every other column is a float with 4 decimals
_FORMATS = {"width": "d", "time": ".2f", "probe": "s", "n": "d", "var_init": ".2e", "var_init_pred": ".2e",
            "r_inf": ".3f", "r_inf_lo": ".3f", "r_inf_hi": ".3f", "gamma": ".2f", "limit": "s"}


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
        w = csv.DictWriter(buf, fieldnames=_NAMES, lineterminator="\n")
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
    if ds.attrs.get("memory_method") in ("sampled", "ar1", "sampler"):
        lines.append(_sampled_note(ds))
    rows = [{**r, "probe": printable(r["probe"])} for r in rows]
    lines += ["", "simulation vs limit vs predictions (columns: docs/guides/laptop.md, \"Query columns\")"]
    lines += _fixed_width(rows, _NAMES, _FORMATS)
    return "\n".join(lines)


def _sampled_note(ds: xr.Dataset) -> str:
    """The sampled limit's line: how it was estimated and its largest Monte Carlo errors."""
    a = ds.attrs

    def rel(name):
        v, se = ds[name].values, ds[name + "_se"].values if name + "_se" in ds else np.nan
        return float(np.nanmax(np.abs(se) / np.maximum(np.abs(v), 1e-300))) if np.size(v) else float("nan")

    h_se = float(np.nanmax(ds["h_se"].values)) if "h_se" in ds else float("nan")
    if a.get("memory_method") in ("ar1", "sampler"):
        what = "AR(1) input (docs/model.md#ar1)" if a["memory_method"] == "ar1" else \
            "sampler input (chain.sampler, docs/model.md#sampler)"
        return (f"  {what}: probes are windows of input values, the limit is estimated "
                f"along {a.get('memory_segments')} segments of {a.get('memory_path_steps')} steps: Monte Carlo "
                f"standard errors up to {h_se:.1e} on h_t, {rel('nvar_poisson'):.1e} relative on Poisson, "
                f"{rel('nvar_iid'):.1e} on iid, {rel('var_init_coef'):.1e} on pred")
    return (f"  limit over the infinite past, sampled (L0 = {a.get('memory_L0')}, {a.get('memory_segments')} "
            f"segments, {a.get('memory_path_steps')} steps): Monte Carlo standard errors up to {h_se:.1e} on h_t, "
            f"{rel('nvar_poisson'):.1e} relative on Poisson, {rel('nvar_iid'):.1e} on iid, "
            f"{rel('var_init_coef'):.1e} on pred; measured memory correction "
            f"{float(a.get('memory_correction_h', np.nan)):.1e} on h_t")


def _fixed_width(rows: list[dict], names: list[str], formats: dict) -> list[str]:
    """``rows`` as right-aligned text columns headed by ``names`` (a non-finite float prints ``-``)."""
    def text(r, k):
        v = r[k]
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return "-"
        return f"{v:{formats.get(k, '.4f')}}"

    cells = [[text(r, k) for k in names] for r in rows]
    w = [max([len(k)] + [len(c[i]) for c in cells]) for i, k in enumerate(names)]
    return [" ".join(f"{c:>{wi}}" for c, wi in zip(line, w, strict=True)) for line in [names, *cells]]
