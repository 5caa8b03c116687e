"""Variance components, comparisons with the limit, convergence rates (docs/model.md#estimator).

Everything here reads a result-store ``xarray.Dataset`` (docs/reference/store.md: ``output``
on ``(width, init, data, time, probe)``, ``risk`` on ``(width, init, data, time)``,
``done`` on ``(width, init, data)`` and the predictions) and returns
``xarray.Dataset`` objects, so the same numbers serve the report and a notebook.
No Ray, no plotting.

Model.  For one width ``N`` and one cell -- a (time ``t``, probe ``z``) pair, or
the stationary risk at ``t`` -- the store holds ``y_ij`` for init ``i`` and data
sequence ``j``.  One-way random effects::

    y_ij = mu + a_i + e_ij,   Var a_i = sigma_b^2 (across inits),
                              Var e_ij = sigma_w^2 (across data at a fixed init)

    sigma_w^2 = Var(g | theta)           predicted  V_t(z, z) / N                  (docs/model.md (5.8))
    sigma_b^2 = Var_theta E[g | theta]   predicted  N^{1-2 beta} (E_t C_0 E_t^T)(z, z)   (5.12)
    mu        = E g                      predicted  h_t(z)                          (4.5)

Missing replicas.  Only replicas with ``done`` are used; init ``i`` contributes
its ``n_i >= 1`` done replicas (the *unbalanced* form; nothing is discarded),
inits with ``n_i = 0`` drop out.  With ``n_i = n`` for all inits every formula
below is the classical balanced one.

Within.  ``s_i^2`` is init ``i``'s sample variance, ``df_w = sum_i (n_i - 1)``::

    within = MSW = sum_i (n_i - 1) s_i^2 / df_w
    95% interval  [df_w MSW / chi2_{df_w}(0.975),  df_w MSW / chi2_{df_w}(0.025)]

exact when ``e`` is Gaussian with one ``sigma_w`` for all inits.  At finite ``N``
``Var(g | theta)`` itself varies with ``theta`` (the initial offset
``g_0 = O(N^{1/2-beta})`` shifts the residual that drives the fluctuations): on
the docs/model.md#reference-case chain (16 inits x 64 data, ``N = 256..512``) the standard deviation
of the per-init ``s_i^2`` was 1.2-1.5 times what the chi-square law allows, so
the chi-square interval
understates the uncertainty of ``MSW`` as an estimate of
``E_theta Var(g | theta)``, the quantity the Poisson prediction is about.  The
comparisons therefore use the *init-robust* standard error (a sandwich over
inits, ``I'`` the inits with ``n_i >= 2``, ``w_i = (n_i - 1) / df_w``)::

    within_se^2 = I' / (I' - 1) sum_i w_i^2 (s_i^2 - MSW)^2      (t with I' - 1 df)
    within_dispersion = within_se^2 / (2 MSW^2 / df_w)          (about 1 if sigma_w is common)

which is unbiased whatever the spread of ``Var(g | theta)`` and whatever the
kurtosis of ``e``.  The comparison interval is taken on the log scale,
``MSW exp(+- t_{I'-1} within_se / MSW)``: the ``s_i^2`` are right-skewed, and
the log scale keeps the coverage near nominal where the chi-square interval
falls to 0.68-0.87 (simulations: ``docs/estimator-simulations.md``).

Between (unweighted means, Thomas & Hultquist 1978; the balanced ANOVA when
``n_i = n``).  ``ybar_i`` init means over the ``I`` inits,
``n~ = I / sum_i 1/n_i``::

    S_1^2 = n~ sum_i (ybar_i - ybar)^2 / (I - 1)      E S_1^2 = sigma_w^2 + n~ sigma_b^2
    between_raw = (S_1^2 - MSW) / n~                  (may be negative)
    between     = max(between_raw, 0)

Interval: the modified large-sample (MLS) interval of Graybill & Wang (1980) in
the form of Ting, Burdick, Graybill, Jeyaratnam & Lu (1990) for
``c1 E S_1^2 - c2 E MSW`` with ``c1 = c2 = 1/n~`` (Burdick & Graybill 1992, 3.2),
with ``a = (1 - level) / 2``, ``F_q`` upper-``a`` and ``F'_q`` lower-``a``
quantiles of ``chi2_{n_q} / n_q`` (``n_1 = I - 1``, ``n_2 = df_w``) and
``F_12, F'_12`` those of ``F(n_1, n_2)``::

    G_1 = 1 - 1/F_1, H_1 = 1/F'_1 - 1, G_2 = 1 - 1/F_2, H_2 = 1/F'_2 - 1
    G_12 = ((F_12 - 1)^2 - G_1^2 F_12^2 - H_2^2) / F_12
    H_12 = ((1 - F'_12)^2 - H_1^2 F'_12^2 - G_2^2) / F'_12
    lo = raw - sqrt(G_1^2 c1^2 S_1^4 + H_2^2 c2^2 MSW^2 + G_12 c1 c2 S_1^2 MSW)
    hi = raw + sqrt(H_1^2 c1^2 S_1^4 + G_2^2 c2^2 MSW^2 + H_12 c1 c2 S_1^2 MSW)

then truncated at 0 (``[0, 0]`` when even ``hi < 0``: the data cannot tell the
between-init variance from zero).  Why MLS and not Satterthwaite or a bootstrap
over inits: MLS is closed-form and near nominal everywhere, Satterthwaite is
only right when the between term dominates, and the bootstrap cannot work with
4-16 inits (coverage simulations: ``docs/estimator-simulations.md``;
``tests/test_estimate.py`` checks the coverage).  For unbalanced designs it is
applied to the unweighted-means ``S_1^2`` with ``n~`` (Burdick & Graybill 1992,
ch. 6): approximate, and near nominal in the simulations.

Mean.  ``mean = ybar = mean_i ybar_i`` with ``mean_se^2 = sum_i (ybar_i - ybar)^2
/ (I (I - 1))`` (``= S_1^2 / (n~ I)``: it contains the between-init variability
as well as the within term) and ``t`` quantiles with ``I - 1`` df.

Comparisons (at ``verdict_level``, default 99%).  Each gives a ratio or
difference, its interval and a verdict ``"consistent"`` (the interval holds 1,
resp. 0), ``"inconsistent"`` or ``"n/a"``::

    ratio_poisson = N within / nvar_poisson     x exp(+- t_{I'-1} within_se / within)   (headline)
    ratio_iid     = N within / nvar_iid         same interval
    ratio_init    = between / (N^{1-2beta} var_init_coef)     MLS interval
    mean_error    = mean - h                    +- t_{I-1} mean_se

A sampled (infinite-past) limit's predictions carry Monte Carlo standard errors
(``h_se``, ``nvar_poisson_se``, ...; :mod:`distntk.longmem`); they widen the
intervals: in quadrature on the log scale for the ratios
(``sqrt((within_se / within)^2 + (pred_se / pred)^2)``; for ``ratio_init`` a
factor ``exp(+- z pred_se / pred)`` on the MLS interval) and
``sqrt(mean_se^2 + h_se^2)`` for the mean.

The verdicts are per cell: with many cells about ``1 - verdict_level`` of them
come out inconsistent by chance even when the prediction is exact.

Rates (docs/model.md#rates).  Across widths, for ``q_N`` = ``|mean - h|``,
``|ratio_poisson - 1|``, ``|ratio_init - 1|``, fit ``log q_N = c + s log N`` by
weighted least squares with delta-method variances
``Var log q = (se_q / q)^2`` (``se`` of the ratio: ``within_se`` resp. the
large-sample ``sqrt(2 (S_1^4/(I-1) + MSW^2/df_w)) / n~``, over the prediction).
The slope's interval is ``s +- z se_s`` with ``se_s`` from the known
variances, inflated by ``sqrt(chi2 / dof)`` when the fit is worse than its
errors say (only with >= 3 widths).  Points with ``q < 2 se_q`` are noise, not a
magnitude, and are left out of the fit (their number is reported).  The
selection pushes kept values near the threshold up, which flattens a fitted
decay: a slope from few resolved widths is indicative, not a measurement.
The orders docs/model.md#rates implies are printed next to the slopes: init fluctuations
``N^{1/2-beta}``, data fluctuations ``N^{-1/2}``.  They are tested directly on
the fluctuation sizes ``sqrt(between)`` and ``sqrt(within)`` (same fit; ``se``
by the delta method, ``se(sqrt v) = se(v) / (2 sqrt v)``), with a verdict at 99%.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xarray as xr
from scipy import stats

from .errors import DistntkError
from .experiment import Unit
from .store.schema import VAR, done_units, se_name

__all__ = [
    "EstimateError",
    "GAMMAS",
    "convergence_rates",
    "estimate",
    "extrapolate",
    "missing_units",
    "variance_components",
]

class EstimateError(DistntkError, ValueError):
    """A dataset the estimator cannot use; the message says what was expected."""


# --------------------------------------------------------------------------- components

_QUANTILES_MAX_SIZE = 4096  # arguments of more elements are not kept (a large store: the call is a small part)


def _quantile(dist, method: str, p: float, *df):
    """``getattr(dist, method)(p, *df)``, kept for arguments seen before.

    A ``scipy.stats`` call spends ~0.1 ms on argument handling, more than the whole
    decomposition of a small store; the degrees of freedom repeat across the stores of a
    catalog, so the values are kept by the exact bytes of the arguments.  The same
    function on the same numbers: the same values as calling it directly.
    """
    args = [np.asarray(a, dtype=float) for a in df]
    if sum(a.size for a in args) > _QUANTILES_MAX_SIZE:
        return getattr(dist, method)(p, *args)
    return _kept_quantile(dist.name, method, float(p), *((a.shape, a.tobytes()) for a in args))


@lru_cache(maxsize=1024)
def _kept_quantile(name: str, method: str, p: float, *keys):
    """:func:`_quantile`'s kept values: ``keys`` are each argument's ``(shape, float64 bytes)``."""
    args = [np.frombuffer(raw, dtype=float).reshape(shape) for shape, raw in keys]
    values = getattr(getattr(stats, name), method)(p, *args)
    if isinstance(values, np.ndarray):
        values.flags.writeable = False  # shared by every caller with these arguments
    return values


def _mls(S1, n1, S2, n2, c, level):
    """MLS interval for ``c (E S1 - E S2)``; ``S1, S2`` mean squares with ``n1, n2`` df."""
    a = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        F1, F1p = _quantile(stats.chi2, "isf", a, n1) / n1, _quantile(stats.chi2, "ppf", a, n1) / n1
        F2, F2p = _quantile(stats.chi2, "isf", a, n2) / n2, _quantile(stats.chi2, "ppf", a, n2) / n2
        F12, F12p = _quantile(stats.f, "isf", a, n1, n2), _quantile(stats.f, "ppf", a, n1, n2)
        G1, H1, G2, H2 = 1 - 1 / F1, 1 / F1p - 1, 1 - 1 / F2, 1 / F2p - 1
        G12 = ((F12 - 1) ** 2 - G1**2 * F12**2 - H2**2) / F12
        H12 = ((1 - F12p) ** 2 - H1**2 * F12p**2 - G2**2) / F12p
        raw = c * (S1 - S2)
        VL = c**2 * (G1**2 * S1**2 + H2**2 * S2**2 + G12 * S1 * S2)
        VU = c**2 * (H1**2 * S1**2 + G2**2 * S2**2 + H12 * S1 * S2)
        lo = raw - np.sqrt(np.maximum(VL, 0.0))
        hi = raw + np.sqrt(np.maximum(VU, 0.0))
    return np.maximum(lo, 0.0), np.maximum(hi, 0.0)


def _components(y: np.ndarray, m: np.ndarray, level: float) -> dict[str, np.ndarray]:
    """Core on arrays: ``y, m`` of shape ``(I, R, C)`` (``m`` the done mask); results ``(C,)``."""
    m = m & np.isfinite(y)
    y = np.where(m, y, 0.0)
    n = m.sum(axis=1).astype(float)  # (I, C)
    has = n > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ybar = np.where(has, y.sum(axis=1) / np.where(has, n, 1.0), np.nan)
        dev2 = np.where(m, (y - np.where(has, ybar, 0.0)[:, None, :]) ** 2, 0.0)
        ss_i = dev2.sum(axis=1)  # (I, C)
        df_i = np.maximum(n - 1.0, 0.0)
        df_w = df_i.sum(axis=0)
        msw = ss_i.sum(axis=0) / df_w
        s2_i = np.where(df_i > 0, ss_i / np.where(df_i > 0, df_i, 1.0), np.nan)
        w_i = df_i / df_w
        i_w = (df_i > 0).sum(axis=0).astype(float)
        var_rob = i_w / (i_w - 1.0) * np.nansum(w_i**2 * (s2_i - msw) ** 2, axis=0)
        within_se = np.sqrt(var_rob)
        dispersion = var_rob / (2.0 * msw**2 / df_w)
        a = (1.0 - level) / 2.0
        within_lo = df_w * msw / _quantile(stats.chi2, "isf", a, df_w)
        within_hi = df_w * msw / _quantile(stats.chi2, "ppf", a, df_w)

        n_init = has.sum(axis=0).astype(float)
        n_tilde = n_init / np.where(has, 1.0 / np.where(has, n, 1.0), 0.0).sum(axis=0)
        mean = np.nansum(np.where(has, ybar, 0.0), axis=0) / n_init
        var_means = np.nansum((ybar - mean) ** 2, axis=0) / (n_init - 1.0)
        S1 = n_tilde * var_means
        mean_se = np.sqrt(var_means / n_init)
        between_raw = (S1 - msw) / n_tilde
        between_lo, between_hi = _mls(S1, n_init - 1.0, msw, df_w, 1.0 / n_tilde, level)
        between_se = np.sqrt(2.0 * (S1**2 / (n_init - 1.0) + msw**2 / df_w)) / n_tilde
    bad_w = ~(df_w > 0)
    bad_b = ~((n_init >= 2) & (df_w > 0))
    for arr in (msw, within_lo, within_hi):
        arr[bad_w] = np.nan
    for arr in (within_se, dispersion):
        arr[bad_w | ~(i_w >= 2)] = np.nan
    for arr in (between_raw, between_lo, between_hi, between_se, S1):
        arr[bad_b] = np.nan
    mean_se = np.where(n_init >= 2, mean_se, np.nan)
    return {
        "n_init": n_init,
        "n_init_within": i_w,
        "n_obs": n.sum(axis=0),
        "df_within": df_w,
        "n_tilde": n_tilde,
        "mean": mean,
        "mean_se": mean_se,
        "within": msw,
        "within_lo": within_lo,
        "within_hi": within_hi,
        "within_se": within_se,
        "within_dispersion": dispersion,
        "between": np.maximum(between_raw, 0.0),
        "between_raw": between_raw,
        "between_lo": between_lo,
        "between_hi": between_hi,
        "between_se": between_se,
        "ms_between": S1,
    }


def _aligned(da: xr.DataArray, dims: list, shape: tuple) -> np.ndarray:
    """``da``'s values broadcast to ``dims`` (a superset of its dims) of ``shape``, as a NumPy array."""
    own = [d for d in dims if d in da.dims]
    v = da.transpose(*own).values if list(da.dims) != own else da.values
    return np.broadcast_to(v.reshape([shape[k] if d in da.dims else 1 for k, d in enumerate(dims)]), shape)


def _component_arrays(y: xr.DataArray | xr.Variable, done: xr.DataArray | xr.Variable | None, level: float,
                      coords=None):
    """``(rest dims, their shape, their coords, {name: ndarray})``: :func:`variance_components` on arrays.

    ``y`` and ``done`` may be bare ``xr.Variable`` objects (the estimator's case), with the
    coordinates taken from ``coords`` (a Dataset's).
    """
    if not 0 < level < 1:
        raise EstimateError(f"level is {level}; expected 0 < level < 1")
    for dim in ("init", "data"):
        if dim not in y.dims:
            raise EstimateError(f"variable {getattr(y, 'name', None)!r} has dims {y.dims}; expected an {dim!r} dim")
    if done is not None and set(done.dims) <= set(y.dims):  # the store's case: no xarray broadcast needed
        rest = [d for d in y.dims if d not in ("init", "data")]
        order = ["init", "data", *rest]
        yv = (y.transpose(*order) if list(y.dims) != order else y).values.astype(float)
        mv = _aligned(done.astype(bool), order, yv.shape)
    else:
        mask = xr.ones_like(y, dtype=bool) if done is None else done.astype(bool)
        mask, y = xr.broadcast(mask, y)
        rest = [d for d in y.dims if d not in ("init", "data")]
        yv = y.transpose("init", "data", *rest).values.astype(float)
        mv = mask.transpose("init", "data", *rest).values
    shape = yv.shape[2:]
    C = int(np.prod(shape))
    res = _components(yv.reshape(yv.shape[0], yv.shape[1], C), mv.reshape(mv.shape[0], mv.shape[1], C), level)
    coords = y.coords if coords is None else coords
    coords = {d: getattr(coords[d], "variable", coords[d]) for d in rest if d in coords}
    return rest, shape, coords, {k: v.reshape(shape) for k, v in res.items()}


def variance_components(y: xr.DataArray, done: xr.DataArray | None = None, level: float = 0.95) -> xr.Dataset:
    """One-way random-effects decomposition of ``y`` over dims ``init`` and ``data``.

    Every cell of the other dims is decomposed on its own, unbalanced designs included; the
    formulas are in the ``distntk.estimator`` module docstring.

    Parameters
    ----------
    y : xarray.DataArray
        Values with dims ``init``, ``data`` and any others (``width``, ``time``, ``probe``, or a
        repetition axis).
    done : xarray.DataArray or None, optional
        A boolean mask broadcastable to ``y``: the replicas to use.  Non-finite values of ``y``
        are never used; ``None``: every finite value.
    level : float, optional
        The confidence level of the intervals, in ``(0, 1)``.

    Returns
    -------
    xarray.Dataset
        On the other dims: ``n_init``, ``n_init_within`` (inits with >= 2 replicas), ``n_obs``,
        ``df_within``, ``n_tilde``, ``mean``, ``mean_se``, ``within``, ``within_lo``,
        ``within_hi``, ``within_se``, ``within_dispersion``, ``between``, ``between_raw``,
        ``between_lo``, ``between_hi``, ``between_se``, ``ms_between``; attribute ``level``.

    Raises
    ------
    EstimateError
        If ``y`` lacks the ``init`` or ``data`` dim, or ``level`` is outside ``(0, 1)``.
    """
    rest, _, coords, res = _component_arrays(y, done, level)
    return xr.Dataset({k: (rest, v) for k, v in res.items()}, coords=coords, attrs={"level": level})


# --------------------------------------------------------------------------- comparisons


def _verdict(lo, hi, target):
    ok = np.isfinite(lo) & np.isfinite(hi)
    inside = (lo <= target) & (target <= hi)
    return np.where(ok, np.where(inside, "consistent", "inconsistent"), "n/a").astype(object)


def _assess(y, done, h, nvar_p, nvar_i, var0, width, beta, level, verdict_level, se=None, coords=None):
    """``(rest dims, coords, {name: ndarray})``: components, predictions and comparisons of one variable."""
    with np.errstate(all="ignore"):
        return _assess_cells(y, done, h, nvar_p, nvar_i, var0, width, beta, level, verdict_level, se or {}, coords)


def _assess_cells(y, done, h, nvar_p, nvar_i, var0, width, beta, level, verdict_level, se, coords):
    # on NumPy arrays: the same operations as on DataArrays, without xarray's per-operation overhead
    rest, shape, coords, comp = _component_arrays(y, done, level, coords)
    on = lambda da: _aligned(da, rest, shape)  # noqa: E731
    # Monte Carlo standard errors of a sampled limit's predictions (0 for a window limit); relative ones
    # widen the log-scale ratio intervals in quadrature, absolute ones the mean's
    se = {k: on(v) for k, v in se.items()}
    q_t = lambda df: _quantile(stats.t, "isf", (1 - verdict_level) / 2, df)  # noqa: E731
    N = on(width).astype(float)
    h, nvar_p, nvar_i, var0 = on(h), on(nvar_p), on(nvar_i), on(var0)
    pred_p, pred_i = nvar_p / N, nvar_i / N
    pred_b = N ** (1.0 - 2.0 * beta) * var0
    out = dict(comp)
    out["h"] = h.copy()
    out["pred_within_poisson"] = pred_p
    out["pred_within_iid"] = pred_i
    out["pred_between"] = pred_b
    # within vs the data-driven predictions: init-robust interval (module docstring)
    # log scale: the per-init variances are right-skewed, and the log interval keeps coverage (module doc)
    within = comp["within"]
    rel = {k: (se[k] / np.abs(v)) if k in se else 0.0
           for k, v in (("nvar_p", nvar_p), ("nvar_i", nvar_i), ("var0", var0))}
    q_w = q_t(np.maximum(comp["n_init_within"] - 1.0, 1.0))
    for name, pred, r in (("poisson", pred_p, rel["nvar_p"]), ("iid", pred_i, rel["nvar_i"])):
        spread = np.exp(q_w * np.sqrt((comp["within_se"] / within) ** 2 + r**2))
        out[f"ratio_{name}"] = within / pred
        out[f"ratio_{name}_lo"] = out[f"ratio_{name}"] / spread
        out[f"ratio_{name}_hi"] = out[f"ratio_{name}"] * spread
        out[f"verdict_{name}"] = _verdict(out[f"ratio_{name}_lo"], out[f"ratio_{name}_hi"], 1.0)
    lo_b, hi_b = _mls(comp["ms_between"], comp["n_init"] - 1.0, within, comp["df_within"], 1.0 / comp["n_tilde"],
                      verdict_level)
    widen = np.exp(_quantile(stats.norm, "isf", (1 - verdict_level) / 2) * rel["var0"])
    out["ratio_init"] = comp["between"] / pred_b
    out["ratio_init_lo"] = lo_b / pred_b / widen
    out["ratio_init_hi"] = hi_b / pred_b * widen
    out["verdict_init"] = _verdict(out["ratio_init_lo"], out["ratio_init_hi"], 1.0)
    half_m = q_t(np.maximum(comp["n_init"] - 1.0, 1.0)) * np.sqrt(comp["mean_se"] ** 2 + se.get("h", 0.0) ** 2)
    out["mean_error"] = comp["mean"] - h
    out["mean_error_lo"] = out["mean_error"] - half_m
    out["mean_error_hi"] = out["mean_error"] + half_m
    out["verdict_mean"] = _verdict(out["mean_error_lo"], out["mean_error_hi"], 0.0)
    # t = 0: no data seen yet, g is a function of the initialisation alone; both predictions of the
    # variance across data are 0 and the simulated one is round-off, so there is nothing to compare
    det = (nvar_p == 0) & (nvar_i == 0)
    out["deterministic"] = det
    for name in ("poisson", "iid"):
        for k in (f"ratio_{name}", f"ratio_{name}_lo", f"ratio_{name}_hi"):
            out[k] = np.where(det, np.nan, out[k])
        out[f"verdict_{name}"] = np.where(det, "n/a", out[f"verdict_{name}"]).astype(object)
    out["within_dispersion"] = np.where(det, np.nan, out["within_dispersion"])
    return rest, coords, out


def _prediction_se(ds: xr.Dataset, **names: str) -> dict:
    """The predictions' Monte Carlo standard errors present in ``ds`` (a sampled limit's), by role."""
    return {role: ds.variables[name] for role, name in names.items() if name in ds}


def _done_mask(ds: xr.Dataset) -> xr.Variable:
    """The store's ``done`` (a dataset without one: the replicas whose outputs are all there)."""
    if VAR.done in ds:
        return ds.variables[VAR.done].astype(bool)
    out = ds[VAR.output]
    return out.notnull().all([d for d in out.dims if d not in (VAR.width, VAR.init, VAR.data)]).variable


def _check_store(ds: xr.Dataset) -> None:
    cells = (VAR.time, VAR.probe)
    need = {VAR.output: (VAR.width, VAR.init, VAR.data, VAR.time, VAR.probe), VAR.h: cells,
            VAR.nvar_poisson: cells, VAR.nvar_iid: cells, VAR.var_init_coef: cells}
    for name, dims in need.items():
        if name not in ds:
            raise EstimateError(f"dataset has no variable {name!r}; expected the result-store schema "
                                "(docs/reference/store.md)")
        if set(ds.variables[name].dims) != set(dims):
            raise EstimateError(f"variable {name!r} has dims {ds.variables[name].dims}; expected {dims}")
    if "beta" not in ds.attrs:
        raise EstimateError("dataset has no attribute 'beta'; expected the result-store schema "
                            "(docs/reference/store.md)")


def estimate(ds: xr.Dataset, level: float = 0.95, verdict_level: float = 0.99) -> xr.Dataset:
    """Components, predictions and comparisons for every (width, time, probe) and the risk.

    The one estimator: ``distntk query``, the report and a catalog's rows all read its numbers.
    The formulas and the intervals are in the ``distntk.estimator`` module docstring.

    Parameters
    ----------
    ds : xarray.Dataset
        A result store (``open_store``; the schema of docs/reference/store.md): ``output`` on
        ``(width, init, data, time, probe)``, the predictions ``h``, ``nvar_poisson``,
        ``nvar_iid``, ``var_init_coef`` on ``(time, probe)`` and the attribute ``beta``.  Only
        the replicas marked ``done`` are used (without ``done``: those with no missing output).
    level : float, optional
        The confidence level of the components' intervals, in ``(0, 1)``.
    verdict_level : float, optional
        The level of the comparisons' intervals and verdicts, in ``(0, 1)``.

    Returns
    -------
    xarray.Dataset
        On ``(width, time, probe)``: the variables of ``variance_components`` (intervals at
        ``level``), the predictions ``h, pred_within_poisson, pred_within_iid, pred_between``
        and the comparisons ``ratio_poisson, ratio_iid, ratio_init, mean_error``, each with
        ``_lo``/``_hi`` at ``verdict_level`` and a ``verdict_*`` string, and ``deterministic``:
        cells where both variance predictions are 0 (``t = 0``: ``g`` depends on the
        initialisation only), whose data-variance ratios are NaN and verdicts ``"n/a"``.  When
        the store has ``risk`` and its predictions, the same variables prefixed ``risk_`` on
        ``(width, time)``.  The store's ``f``, ``pi_probe`` and a sampled limit's ``*_se`` are
        carried over.  Attributes: ``level``, ``verdict_level``, ``beta``, ``n_done``,
        ``n_replicas``.

    Raises
    ------
    EstimateError
        If ``ds`` lacks a variable or attribute of the store schema, or a level is outside
        ``(0, 1)``.
    """
    variables, coords, attrs = estimate_cells(ds, level, verdict_level)
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def estimate_cells(ds: xr.Dataset, level: float = 0.95, verdict_level: float = 0.99, risk: bool = True):
    """:func:`estimate` before its Dataset is built: ``(variables {name: (dims, values, attrs)}, coords, attrs)``.

    The whole estimator; :func:`estimate` puts the result in a Dataset, and ``distntk query``
    (:func:`distntk.query.summary`, a catalog's rows) reads the arrays directly, which spares
    building a Dataset of ~40 variables per store.  ``risk=False``: the risk is not estimated.
    """
    _check_store(ds)
    if not 0 < verdict_level < 1:
        raise EstimateError(f"verdict_level is {verdict_level}; expected 0 < verdict_level < 1")
    beta = float(ds.attrs["beta"])
    done = _done_mask(ds)
    v = ds.variables  # bare Variables: no DataArray (and its coordinates) built per access
    width = v[VAR.width]
    coord_vars = {k: v[k] for k in ds.coords}
    rest, coords, cells = _assess(v[VAR.output], done, v[VAR.h], v[VAR.nvar_poisson], v[VAR.nvar_iid],
                                  v[VAR.var_init_coef], width, beta, level, verdict_level,
                                  _prediction_se(ds, h=se_name(VAR.h), nvar_p=se_name(VAR.nvar_poisson),
                                                 nvar_i=se_name(VAR.nvar_iid), var0=se_name(VAR.var_init_coef)),
                                  coord_vars)
    variables = {k: (rest, x, v[VAR.h].attrs if k == "h" else {}) for k, x in cells.items()}
    if risk and VAR.risk in ds and all(n in ds for n in (VAR.risk_h, VAR.nvar_risk_poisson, VAR.nvar_risk_iid,
                                                         VAR.var_risk_init_coef)):
        r_rest, r_coords, r = _assess(v[VAR.risk], done, v[VAR.risk_h], v[VAR.nvar_risk_poisson],
                                      v[VAR.nvar_risk_iid], v[VAR.var_risk_init_coef], width, beta, level,
                                      verdict_level,
                                      _prediction_se(ds, h=se_name(VAR.risk_h), nvar_p=se_name(VAR.nvar_risk_poisson),
                                                     nvar_i=se_name(VAR.nvar_risk_iid),
                                                     var0=se_name(VAR.var_risk_init_coef)),
                                      coord_vars)
        variables.update({f"risk_{k}": (r_rest, x, v[VAR.risk_h].attrs if k == "h" else {}) for k, x in r.items()})
        coords = {**r_coords, **coords}
    for name in (VAR.pi_probe, VAR.f, *(se_name(n) for n in (VAR.h, VAR.nvar_poisson, VAR.nvar_iid,
                                                             VAR.var_init_coef))):
        if name in ds:
            variables[name] = v[name]
            coords.update({d: coord_vars[d] for d in v[name].dims if d in coord_vars and d not in coords})
    attrs = {
        "level": level,
        "verdict_level": verdict_level,
        "beta": beta,
        "n_done": int(done.values.sum()),
        "n_replicas": int(done.size),
        "within_interval": "chi-square (component); init-robust t (comparisons)",
        "between_interval": "MLS (Ting et al. 1990), unweighted means for unbalanced designs",
    }
    return variables, coords, attrs


# --------------------------------------------------------------------------- rates


_RATE_QUANTITIES = ("mean_error", "ratio_poisson", "ratio_init", "sd_within", "sd_between")


def _rate_inputs(est: xr.Dataset, prefix: str):
    """``(q, se)`` per quantity on the estimate's dims (width first)."""
    e = lambda k: est[prefix + k]  # noqa: E731
    q = {
        "mean_error": np.abs(e("mean_error")),
        "ratio_poisson": np.abs(e("ratio_poisson") - 1.0),
        "ratio_init": np.abs(e("ratio_init") - 1.0),
        "sd_within": np.sqrt(e("within")),
        "sd_between": np.sqrt(e("between")),
    }
    ms_b, ms_w = e("ms_between"), e("within")
    se_b = np.sqrt(2.0 * (ms_b**2 / (e("n_init") - 1.0) + ms_w**2 / e("df_within"))) / e("n_tilde")
    with np.errstate(divide="ignore", invalid="ignore"):
        se = {
            "mean_error": e("mean_se"),
            "ratio_poisson": e("within_se") / e("pred_within_poisson"),
            "ratio_init": se_b / e("pred_between"),
            "sd_within": e("within_se") / (2.0 * q["sd_within"]),
            "sd_between": se_b / (2.0 * q["sd_between"]),
        }
    return q, se


def _wls_line(x, y, w, use) -> dict:
    """Weighted least squares of ``y = a + b x`` along axis 0, weights ``w`` (1 / variance), points ``use``.

    Returns ``a, b`` and their standard errors ``se_a, se_b`` from the weights, inflated by
    ``sqrt(chi2 / dof)`` when the fit is worse than its errors say (``red``, NaN below 3 points), and ``n``.
    """
    x = np.broadcast_to(x, y.shape)
    y = np.where(use, y, 0.0)
    S, Sx, Sxx = w.sum(0), (w * x).sum(0), (w * x * x).sum(0)
    Sy, Sxy = (w * y).sum(0), (w * x * y).sum(0)
    n = use.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        det = S * Sxx - Sx**2
        b = (S * Sxy - Sx * Sy) / det
        a = (Sxx * Sy - Sx * Sxy) / det
        chi2 = (w * np.where(use, y - a - b * x, 0.0) ** 2).sum(0)
        dof = n - 2
        red = np.where(dof > 0, chi2 / np.where(dof > 0, dof, 1), np.nan)
        inflate = np.where(dof > 0, np.sqrt(np.maximum(red, 1.0)), 1.0)
        se_a, se_b = np.sqrt(Sxx / det) * inflate, np.sqrt(S / det) * inflate
    return {"a": a, "b": b, "se_a": se_a, "se_b": se_b, "chi2": chi2, "red": red, "dof": dof, "n": n}


def _wls_slope(x, q, se, min_sigma, level):
    """WLS fit of ``log q`` on ``log N`` along axis 0; returns per-cell arrays."""
    z = stats.norm.isf((1 - level) / 2)
    use = np.isfinite(q) & np.isfinite(se) & (se > 0) & (q >= min_sigma * se)
    ly = np.log(np.where(use, q, 1.0))
    w = np.where(use, (q / np.where(use, se, 1.0)) ** 2, 0.0)  # 1 / Var(log q)
    fit = _wls_line(np.log(x)[:, None], ly, w, use)
    slope, icpt, red, n_used = fit["b"], fit["a"], fit["red"], fit["n"]
    se_s = fit["se_b"]
    ok = n_used >= 2
    slope, icpt, se_s = (np.where(ok, a, np.nan) for a in (slope, icpt, se_s))
    return {"slope": slope, "slope_lo": slope - z * se_s, "slope_hi": slope + z * se_s, "slope_se": se_s,
            "intercept": icpt, "n_used": n_used, "chi2_dof": red}


def convergence_rates(est: xr.Dataset, level: float = 0.95, min_sigma: float = 2.0) -> xr.Dataset:
    """Log-log slopes across widths of the deviations from the limit and of the fluctuation sizes.

    Quantities: ``mean_error`` ``|mean - h|``, ``ratio_poisson``
    ``|N within / V_t - 1|``, ``ratio_init`` ``|between / pred - 1|``, and the
    fluctuation sizes ``sd_within = sqrt(within)`` and ``sd_between =
    sqrt(between)``, whose predicted orders are ``N^{-1/2}`` and ``N^{1/2-beta}``
    (``expected_slope``; NaN for the deviations, for which docs/model.md#rates states no
    order).  See the ``distntk.estimator`` module docstring for the weighting and the ``min_sigma`` rule.

    Parameters
    ----------
    est : xarray.Dataset
        The output of ``estimate``.
    level : float, optional
        The confidence level of the slopes' intervals.
    min_sigma : float, optional
        A width whose quantity is below ``min_sigma`` standard errors is noise, not a magnitude,
        and is left out of the fit (``n_used`` counts the widths kept).

    Returns
    -------
    xarray.Dataset
        On ``(quantity, time, probe)``: ``slope, slope_lo, slope_hi, slope_se, intercept,
        n_used, chi2_dof, slope_verdict`` (slope vs ``expected_slope`` at 99%), and the fitted
        inputs ``value, value_se`` on ``(quantity, width, time, probe)``; ``risk_`` variables
        likewise without ``probe``.  Attributes ``level``, ``min_sigma``, ``beta``,
        ``order_init = 1/2 - beta``, ``order_data = -1/2``.
    """
    beta = float(est.attrs["beta"])
    x = est["width"].values.astype(float)
    out = xr.Dataset(coords={"quantity": list(_RATE_QUANTITIES)})
    prefixes = [""] + (["risk_"] if "risk_within" in est else [])
    for prefix in prefixes:
        q, se = _rate_inputs(est, prefix)
        qa = xr.concat([q[k] for k in _RATE_QUANTITIES], dim="quantity").transpose("quantity", "width", ...)
        sa = xr.concat([se[k] for k in _RATE_QUANTITIES], dim="quantity").transpose("quantity", "width", ...)
        qa = qa.assign_coords(quantity=list(_RATE_QUANTITIES))
        sa = sa.assign_coords(quantity=list(_RATE_QUANTITIES))
        rest = [d for d in qa.dims if d not in ("quantity", "width")]
        qv = np.moveaxis(qa.values, 1, 0)  # (W, quantity, ...)
        sv = np.moveaxis(sa.values, 1, 0)
        shp = qv.shape[1:]
        fit = _wls_slope(x, qv.reshape(len(x), -1), sv.reshape(len(x), -1), min_sigma, level)
        for k, v in fit.items():
            out[prefix + k] = (("quantity", *rest), v.reshape(shp))
        out[prefix + "value"] = qa
        out[prefix + "value_se"] = sa
    out = out.assign_coords({d: est[d] for d in est.dims if d in out.dims and d != "quantity"})
    # predicted orders of the fluctuation sizes; the deviations have no order stated in docs/model.md#rates
    expected = {"sd_within": -0.5, "sd_between": 0.5 - beta}
    out["expected_slope"] = ("quantity", [expected.get(k, np.nan) for k in _RATE_QUANTITIES])
    z99 = stats.norm.isf(0.005)
    for prefix in prefixes:
        dev = np.abs(out[prefix + "slope"] - out["expected_slope"])
        ok = np.isfinite(dev) & np.isfinite(out[prefix + "slope_se"])
        out[prefix + "slope_verdict"] = xr.where(
            ok, xr.where(dev <= z99 * out[prefix + "slope_se"], "consistent", "inconsistent"), "n/a").astype(object)
    out.attrs = {"level": level, "min_sigma": min_sigma, "beta": beta,
                 "order_init": 0.5 - beta, "order_data": -0.5}
    return out


# --------------------------------------------------------------------------- extrapolation in N

GAMMAS = {"drift": lambda beta: 1.0 - beta, "init": lambda beta: beta - 0.5, "mc": lambda beta: 0.5}
_GAMMA_GRID = np.linspace(0.02, 1.5, 149)  # the fitted exponent's search grid (step 0.01)


def _extrapolate_cells(x: np.ndarray, y: np.ndarray, se: np.ndarray, df: np.ndarray, level: float) -> dict:
    """WLS of ``y = a + b x`` along axis 0 (widths) per cell, known ``se``; ``a`` is the limit.

    ``x (K,) or (K, C)``, ``y, se (K, C)``, ``df (C,)``: the degrees of freedom of the ``se``
    (their smallest over widths).  Returns ``a, a_lo, a_hi, b, chi2, dof, n``; the interval is
    ``a +- t_df se_a`` with ``se_a`` inflated by ``sqrt(chi2 / dof)`` when the fit is worse than
    its errors say (>= 3 widths).
    """
    use = np.isfinite(y) & np.isfinite(se) & (se > 0)
    w = np.where(use, 1.0 / np.where(use, se, 1.0) ** 2, 0.0)
    fit = _wls_line(x.reshape(x.shape[0], -1), y, w, use)
    a, b, se_a, chi2, dof, n = (fit[k] for k in ("a", "b", "se_a", "chi2", "dof", "n"))
    q = _quantile(stats.t, "isf", (1 - level) / 2, np.maximum(df, 1.0))
    ok = (n >= 2) & np.isfinite(se_a)
    a, b, se_a = (np.where(ok, v, np.nan) for v in (a, b, se_a))
    return {"a": a, "a_lo": a - q * se_a, "a_hi": a + q * se_a, "b": b, "chi2": np.where(ok, chi2, np.nan),
            "dof": dof, "n": n}


def _extrapolated(N: np.ndarray, y, se, df, gamma, beta: float, level: float) -> dict:
    """One quantity's limit across widths, ``gamma`` a name of :data:`GAMMAS`, a number or ``"fitted"``."""
    if gamma != "fitted":
        g = GAMMAS[gamma](beta) if isinstance(gamma, str) else float(gamma)
        fit = _extrapolate_cells(N ** -g, y, se, df, level)
        return {**fit, "gamma": np.full(y.shape[1:], g), "gamma_lo": np.full(y.shape[1:], g),
                "gamma_hi": np.full(y.shape[1:], g)}
    # fitted: profile the exponent on a grid; the limit's interval is the union of the fixed-exponent
    # intervals over the exponents the data do not reject (chi-square with 1 df at ``level``)
    fits = [_extrapolate_cells(N ** -g, y, se, df, level) for g in _GAMMA_GRID]
    chi2 = np.stack([f["chi2"] for f in fits])  # (G, C)
    best = np.nanargmin(np.where(np.isfinite(chi2), chi2, np.inf), axis=0)
    cut = np.take_along_axis(chi2, best[None], 0)[0] + stats.chi2.isf(1 - level, 1)
    keep = chi2 <= cut
    pick = lambda k: np.take_along_axis(np.stack([f[k] for f in fits]), best[None], 0)[0]  # noqa: E731
    lo = np.where(keep, np.stack([f["a_lo"] for f in fits]), np.inf).min(0)
    hi = np.where(keep, np.stack([f["a_hi"] for f in fits]), -np.inf).max(0)
    grid = np.broadcast_to(_GAMMA_GRID[:, None], chi2.shape)
    ok = fits[0]["n"] >= 3  # two widths fit any exponent
    out = {"a": pick("a"), "a_lo": lo, "a_hi": hi, "b": pick("b"), "chi2": pick("chi2"), "dof": fits[0]["dof"] - 1,
           "n": fits[0]["n"], "gamma": _GAMMA_GRID[best],
           "gamma_lo": np.where(keep, grid, np.inf).min(0), "gamma_hi": np.where(keep, grid, -np.inf).max(0)}
    return {k: (np.where(ok, v, np.nan) if k not in ("n", "dof") else v) for k, v in out.items()}


def extrapolate(est: xr.Dataset, gamma: str | float = "fitted", level: float = 0.95) -> xr.Dataset:
    """The limit ``N -> infinity`` of each comparison, fitted across widths (docs/model.md#extrapolation).

    For the ratios ``ratio_poisson`` and ``ratio_init`` of ``estimate``, per (time, probe) cell,
    ``R(N) = r_inf (1 + c N^{-gamma})``, i.e. ``R = a + b x`` with ``x = N^{-gamma}``, ``a = r_inf``,
    ``b = r_inf c``, fitted by weighted least squares with the per-width standard errors
    (``ratio * within_se / within`` in quadrature with a sampled limit's relative error, and the
    large-sample ``between_se / pred_between``); for the mean, the difference ``mean - h`` the same
    way (its limit ``d_inf`` is 0 when the mean converges to ``h_t``).  The limit's interval uses
    ``t`` quantiles with the smallest per-width degrees of freedom (``n_init_within - 1``, resp.
    ``n_init - 1``) and is inflated by ``sqrt(chi2 / dof)`` when the fit is worse than its errors.

    Parameters
    ----------
    est : xarray.Dataset
        The output of ``estimate``.
    gamma : str or float, optional
        The exponent: ``"drift"`` (``1 - beta``, the parameters' movement over training),
        ``"init"`` (``beta - 1/2``, the initialisation's offset), ``"mc"`` (``1/2``), a number,
        or ``"fitted"`` (a profile over ``0.02 .. 1.5``: the limit's interval is the union of
        the fixed-exponent intervals over the exponents the chi-square profile does not reject
        at ``level``; needs >= 3 widths).
    level : float, optional
        The confidence level of the limit's interval and of the exponent's profile, in
        ``(0, 1)``.

    Returns
    -------
    xarray.Dataset
        On ``(quantity, time, probe)`` (quantities ``poisson``, ``init``, ``mean``):
        ``r_inf, r_inf_lo, r_inf_hi`` (for ``mean``: ``d_inf`` in the same variables), ``c``,
        ``gamma, gamma_lo, gamma_hi``, ``chi2_dof``, ``n_widths`` and ``verdict_limit``
        (``"consistent in the limit"`` when the interval holds the prediction, 1 for the ratios
        and 0 for the mean; ``"inconsistent in the limit"``; ``"n/a"``).  Attributes ``level``,
        ``gamma_mode``, ``beta`` and ``model`` (the fitted form, in words).

    Raises
    ------
    EstimateError
        If ``gamma`` is none of the above, or ``level`` is outside ``(0, 1)``.
    """
    if not 0 < level < 1:
        raise EstimateError(f"level is {level}; expected 0 < level < 1")
    if not (gamma == "fitted" or gamma in GAMMAS or isinstance(gamma, int | float)):
        raise EstimateError(f"gamma {gamma!r}: expected 'fitted', {', '.join(map(repr, GAMMAS))} or a number")
    beta = float(est.attrs["beta"])
    e = est.transpose("width", "time", "probe", ...)
    N = e["width"].values.astype(float)
    v = {k: e[k].values for k in ("ratio_poisson", "within", "within_se", "ratio_init", "between_se",
                                  "pred_between", "mean_error", "mean_se", "n_init_within", "n_init")}
    rel = 0.0
    if "nvar_poisson_se" in e:
        rel = np.broadcast_to((e["nvar_poisson_se"] / np.abs(e["pred_within_poisson"] * e["width"])).transpose(
            "width", "time", "probe").values, v["within"].shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        inputs = {
            "poisson": (v["ratio_poisson"], v["ratio_poisson"] * np.sqrt((v["within_se"] / v["within"]) ** 2 + rel**2),
                        np.nanmin(v["n_init_within"], axis=0) - 1.0, 1.0),
            "init": (v["ratio_init"], v["between_se"] / v["pred_between"], np.nanmin(v["n_init"], axis=0) - 1.0, 1.0),
            "mean": (v["mean_error"], np.sqrt(v["mean_se"] ** 2 + (e["h_se"].values ** 2 if "h_se" in e else 0.0)),
                     np.nanmin(v["n_init"], axis=0) - 1.0, 0.0),
        }
    shape = v["within"].shape[1:]
    out = {k: [] for k in ("r_inf", "r_inf_lo", "r_inf_hi", "c", "gamma", "gamma_lo", "gamma_hi", "chi2_dof",
                           "n_widths", "verdict_limit")}
    for y, se, df, target in inputs.values():
        C = int(np.prod(shape))
        fit = _extrapolated(N, y.reshape(len(N), C), se.reshape(len(N), C), df.reshape(C), gamma, beta, level)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = fit["b"] / fit["a"] if target else fit["b"]
            red = np.where(fit["dof"] > 0, fit["chi2"] / np.where(fit["dof"] > 0, fit["dof"], 1), np.nan)
        ok = np.isfinite(fit["a_lo"]) & np.isfinite(fit["a_hi"])
        inside = (fit["a_lo"] <= target) & (target <= fit["a_hi"])
        verdict = np.where(ok, np.where(inside, "consistent in the limit", "inconsistent in the limit"), "n/a")
        for k, val in (("r_inf", fit["a"]), ("r_inf_lo", fit["a_lo"]), ("r_inf_hi", fit["a_hi"]), ("c", c),
                       ("gamma", fit["gamma"]), ("gamma_lo", fit["gamma_lo"]), ("gamma_hi", fit["gamma_hi"]),
                       ("chi2_dof", red), ("n_widths", fit["n"]), ("verdict_limit", verdict.astype(object))):
            out[k].append(np.asarray(val).reshape(shape))
    dims = ("quantity", "time", "probe")
    ds = xr.Dataset({k: (dims, np.stack(vals)) for k, vals in out.items()},
                    coords={"quantity": list(inputs), "time": e["time"].values, "probe": e["probe"].values})
    ds.attrs = {"level": level, "gamma_mode": str(gamma), "beta": beta,
                "model": "R(N) = r_inf (1 + c N^-gamma); mean - h = d_inf + c N^-gamma"}
    return ds


# --------------------------------------------------------------------------- completeness


def missing_units(ds: xr.Dataset) -> list[Unit]:
    """Units ``(width, init, data_start, data_stop)`` not fully done, in store order.

    Blocks follow the store's ``block`` attribute (else the ``block`` dim's
    length, else one block per init), as in ``Experiment.units()``.

    Parameters
    ----------
    ds : xarray.Dataset
        A result store, with ``done`` on ``(width, init, data)`` (without it: the replicas with
        a missing output are not done).

    Returns
    -------
    list of Unit
        The units with at least one replica not done, labelled by the store's coordinates.
    """
    done = _done_mask(ds).transpose(VAR.width, VAR.init, VAR.data).values
    R = done.shape[2]
    if "block" in ds.attrs:
        b = int(ds.attrs["block"])
    elif VAR.block in ds.sizes:
        b = int(np.ceil(R / ds.sizes[VAR.block]))
    else:
        b = R
    widths, inits, data = (ds[d].values for d in (VAR.width, VAR.init, VAR.data))
    return [Unit(int(widths[wi]), int(inits[i]), int(data[k * b]), int(data[min((k + 1) * b, R) - 1]) + 1)
            for wi, i, k in zip(*np.nonzero(~done_units(done, b)), strict=True)]  # positions, in store order
