"""Integrity of a result store: damaged units, outliers, predictions; ``distntk verify``.

A unit marked ``done`` is *damaged* when one of its chunks does not decode
(every chunk carries a crc32c checksum, :func:`distntk.store._allocate`; a
store made before that fails Zstd decoding instead), when its outputs or risk
are not finite (a deleted chunk reads as its NaN fill value), or when its
``unit_writes`` is below 1.  :meth:`distntk.store.ResultStore.scan` finds them;
:meth:`~distntk.store.ResultStore.pending` hands them back to ``distntk run``,
which recomputes them from their seeds, bit for bit.

An *outlier* is a done unit whose mean lies far outside the distribution of
the other units' means of the same width.  For width ``N`` and each (time,
probe) cell, with ``m_u`` the mean of unit ``u``'s replicas::

    z_u = (m_u - median_u m_u) / (1.4826 MAD_u m_u)

(1.4826 MAD is the standard deviation for Gaussian ``m_u``; median and MAD
ignore a few wild units).  A unit is flagged when ``|z_u| >`` :data:`OUTLIER_Z`
``= 10`` in any cell, among at least :data:`OUTLIER_MIN_UNITS` ``= 8`` units
(cells whose MAD is 0 are skipped).  For Gaussian unit means a false alarm at
10 robust standard deviations has probability about ``1e-23`` per unit and
cell; the unit means of a real store have heavier tails (they share
initialisations), so the threshold leaves a wide margin, and a unit scaled by
10 is far beyond it.  An outlier is not proof of damage: ``verify`` names it;
``query`` and ``report`` leave it out with the damaged units (one warning line).

Predictions (``h``, ``nvar_poisson``, ...) must be present and finite.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import xarray as xr

from ._text import one_line
from .experiment import Unit, unit_grid
from .store import StoreError, open_result_store, open_store

__all__ = ["verify", "open_checked", "outliers", "damage_warning", "OUTLIER_Z", "OUTLIER_MIN_UNITS",
           "PREDICTIONS"]

OUTLIER_Z = 10.0
OUTLIER_MIN_UNITS = 8
_MAD_SCALE = 1.4826
PREDICTIONS = ("h", "nvar_poisson", "nvar_iid", "var_init_coef", "f", "pi_probe", "probe_window")
_RISK_PREDICTIONS = ("risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef")


def _unit_text(u: Unit) -> str:
    return f"width {u.width}, init {u.init}, data {u.data_start}-{u.data_stop - 1}"


def outliers(output: np.ndarray, done: np.ndarray, widths: list[int], block: int,
             skip: Iterable[Unit] = ()) -> dict[Unit, str]:
    """Done units whose mean is an outlier among their width's units (module docstring).

    ``output (width, init, data, time, probe)``, ``done (width, init, data)``;
    ``skip``: units left out of the comparison (the damaged ones).
    """
    W, I, R = done.shape
    found = {}
    for wi, N in enumerate(widths):
        units, means = [], []
        for u in (x for x in _grid(N, I, R, block) if x not in skip):
            sl = slice(u.data_start, u.data_stop)
            if done[wi, u.init, sl].all():
                units.append(u)
                means.append(output[wi, u.init, sl].mean(axis=0))  # (time, probe)
        if len(units) < OUTLIER_MIN_UNITS:
            continue
        m = np.stack(means)  # (units, time, probe)
        med = np.median(m, axis=0)
        mad = _MAD_SCALE * np.median(np.abs(m - med), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(mad > 0, np.abs(m - med) / np.where(mad > 0, mad, 1.0), 0.0)
        for k, u in enumerate(units):
            if z[k].max() > OUTLIER_Z:
                t, p = np.unravel_index(int(np.argmax(z[k])), z[k].shape)
                found[u] = (f"outlier: unit mean {float(m[k, t, p]):.4g} is {float(z[k, t, p]):.1f} robust standard "
                            f"deviations from the median {float(med[t, p]):.4g} of {len(units)} units (time index "
                            f"{t}, probe index {p}; threshold {OUTLIER_Z:g})")
    return found


def _grid(N, I, R, block):
    return unit_grid([N], I, R, block)


def _problems(path, storage_options=None):
    """``(store, arrays, bad units {Unit: why}, prediction problems [str])``."""
    rs = open_result_store(path, mode="r", storage_options=storage_options)
    arrays, damaged = rs.scan()
    bad = dict(damaged)
    bad.update(outliers(arrays["output"], arrays["done"].astype(bool), rs.widths, rs.block, skip=damaged))
    names = PREDICTIONS + (_RISK_PREDICTIONS if "risk" in rs.group else ())
    preds = []
    for name in names:
        if name not in rs.group:
            preds.append(f"predictions: {name!r} is missing")
            continue
        try:
            v = np.asarray(rs.group[name][...])
        except (ValueError, RuntimeError) as exc:
            preds.append(f"predictions: {name!r} does not decode ({one_line(exc, 80)})")
            continue
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            preds.append(f"predictions: {name!r} has non-finite values (a missing chunk?)")
    return rs, arrays, bad, preds


def verify(path: str | os.PathLike, storage_options: dict | None = None) -> list[str]:
    """Everything wrong with the store at ``path``, one line each (empty if nothing).

    Damaged units and outliers as ``width N, init i, data a-b: what``, in store
    order; then missing or damaged predictions.
    """
    _, _, bad, preds = _problems(path, storage_options)
    return [f"{_unit_text(u)}: {why}" for u, why in sorted(bad.items())] + preds


def damage_warning(bad: dict) -> str:
    """One line naming the damaged units (the first few, then a count)."""
    units = sorted(bad)
    named = "; ".join(_unit_text(u) for u in units[:5]) + (f"; and {len(units) - 5} more" if len(units) > 5 else "")
    return one_line(f"{len(units)} damaged unit(s) left out (run `distntk verify` for details, rerun `distntk "
                    f"run` to recompute them): {named}", 600)


def open_checked(path: str | os.PathLike, storage_options: dict | None = None) -> tuple[xr.Dataset, dict]:
    """The store as an in-memory Dataset with its damaged units and outliers left out (not done).

    Returns ``(ds, bad)``, ``bad`` mapping each left-out unit to the reason;
    when there are any, ``ds.attrs["distntk_left_out"]`` holds :func:`damage_warning`.
    Missing or damaged predictions are a :class:`~distntk.store.StoreError`
    (one line): without them there is nothing to compare with.
    """
    rs, arrays, bad, preds = _problems(path, storage_options)
    if preds:
        raise StoreError(f"{path} lost its predictions: {preds[0].removeprefix('predictions: ')}; the store "
                         "cannot be compared with the limit (recreate it with distntk run)")
    ds = open_store(path, storage_options)
    widths = rs.widths
    replaced = {"done": arrays["done"].astype(bool), "unit_writes": arrays["unit_writes"]}
    for name in ("output", "risk"):
        if name in arrays:
            replaced[name] = arrays[name].copy()
    for u in bad:  # left out: not done, and NaN like a unit never written
        where = (widths.index(u.width), u.init, slice(u.data_start, u.data_stop))
        replaced["done"][where] = False
        for name in ("output", "risk"):
            if name in replaced:
                replaced[name][where] = np.nan
    out = {}
    for name, var in ds.data_vars.items():
        if name in replaced:
            out[name] = (var.dims, replaced[name], var.attrs)
        else:
            try:
                out[name] = var.load()
            except (ValueError, RuntimeError) as exc:
                raise StoreError(f"{path}: variable {name!r} does not decode ({one_line(exc, 80)})") from None
    attrs = dict(ds.attrs)
    if bad:
        attrs["distntk_left_out"] = damage_warning(bad)
    loaded = xr.Dataset(out, coords={k: c.load() for k, c in ds.coords.items()}, attrs=attrs)
    return loaded, bad
