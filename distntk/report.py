"""The report: plots and one Markdown file that turn a result store into evidence.

:func:`write_report` takes a store (a ``Dataset`` in the result-store
schema, or a path) and writes into ``out_dir``:

* ``report.md`` -- opens with a plain-language summary of the verdicts, then
  one section per comparison with its figure and a table, the convergence
  rates, the memory fixed point (when given), the missing units and the method;
* ``nvar_vs_t.png`` -- ``N * Var(g | theta)`` against ``t``, one column per
  width, one row per probe (and the risk): simulated values with the 99%
  init-robust band used for the verdicts, the Poisson prediction ``V_t`` and
  the i.i.d. prediction (docs/model.md#iid);
* ``mean_vs_h.png`` -- the simulated mean with 99% intervals against ``h_t``;
* ``convergence.png`` -- ``|mean - h|``, ``|ratio - 1|`` against ``N`` on
  log-log axes with fitted slopes and the predicted orders ``N^{1/2-beta}`` and
  ``N^{-1/2}`` (docs/model.md#rates), when there are at least two widths;
* ``memory.png`` -- the memory contraction against ``rho^k`` (docs/model.md#memory) at the
  largest width: :func:`distntk.memory.memory_contraction` of the chain and
  model rebuilt from the store's canonical spec (:func:`distntk.store.store_model`:
  data only, no target code is imported), or a result passed in.

Read at a glance: every table sits under a heading that says what it shows; the
rate cells that are not resolved are one counted line, not rows; every figure has
one legend (above its panels) and labelled axes; log axes carry delta-method bars
(a point within 2 standard errors of 0 is drawn as its upper bound); each summary
bullet on a prediction says what its verdicts mean for the theory (``_chance``:
no more disagreements than the 99% quantile of Binomial(cells, 1 - verdict_level));
a glossary defines the report's words, each with its anchor in ``docs/model.md``
(:data:`MODEL_ANCHORS`), linked relatively when the report lies inside the
repository.  ``docs/report-format.md`` describes the layout.

Wording follows the data: the variance sentence says whether the chain's
correlations add or remove variance relative to i.i.d. inputs (the Poisson
prediction above or below the i.i.d. one); intervals and slope brackets are at
the verdict level; ``t = 0`` cells (no data seen yet) are shown as
deterministic; a window ``L`` shortened by ``limit.max_histories`` below what
``training.memory_tol`` asks for is said in the summary.

Paths and URLs are opened by :func:`distntk.store.open_store`, so the report
reads exactly the stores ``distntk run`` writes.  The numbers come from
:mod:`distntk.estimator`; this module only draws and writes.  It works on a
partially finished store: everything uses the done replicas, and the report
names the missing units by (width, init, data range).  ``distntk report STORE
[--out DIR]`` (``distntk/cli.py``) calls :func:`write_report`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog import Catalog

import json
import os
import tomllib
from pathlib import Path

import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402  (no pyplot: a figure needs no backend, a notebook's is left alone)
from scipy import stats  # noqa: E402

from .estimator import convergence_rates, estimate, extrapolate, missing_units  # noqa: E402
from .memory import memory_contraction  # noqa: E402
from .store import VAR, StoreError, store_model  # noqa: E402
from .verify import open_checked  # noqa: E402

__all__ = ["MODEL_ANCHORS", "open_dataset", "plot_convergence", "plot_mean", "plot_memory", "plot_nvar", "summary",
           "write_report", "write_sweep_report", "sweep_headlines"]

_QUANTITY_LABELS = {
    "mean_error": "|mean - h_t|",
    "ratio_poisson": "|N Var / V_t - 1|",
    "ratio_init": "|between / pred - 1|",
    "sd_within": "sd across data sqrt(within)",
    "sd_between": "sd across inits sqrt(between)",
}

MODEL_ANCHORS = ("data", "network", "probe", "memory", "kernel", "limit-ode", "poisson", "iid", "init", "risk",
                 "features", "sampled", "estimator", "verdict", "mls", "init-robust", "rates", "outliers",
                 "extrapolation")
"""The anchors of ``docs/model.md`` (``<a id="NAME"></a>``) that the reports' glossary links to."""

_MODEL_DOC = "docs/model.md"
_REPO = Path(__file__).resolve().parents[1]  # the repository, when distntk runs from its source tree

# (term, anchor in docs/model.md, meaning): the words the reports use, defined once
_GLOSSARY = (
    ("chain, π", "data", "the finite-state Markov chain that produces the data sequence, and its stationary law "
     "π; the network is trained online on one sequence drawn from it"),
    ("N, β, α", "network", "N hidden units of the recurrent network; its output is N^(-β) Σ_i c^i S^i with "
     "β in (1/2, 1); learning rate α N^(2β-2), training time t = k/N after k SGD steps"),
    ("probe, g", "probe", "a fixed window z of L chain states (oldest first); g = g^N_t(z) is the width-N network's "
     "output on it at training time t. Each table row is one (width, t, probe) cell"),
    ("L, ρ", "memory", "the window length, and ρ = b_max sup|σ'| < 1 the contraction factor of the memory "
     "recurrence: starting a window of L steps from 0 errs by at most ρ^L"),
    ("h_t", "limit-ode", "the kernel limit of g^N_t as N → ∞: the solution of dh/dt = α K Π_L (f - h), h_0 = 0, "
     "with K the neural tangent kernel"),
    ("V_t, Poisson prediction", "poisson", "the covariance of the limit fluctuations, computed from the Poisson "
     "equation of the window chain: Var(g | θ) ≈ V_t(z, z)/N"),
    ("i.i.d. prediction", "iid", "what V_t would be if the inputs were independent (the Poisson correction "
     "dropped); the naive prediction that the Poisson equation corrects"),
    ("N·Var, N·within", "estimator", "N times the variance of g across data sequences at a fixed "
     "initialisation (pooled over inits); compared with V_t"),
    ("between, E_t C_0 E_tᵀ", "init", "the variance across initialisations of the data-averaged output g; "
     "predicted N^(1-2β) (E_t C_0 E_tᵀ)(z, z), with E_t = exp(-α t K Π_L) and C_0 the covariance of the "
     "initial output"),
    ("stationary risk R", "risk", "R = ½ Σ_z π_L(z) (f(z) - g(z))², the squared error averaged over the "
     "stationary windows; its predictions linearise around h_t"),
    ("sampled limit", "sampled", "the limit over the infinite past, estimated along simulated segments of the "
     "chain when no finite window meets the memory tolerance; its predictions carry standard errors"),
    ("ratio", "estimator", "simulated over predicted (N·Var / V_t, N·Var / i.i.d., between / prediction); 1 is "
     "agreement"),
    ("init-robust interval", "init-robust", "the interval of N·Var and its ratios that stays valid when "
     "Var(g | θ) differs between inits (a sandwich standard error over inits, on the log scale); the verdicts "
     "use it"),
    ("dispersion", "init-robust", "how much Var(g | θ) varies between inits beyond sampling: 1 when it is common "
     "to all inits"),
    ("chi² interval", "estimator", "the interval of N·within that assumes one Var(g | θ) for every init"),
    ("MLS", "mls", "the modified large-sample interval of the between-init variance (a difference of mean "
     "squares), truncated at 0"),
    ("verdict", "verdict", "consistent: the interval at the verdict level holds the prediction (1 for a ratio, "
     "0 for mean - h_t); inconsistent: it does not; not resolved (n/a): nothing to decide (t = 0, or too few "
     "replicas or widths)"),
    ("slope, predicted order", "rates", "the log-log slope of a quantity against N across widths, and the order the "
     "theory implies: N^(-1/2) for sqrt(within), N^(1/2-β) for sqrt(between)"),
    ("outlier flag", "outliers", "a unit whose mean lies far outside the other units of its width, flagged by "
     "`distntk verify`"),
    ("r_inf, γ, consistent in the limit", "extrapolation", "a ratio fitted across widths as r_inf (1 + c N^-γ) and "
     "read at N → ∞; consistent in the limit: r_inf's interval (the estimator's errors and the unknown γ "
     "included) holds 1"),
)


def _model_ref(anchor: str, out_dir: str | os.PathLike) -> str:
    """A reference to an anchor of ``docs/model.md``: a relative Markdown link from ``out_dir`` when that lies inside
    the repository (e.g. ``docs/results/...``), else the anchor named in text."""
    if anchor not in MODEL_ANCHORS:
        raise ValueError(f"{anchor!r} is not an anchor of {_MODEL_DOC}")
    out = Path(out_dir).resolve()
    if (_REPO / "pyproject.toml").is_file() and out.is_relative_to(_REPO):
        return f"[{_MODEL_DOC}#{anchor}]({Path(os.path.relpath(_REPO / _MODEL_DOC, out)).as_posix()}#{anchor})"
    return f"`{_MODEL_DOC}#{anchor}`"


def _glossary(out_dir: str | os.PathLike) -> list[str]:
    """The glossary section: every term the report uses, with its meaning and its section of the model document."""
    return ["## Glossary", "",
            f"The words of this report, each with the section of the model document ({_MODEL_DOC}) that defines it.",
            ""] + [f"- **{term}**: {meaning} ({_model_ref(anchor, out_dir)})." for term, anchor, meaning in _GLOSSARY]


# --------------------------------------------------------------------------- input


def open_dataset(source: xr.Dataset | str | os.PathLike) -> xr.Dataset:
    """``source`` itself if it is a Dataset, else the store at that path or URL without its damaged units.

    A path goes through :func:`distntk.verify.open_checked`: damaged units are
    left out (not done) and named in ``attrs["distntk_left_out"]``, units
    flagged as outliers are kept and named in ``attrs["distntk_flagged"]``; the
    report's summary repeats both.
    """
    if isinstance(source, xr.Dataset):
        return source
    return open_checked(os.fspath(source))[0]


def _store_memory(ds: xr.Dataset):
    """``(memory_contraction, "")`` for the store's experiment at its largest width, or ``(None, why not)``.

    The store holds outputs, not parameters: the chain and the model are rebuilt
    from the canonical spec in its attributes (data; no code is imported) and
    init 0 of the largest width is redrawn from the same seed keys as the run's
    replicas.
    """
    try:
        cfg, chain, seed = store_model(ds)
    except StoreError as exc:
        return None, f"Not computed: {str(exc).rstrip('.')}."
    N = int(max(ds[VAR.width].values))
    return memory_contraction(cfg, chain, N, seed=seed, init=0), ""


def _memory_window_note(ds: xr.Dataset) -> str | None:
    """A summary bullet for a sampled (infinite-past) limit, or when ``limit.max_histories`` shortened ``L`` so
    that ``rho^L`` exceeds ``memory_tol``."""
    a = ds.attrs

    def rel(name):
        if name + "_se" not in ds:
            return float("nan")
        return float(np.nanmax(np.abs(ds[name + "_se"].values) / np.maximum(np.abs(ds[name].values), 1e-300)))

    if a.get("memory_method") in ("ar1", "sampler"):
        what = ("**AR(1) input (continuous state).** The data are the Gaussian AR(1) of docs/model.md#ar1"
                if a["memory_method"] == "ar1" else "**Sampler input (continuous state).** The data are drawn by "
                "the spec's chain.sampler (code; docs/model.md#sampler), the lag window set by the mixing rate "
                f"{float(a.get('memory_mixing', np.nan)):.3g} (from {a.get('memory_mixing_from', '?')})")
        return (f"- {what}; the "
                "probes are windows of input values (labels: the values, oldest first), which have a density, not "
                "a probability (pi_probe is NaN; the headline cell is the first probe). The limit is estimated "
                f"along {a.get('memory_segments')} stationary segments of {a.get('memory_path_steps')} steps; "
                "Monte Carlo standard errors (jackknife over segments) reach "
                f"{float(np.nanmax(ds['h_se'].values)) if 'h_se' in ds else float('nan'):.1e} on h (absolute), "
                f"{rel('nvar_poisson'):.1e} relative on the Poisson N·Var and {rel('var_init_coef'):.1e} on the "
                "initialisation variance; the verdicts' intervals include them. The memory truncation is "
                f"rho^L = {float(a.get('memory_bound', np.nan)):.1e}.")
    if a.get("memory_method") == "sampled":
        return (f"- **Limit over the infinite past (sampled).** The training side of the limit is the infinite "
                f"past (limit.memory), estimated along {a.get('memory_segments')} "
                f"simulated segments ({a.get('memory_path_steps')} steps in all), with the exact L0 = "
                f"{a.get('memory_L0')} window as control variate (docs/model.md#sampled, distntk.longmem). Monte Carlo "
                f"standard errors (jackknife over segments) reach {rel('h'):.1e} relative on h, "
                f"{rel('nvar_poisson'):.1e} on the Poisson N·Var and {rel('var_init_coef'):.1e} on the "
                "initialisation variance; the verdicts' intervals include them. The memory correction measured "
                f"against the L0 window is {float(a.get('memory_correction_h', np.nan)):.2e} on h and "
                f"{float(a.get('memory_correction_nvar_rel', np.nan)):.1e} relative on N·Var; the basis of "
                f"{a.get('memory_basis_rank')} directions misses a fraction "
                f"{float(a.get('memory_basis_residual', np.nan)):.1e} of the feature mass along the paths.")
    try:
        training = tomllib.loads(str(ds.attrs.get("spec", ""))).get("training", {})
        bound = float(ds.attrs["memory_bound"])
    except (tomllib.TOMLDecodeError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not isinstance(training, dict) or "L" in training:
        return None  # L given explicitly: the user chose the window
    tol = training.get("memory_tol", 1e-6)
    if not isinstance(tol, (int, float)) or not bound > tol:
        return None
    return (f"- **Memory window shortened.** The window length L = {ds.attrs.get('L')} was capped by "
            f"limit.max_histories, so the memory bound rho^L = {bound:.3g} exceeds training.memory_tol = {tol:g}: "
            "the limit's predictions carry a truncation error of that order.")


# --------------------------------------------------------------------------- panels


def _panels(est: xr.Dataset):
    """``(label, prefix, probe)`` per row: one per probe, then the risk."""
    rows = [(f"probe {p}", "", p) for p in est["probe"].values]
    if "risk_within" in est:
        rows.append(("stationary risk", "risk_", None))
    return rows


def _sel(est, name, probe, **idx):
    da = est[name]
    if probe is not None:
        da = da.sel(probe=probe)
    return da.sel(**idx) if idx else da


def plot_nvar(est: xr.Dataset) -> Figure:
    """``N * Var(g | theta)`` vs ``t`` per width (columns) and probe/risk (rows)."""
    with np.errstate(all="ignore"):
        return _plot_nvar(est)


def _plot_nvar(est: xr.Dataset):
    rows, widths = _panels(est), est["width"].values
    fig = Figure(figsize=(3.2 * len(widths) + 0.6, 2.5 * len(rows) + 0.9))
    axes = fig.subplots(len(rows), len(widths), squeeze=False, sharex=True)
    t = est["time"].values
    vl = est.attrs["verdict_level"]
    for r, (label, pre, probe) in enumerate(rows):
        for c, N in enumerate(widths):
            ax = axes[r, c]
            s = lambda k, pre=pre, probe=probe, N=N: _sel(est, pre + k, probe, width=N).values  # noqa: E731
            nvar = N * s("within")
            ax.fill_between(t, s("ratio_poisson_lo") * N * s("pred_within_poisson"),
                            s("ratio_poisson_hi") * N * s("pred_within_poisson"),
                            color="C0", alpha=0.25, lw=0, label=f"{vl:.0%} init-robust interval")
            ax.plot(t, nvar, "o", color="C0", ms=4, label="simulated N Var")
            ax.plot(t, N * s("pred_within_poisson"), "-", color="k", label="Poisson prediction V_t")
            ax.plot(t, N * s("pred_within_iid"), "--", color="C3", label="i.i.d. prediction")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{label}, N = {N}", fontsize=8)
            ax.set_ylabel("N Var(R | theta)" if pre else "N Var(g | theta)", fontsize=8)
            ax.set_xlabel("t", fontsize=8)
    _figure_legend(fig, ncol=4)
    return fig


def _figure_legend(fig: Figure, ncol: int, handles: list | None = None) -> None:
    """One legend for the whole figure, above the panels: ``handles``, or every distinct label of its axes once."""
    seen = {}
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if handles is not None:
        seen = {h.get_label(): h for h in handles}
    height = fig.get_size_inches()[1]
    n_rows = -(-len(seen) // ncol)
    top = 1 - (0.12 + 0.22 * n_rows) / height
    fig.legend(list(seen.values()), list(seen), loc="upper center", ncol=ncol, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, top))


def plot_mean(est: xr.Dataset) -> Figure:
    """Simulated mean (99% t intervals) against ``h_t``, one panel per probe/risk."""
    rows, widths = _panels(est), est["width"].values
    fig = Figure(figsize=(3.3 * len(rows) + 0.5, 3.5))
    axes = fig.subplots(1, len(rows), squeeze=False)
    t = est["time"].values
    dt = 0.015 * (t.max() - t.min() if len(t) > 1 else 1.0)
    vl = est.attrs["verdict_level"]
    for k, (label, pre, probe) in enumerate(rows):
        ax = axes[0, k]
        h = _sel(est, pre + "h", probe).isel(width=0).transpose("time").values
        ax.plot(t, h, "-", color="k", label="limit h_t")
        for c, N in enumerate(widths):
            s = lambda n, pre=pre, probe=probe, N=N: _sel(est, pre + n, probe, width=N).values  # noqa: E731
            m = s("mean")
            err = np.stack([s("mean_error") - s("mean_error_lo"), s("mean_error_hi") - s("mean_error")])
            ax.errorbar(t + (c - (len(widths) - 1) / 2) * dt, m, yerr=err, fmt="o", ms=3, capsize=2,
                        color=f"C{c}", label=f"simulated mean, N = {N} ({vl:.0%} interval)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("t")
        ax.set_ylabel("mean risk R" if pre else "mean of g")
    _figure_legend(fig, ncol=min(len(widths) + 1, 4))
    return fig


def _headline(est: xr.Dataset) -> dict:
    """The headline cell: the most probable probe window (when known) at the last time."""
    # the most probable window; an AR(1) store's pi_probe is NaN: the first probe
    if VAR.pi_probe in est and np.isfinite(est[VAR.pi_probe].values).any():
        probe = est["probe"].values[int(np.nanargmax(est[VAR.pi_probe].values))]
    else:
        probe = est["probe"].values[0]
    return {"probe": probe, "time": est["time"].values[-1]}


def plot_convergence(rates: xr.Dataset, cell: dict) -> Figure:
    """``|mean - h|``, ``|ratio - 1|`` and the fluctuation sizes vs ``N`` (log-log) at ``cell`` and for the risk.

    A resolved point (more than ``min_sigma`` standard errors above 0) carries the bar
    ``v exp(+-2 se / v)``: two delta-method standard errors of ``log v``, the weights of the fit
    (at most a factor e either way).  A point within ``min_sigma`` standard errors of 0 is
    no magnitude: it is drawn as its upper bound ``v + 2 se`` (a downward triangle).
    """
    with np.errstate(all="ignore"):
        return _plot_convergence(rates, cell)


def _plot_convergence(rates: xr.Dataset, cell: dict) -> Figure:
    sets = [("", cell)] + ([("risk_", {"time": cell["time"]})] if "risk_slope" in rates else [])
    qs = list(rates["quantity"].values)
    fig = Figure(figsize=(3.0 * len(qs), 2.8 * len(sets) + 0.8))
    axes = fig.subplots(len(sets), len(qs), squeeze=False)
    N = rates["width"].values.astype(float)
    k = rates.attrs["min_sigma"]
    for r, (pre, sel) in enumerate(sets):
        for c, q in enumerate(qs):
            ax = axes[r, c]
            v = rates[pre + "value"].sel(quantity=q, **sel).values
            se = rates[pre + "value_se"].sel(quantity=q, **sel).values
            resolved = np.isfinite(v) & np.isfinite(se) & (v > 0) & (v >= k * se)
            noise = np.isfinite(v) & np.isfinite(se) & ~resolved
            f = np.exp(2 * se[resolved] / v[resolved])
            ax.errorbar(N[resolved], v[resolved], yerr=[v[resolved] * (1 - 1 / f), v[resolved] * (f - 1)],
                        fmt="o", color="C0", ms=4, capsize=2, label="resolved: value, bar 2 se of log value")
            ax.plot(N[noise], (v + 2 * se)[noise], "v", mfc="none", color="C0",
                    label=f"within {k:g} se of 0: upper bound value + 2 se")
            slope = float(rates[pre + "slope"].sel(quantity=q, **sel))
            if np.isfinite(slope):
                b = float(rates[pre + "intercept"].sel(quantity=q, **sel))
                lo_s = float(rates[pre + "slope_lo"].sel(quantity=q, **sel))
                hi_s = float(rates[pre + "slope_hi"].sel(quantity=q, **sel))
                ax.plot(N, np.exp(b) * N**slope, "-", color="C0", label="weighted least-squares fit")
                fit = f"slope {slope:.2f} [{lo_s:.2f}, {hi_s:.2f}]"
            else:
                fit = "slope not resolved"
            e = float(rates["expected_slope"].sel(quantity=q))
            if np.isfinite(e) and resolved.any():
                anchor = np.exp(np.mean(np.log(v[resolved])))
                Nm = np.exp(np.mean(np.log(N[resolved])))
                ax.plot(N, anchor * (N / Nm) ** e, ":", color="gray", label="predicted order (slope printed in panel)")
                fit += f", predicted {e:.2f}"
            ax.set_xscale("log")
            if (resolved | noise).any():
                ax.set_yscale("log")
                ax.margins(y=0.12)
                _plain_log_ticks(ax)
            else:
                ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
            ax.set_xticks(N, [str(int(n)) for n in N], fontsize=7)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("width N", fontsize=8)
            ax.set_ylabel(_QUANTITY_LABELS[q], fontsize=8)
            where = "stationary risk" if pre else f"probe {sel['probe']}"
            ax.set_title(f"{where}, t = {sel['time']:g}\n{fit}", fontsize=8)
    _figure_legend(fig, ncol=2)
    return fig


def plot_memory(mem: xr.Dataset) -> Figure:
    """Distance between two memory trajectories vs step, with the bound ``rho^(k+1) d_{-1}``."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    k = mem["step"].values
    ax.semilogy(k, mem["distance"].values, "o-", ms=3, label="max_i |S_k - S'_k|")
    ax.semilogy(k, mem["distance_rms"].values, "s-", ms=2, label="rms over units")
    ax.semilogy(k, mem["bound"].values, "k--", label=f"rho^(k+1) d, rho = {mem.attrs['rho']:g}")
    ax.set_xlabel("step k")
    ax.set_ylabel("distance between the trajectories")
    ax.set_title(f"memory contraction, N = {mem.attrs['width']}: rate {mem.attrs['rate']:.3f}/step, "
                 f"log rho = {mem.attrs['log_rho']:.3f}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- text


def _count(est, name, sel=None):
    v = est[name] if sel is None else est[name].sel(**sel)
    v = v.values.ravel()
    return int(np.sum(v == "consistent")), int(np.sum(v != "n/a"))


def _range(da, mask=None):
    v = da.values.ravel()
    if mask is not None:
        v = v[mask.values.ravel()]
    v = v[np.isfinite(v)]
    return (np.nan, np.nan) if v.size == 0 else (float(v.min()), float(v.max()))


def _fmt_units(units, limit=None):
    lines = [f"- width {u.width}, init {u.init}, data {u.data_start}-{u.data_stop - 1}" for u in units[:limit]]
    if limit is not None and len(units) > limit:
        lines.append(f"- ... and {len(units) - limit} more")
    return lines


def _verdicts(est, name, sel=None):
    """``(consistent, cells with a verdict, lo, hi)`` of ``verdict_<name>`` and ``ratio_<name>`` (the summary's unit).

    ``name`` may carry the ``risk_`` prefix; ``sel`` restricts the cells (e.g. one width).
    """
    pre, base = ("risk_", name[5:]) if name.startswith("risk_") else ("", name)
    c, n = _count(est, f"{pre}verdict_{base}", sel)
    ratio = est[f"{pre}ratio_{base}"] if base != "mean" else est[f"{pre}mean_error"]
    lo, hi = _range(ratio if sel is None else ratio.sel(**sel))
    return c, n, lo, hi


def _correlation_sentence(est) -> str:
    """Whether the chain's correlations add or remove variance relative to i.i.d. inputs (Poisson vs i.i.d.)."""
    p = est["pred_within_poisson"].values.ravel()
    i = est["pred_within_iid"].values.ravel()
    ok = np.isfinite(p) & np.isfinite(i) & ((p > 0) | (i > 0))
    if not ok.any():
        return ""
    more, less = int(np.sum(p[ok] > i[ok])), int(np.sum(p[ok] < i[ok]))
    if less == 0:
        return " Correlated inputs of the chain add variance that only the Poisson equation accounts for."
    if more == 0:
        return (" The chain's correlations remove variance here (the Poisson prediction is below the i.i.d. one in "
                "every cell), which only the Poisson equation accounts for.")
    return (f" The chain's correlations add variance in {more} cells and remove it in {less} (Poisson vs i.i.d. "
            "prediction); only the Poisson equation accounts for either.")


def _chance(c: int, n: int, level: float) -> bool:
    """Whether ``n - c`` inconsistent cells of ``n`` are no more than an exact prediction gives by chance: at most
    the 99% quantile of Binomial(n, 1 - level) (cells sharing replicas are not independent: a guide, not a test)."""
    return n - c <= stats.binom.ppf(0.99, n, 1 - level)


_MEANS = " *What it means:* "


def summary(est: xr.Dataset, rates: xr.Dataset | None = None, mem: xr.Dataset | None = None,
            missing: list | None = None, notes: Iterable[str] = ()) -> list[str]:
    """The plain-language summary, as Markdown bullet lines (``notes``: extra bullets, e.g. warnings)."""
    lines = list(notes)
    vl = est.attrs["verdict_level"]
    chance = 1 - vl
    n_done, n_all = est.attrs["n_done"], est.attrs["n_replicas"]
    have = est["n_init"] > 0
    widths_done = [int(N) for N in est["width"].values if bool(have.sel(width=N).any())]
    if not widths_done:
        return lines + ["- **No replica is done yet.** There is nothing to compare; the missing units are listed "
                        "below."]
    Nmax = widths_done[-1]
    c, n, lo, hi = _verdicts(est, "poisson", {"width": Nmax})
    ca, na, _, _ = _verdicts(est, "poisson")
    lines.append(
        f"- **Headline: fluctuations across data sequences.** At the largest width with data (N = {Nmax}) the "
        f"variance across data sequences at a fixed initialisation is {lo:.2f}-{hi:.2f} times the "
        f"Poisson-equation prediction V_t/N, and consistent with it at {vl:.0%} in {c} of {n} (time, probe) cells. "
        f"Over all widths: {ca} of {na} cells consistent (about {chance * na:.1f} would disagree by chance "
        "if the prediction were exact)." + (
            "" if not n else _MEANS + (
                "the trained network's fluctuations across data sequences are what the Poisson equation of the "
                "data chain predicts: the theory's central claim holds at this width." if _chance(c, n, vl) else
                f"{n - c} cells disagree where about {chance * n:.1f} would by chance: at N = {Nmax} the variance "
                "across data sequences is not yet V_t/N. If the ratios move towards 1 as N grows (section 1) this "
                "is a finite-width effect; if not, the prediction fails here."))
    )
    ci, ni, lo_i, hi_i = _verdicts(est, "iid")
    if ni:
        verb = "is rejected" if ci == 0 else "fails" if ci < ni else "is not rejected"
        meaning = (
            "treating the chain's inputs as independent gets the variance wrong; the Poisson correction for their "
            "correlations is needed, as the theory says." if ci == 0 else
            "the i.i.d. prediction misses the variance where the chain's correlations matter; the Poisson "
            "correction is needed there." if ci < ni else
            "here the replicas cannot tell the i.i.d. prediction from the Poisson one: the chain's correlations "
            "change the variance too little to be seen.")
        lines.append(
            f"- **The naive i.i.d. prediction {verb}** in {ni - ci} of {ni} cells: the simulated variance is "
            f"{lo_i:.2f}-{hi_i:.2f} times what it predicts.{_correlation_sentence(est)}{_MEANS}{meaning}"
        )
    if bool(est["deterministic"].any()) if "deterministic" in est else False:
        t0 = sorted({float(t) for t in est["time"].values[est["deterministic"].any(
            [d for d in est["deterministic"].dims if d != "time"]).values]})
        lines.append(f"- At t = {', '.join(f'{t:g}' for t in t0)} no data have been seen: g depends on the "
                     "initialisation only, both variance predictions are 0, and those cells are shown as "
                     "deterministic (no data-variance comparison).")
    disp = est["within_dispersion"].median(["time", "probe"])
    noisy = [int(N) for N, d in zip(est["width"].values, disp.values, strict=True) if np.isfinite(d) and d > 1.5]
    if noisy:
        lines.append(
            f"- Var(g | theta) differs between initialisations more than sampling explains at N = "
            f"{', '.join(map(str, noisy))} (median dispersion "
            f"{', '.join(f'{float(disp.sel(width=N)):.1f}' for N in noisy)}; 1 if it were common), a finite-N "
            "effect of the initial offset; the comparisons use init-robust intervals that include it."
        )
    cb, nb, lo_b, hi_b = _verdicts(est, "init")
    lines.append(
        f"- **Fluctuations across initialisations.** The between-init variance agrees with the prediction "
        f"N^(1-2 beta) E_t C_0 E_t^T in {cb} of {nb} cells (ratios {lo_b:.2f}-{hi_b:.2f}; with few inits these "
        "intervals are wide)." + ("" if not nb else _MEANS + (
            "the spread caused by the random initialisation is the leading-order term of the theory; its standard "
            "deviation shrinks like N^(1/2-beta), more slowly than the data fluctuations (N^(-1/2))."
            if _chance(cb, nb, vl) else
            "the variance across initialisations departs from its leading-order prediction more than chance "
            "explains: higher-order terms in 1/N matter at these widths."))
    )
    cm, nm, _, _ = _verdicts(est, "mean")
    err = np.abs(est["mean_error"])
    if np.isfinite(err).any():
        ev = err.transpose("width", ...).values
        w_N = int(est["width"].values[np.unravel_index(np.nanargmax(ev), ev.shape)[0]])
        lines.append(
            f"- **Mean.** The simulated mean agrees with the limit h_t in {cm} of {nm} cells, within intervals "
            f"that include initialisation noise; the largest |mean - h_t| is {float(err.max()):.3g} (at N = {w_N})."
            + _MEANS + ("the network's average output follows the kernel limit h_t: the law of large numbers of the "
                        "theory holds at these widths, with deviations below the noise." if _chance(cm, nm, vl) else
                        "the mean has not reached h_t at these widths: a finite-width bias larger than the noise "
                        "(its decay in N is in section 5).")
        )
    if "risk_verdict_poisson" in est and _count(est, "risk_verdict_poisson")[1]:
        cr, nr, lo_r, hi_r = _verdicts(est, "risk_poisson")
        cri, nri, _, _ = _verdicts(est, "risk_iid")
        crm, nrm, _, _ = _verdicts(est, "risk_mean")
        lines.append(
            f"- **Stationary risk.** Its variance across data sequences is {lo_r:.2f}-{hi_r:.2f} times the Poisson "
            f"prediction (consistent in {cr} of {nr} (width, time) cells; the i.i.d. prediction consistent in "
            f"{cri} of {nri}); its mean agrees with the limit risk in {crm} of {nrm}." + _MEANS + _risk_meaning(
                _chance(cr, nr, vl), _chance(crm, nrm, vl), cri < nri)
        )
    if rates is not None:
        lines.append(_rate_summary(est, rates))
    if mem is not None:
        ok = "holds" if mem.attrs["bound_holds"] else "is VIOLATED"
        lines.append(
            f"- **Memory fixed point.** Two memory trajectories of one N = {mem.attrs['width']} network, started "
            f"apart and driven by the same data, get closer by a factor {np.exp(mem.attrs['rate']):.3f} per step "
            f"(log-rate {mem.attrs['rate']:.3f}) against the contraction bound rho = {mem.attrs['rho']:g} "
            f"(log rho = {mem.attrs['log_rho']:.3f}); the bound rho^k {ok}." + _MEANS + (
                "the network forgets its starting state geometrically, which is why a window of L steps stands in "
                "for the infinite past in the limit." if mem.attrs["bound_holds"] else
                "the contraction the theory assumes fails for this network: its memory of the past does not fade "
                "as fast as rho^k, and the limit's window may be too short.")
        )
    if n_done == n_all and not missing:
        lines.append(f"- **Complete store:** all {n_all} replicas done.")
    else:
        k = len(missing) if missing is not None else None
        lines.append(
            f"- **Partial store:** {n_done} of {n_all} replicas done ({n_done / n_all:.0%})"
            + (f"; {k} units missing, listed at the end." if k is not None else ".")
            + " Every number uses the done replicas only."
        )
    return lines


def _risk_meaning(var_ok: bool, mean_ok: bool, iid_fails: bool) -> str:
    """What the risk's verdicts say about the theory."""
    if var_ok and mean_ok:
        return ("the predictions carry over from single outputs to the training loss itself, a quadratic "
                "functional of g (linearised around h_t)" + (", and the i.i.d. shortcut fails there too." if iid_fails
                                                               else "."))
    if mean_ok:
        return ("the limit risk is right, but the risk's fluctuations disagree with their Poisson prediction more "
                "than chance explains: the linearisation around h_t is not yet accurate at these widths.")
    return ("the risk has not reached its limit at these widths (a finite-width bias larger than the noise), so its "
            "fluctuations are not yet those of the linearised theory either." if not var_ok else
            "the risk's fluctuations follow the Poisson prediction, but its mean has not reached the limit risk at "
            "these widths: a finite-width bias larger than the noise.")


def _rate_summary(est, rates) -> str:
    cell = _headline(est)
    W = int((est["n_init"] > 0).any([d for d in est["n_init"].dims if d != "width"]).sum())
    head = (f"- **Rates** (log-log slopes across {W} widths with data, probe {cell['probe']}, t = {cell['time']:g}; "
            f"predicted orders: init fluctuations N^(1/2-beta) = N^{rates.attrs['order_init']:.2f}, data fluctuations "
            f"N^{rates.attrs['order_data']:.2f}). ")
    if W < 2:
        return head + "Need at least two widths with data."
    sizes, devs = [], []
    for q in rates["quantity"].values:
        r = rates.sel(quantity=q, **cell)
        s, n_used = float(r["slope"]), int(r["n_used"])
        label = _QUANTITY_LABELS[q]
        if not np.isfinite(s):
            text = f"{label}: not resolved (within 2 standard errors of 0 at {W - n_used} of {W} widths)"
        else:
            ci = f"[{float(r['slope_lo']):.2f}, {float(r['slope_hi']):.2f}]"
            text = f"{label}: slope {s:.2f} {ci} from {n_used} widths"
        if np.isfinite(float(r["expected_slope"])):
            if np.isfinite(s):
                text += f", predicted {float(r['expected_slope']):.2f}: {r['slope_verdict'].item()} at 99%"
            sizes.append(text)
        else:
            devs.append(text)
    verdicts = [str(rates.sel(quantity=q, **cell)["slope_verdict"].item()) for q in rates["quantity"].values
                if np.isfinite(float(rates["expected_slope"].sel(quantity=q)))]
    fitted = [q for q in rates["quantity"].values if np.isfinite(float(rates.sel(quantity=q, **cell)["slope"]))
              and not np.isfinite(float(rates["expected_slope"].sel(quantity=q)))]
    meaning = ("the fluctuations shrink with N consistently with the rates the theory implies (to within the "
               "slopes' intervals, wide when there are few widths)" if verdicts and
               all(v == "consistent" for v in verdicts) else
               "at least one fluctuation size does not shrink at the theory's rate over these widths"
               if "inconsistent" in verdicts else "the fluctuation sizes' rates cannot be tested here")
    meaning += ("; the deviations from the limit are below the Monte Carlo noise at every width, so their decay "
                "cannot be measured with these replicas." if not fitted else
                "; the deviations from the limit that are resolved have the fitted slopes above (the theory states "
                "no order for them).")
    return (head + "Fluctuation sizes: " + "; ".join(sizes) + ". Deviations from the limit: "
            + "; ".join(devs) + "." + _MEANS + meaning)


_QUANTITY_TEXT = {"poisson": "N·Var / V_t (Poisson)", "init": "between-init var / prediction",
                  "mean": "mean - h_t"}


_RATIO_BAND = ("ratio_poisson", "ratio_poisson_lo", "ratio_poisson_hi")


def _draw_extrapolation(ax, widths, band: np.ndarray, fit: dict, labels: bool = False) -> float:
    """Draw the ratio and its verdict interval per width (``band``: ``(W, 3)`` value, lo, hi) against
    ``N^-gamma``, the fitted line ``r_inf (1 + c N^-gamma)``, ``r_inf`` with its interval at 0 and the theory's
    limit 1; returns the fit's gamma."""
    g = fit["gamma"]
    N = np.asarray(widths, dtype=float)
    r, lo, hi = band[:, 0], band[:, 1], band[:, 2]
    ok = np.isfinite(r)
    if np.isfinite(g) and ok.any():
        xs = N[ok] ** -g
        ax.errorbar(xs, r[ok], yerr=[r[ok] - lo[ok], hi[ok] - r[ok]], fmt="o", color="C0", capsize=3,
                    label="simulation (verdict interval)" if labels else None)
        grid = np.linspace(0, xs.max() * 1.05, 50)
        ax.plot(grid, fit["r_inf"] * (1 + fit["c"] * grid), color="C1",
                label=f"fit, gamma = {g:.2f}" if labels else None)
        ax.errorbar([0.0], [fit["r_inf"]], yerr=[[fit["r_inf"] - fit["r_inf_lo"]], [fit["r_inf_hi"] - fit["r_inf"]]],
                    fmt="s", color="C1", capsize=4, label="r_inf (interval)" if labels else None)
    ax.axhline(1.0, color="0.4", lw=0.8, ls="--", label="the theory's limit, 1" if labels else None)
    return g


def plot_extrapolation(est: xr.Dataset, ext: xr.Dataset, cell: dict) -> Figure:
    """The Poisson ratio ``N Var / V_t`` against ``N^-gamma`` at ``cell``, with the fitted line
    ``r_inf (1 + c N^-gamma)`` and ``r_inf``'s interval at ``N^-gamma = 0`` (docs/model.md#extrapolation)."""
    x = ext.sel(quantity="poisson", **cell)
    e = est.sel(**cell)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.subplots()
    _draw_extrapolation(ax, est["width"].values, np.stack([e[k].values for k in _RATIO_BAND], axis=1),
                        {k: float(x[k]) for k in ("r_inf", "r_inf_lo", "r_inf_hi", "c", "gamma")}, labels=True)
    ax.set_xlabel("N^-gamma  (N = width)")
    ax.set_ylabel("N·Var / V_t")
    ax.set_title(f"Extrapolation to infinite width, t = {cell['time']:g}, probe {cell['probe']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _extrapolation_table(ext: xr.Dataset) -> list[str]:
    rows = []
    for t in ext["time"].values:
        for p in ext["probe"].values:
            for q in ("poisson", "init", "mean"):
                x = ext.sel(quantity=q, time=t, probe=p)
                rows.append([f"{t:g}", str(p), _QUANTITY_TEXT[q],
                             _ci(float(x["r_inf"]), float(x["r_inf_lo"]), float(x["r_inf_hi"])),
                             _ci(float(x["gamma"]), float(x["gamma_lo"]), float(x["gamma_hi"]), ".2f"),
                             str(x["verdict_limit"].values)])
    return _table(["t", "probe", "quantity", "limit N -> inf [interval]", "gamma [range]", "verdict"], rows)


def _ci(v, lo, hi, f=".3g"):
    if not np.isfinite(v):
        return "n/a"
    return f"{v:{f}} [{lo:{f}}, {hi:{f}}]"


def _table(header, rows):
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731  (a literal | would split the cell)
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return out


def _cells(est, pre):
    """Iterate ``(label_cols, index)`` over (width, time[, probe]) cells with data; ``index`` into
    arrays ordered like :func:`_arrays`."""
    have = est[pre + "n_init"].transpose("width", ...).values > 0
    probes = [None] if pre else list(est["probe"].values)
    for iw, N in enumerate(est["width"].values):
        if not have[iw].any():
            continue
        for it, t in enumerate(est["time"].values):
            for ip, p in enumerate(probes):
                cols = [str(int(N)), f"{t:g}"] + ([] if p is None else [str(p)])
                yield cols, (iw, it) + (() if p is None else (ip,))


def _arrays(est, pre):
    """Variables with prefix ``pre`` as NumPy arrays ordered (width, time[, probe]) (one pass, no .sel per cell)."""
    dims = ("width", "time") + (() if pre else ("probe",))
    return {k[len(pre):]: est[k].transpose(*dims).values for k in est.data_vars
            if k.startswith(pre) and set(est[k].dims) == set(dims)}


def _variance_tables(est, pre):
    a = _arrays(est, pre)
    cols = ["width", "t"] + ([] if pre else ["probe"])
    rows_w, rows_b, rows_m = [], [], []
    for lab, i in _cells(est, pre):
        v = lambda k, i=i: float(a[k][i])  # noqa: E731
        N = int(lab[0])
        if "deterministic" in a and bool(a["deterministic"][i]):
            rows_w.append(lab + ["deterministic (no data seen)", f"{N * v('pred_within_poisson'):.3g}", "-", "-",
                                 f"{N * v('pred_within_iid'):.3g}", "-", "-", "-"])
        else:
            rows_w.append(lab + [
                _ci(N * v("within"), N * v("within_lo"), N * v("within_hi")),
                f"{N * v('pred_within_poisson'):.3g}",
                _ci(v("ratio_poisson"), v("ratio_poisson_lo"), v("ratio_poisson_hi")),
                str(a["verdict_poisson"][i]),
                f"{N * v('pred_within_iid'):.3g}",
                _ci(v("ratio_iid"), v("ratio_iid_lo"), v("ratio_iid_hi")),
                str(a["verdict_iid"][i]),
                f"{v('within_dispersion'):.2f}",
            ])
        rows_b.append(lab + [
            _ci(v("between"), v("between_lo"), v("between_hi")),
            f"{v('pred_between'):.3g}",
            _ci(v("ratio_init"), v("ratio_init_lo"), v("ratio_init_hi")),
            str(a["verdict_init"][i]),
            f"{int(v('n_init'))}",
        ])
        rows_m.append(lab + [
            f"{v('mean'):.4g} ± {v('mean_se'):.2g}",
            f"{v('h'):.4g}",
            _ci(v("mean_error"), v("mean_error_lo"), v("mean_error_hi")),
            str(a["verdict_mean"][i]),
        ])
    lvl, vl = est.attrs["level"], est.attrs["verdict_level"]
    tw = _table(cols + [f"N·within [{lvl:.0%} chi²]", "Poisson V_t", f"ratio [{vl:.0%}]", "verdict",
                        "i.i.d.", f"ratio [{vl:.0%}]", "verdict", "dispersion"], rows_w)
    tb = _table(cols + [f"between [{lvl:.0%} MLS]", "N^(1-2β)·coef", f"ratio [{vl:.0%}]", "verdict", "inits"],
                rows_b)
    tm = _table(cols + ["mean ± se", "h_t", f"mean − h [{vl:.0%}]", "verdict"], rows_m)
    return tw, tb, tm


def _rate_table(rates, pre):
    """The resolved slopes as a table, and the unresolved cells collapsed into one line (how many, which, why)."""
    rows = []
    probes = [None] if pre else list(rates["probe"].values)
    dims = ("quantity", "time") + (() if pre else ("probe",))
    a = {k: rates[pre + k].transpose(*dims).values for k in ("slope", "slope_lo", "slope_hi", "n_used",
                                                                "slope_verdict")}
    unresolved = {}
    for iq, q in enumerate(rates["quantity"].values):
        e = float(rates["expected_slope"].values[iq])
        for it, t in enumerate(rates["time"].values):
            for ip, p in enumerate(probes):
                i = (iq, it) + (() if p is None else (ip,))
                s = float(a["slope"][i])
                if not np.isfinite(s):
                    unresolved.setdefault(q, []).append(f"t = {t:g}" + ("" if p is None else f", probe {p}"))
                    continue
                rows.append([_QUANTITY_LABELS[q], f"{t:g}"] + ([] if p is None else [str(p)]) + [
                    _ci(s, float(a["slope_lo"][i]), float(a["slope_hi"][i]), ".2f"),
                    str(int(a["n_used"][i])),
                    f"{e:.2f}" if np.isfinite(e) else "-",
                    str(a["slope_verdict"][i]) if np.isfinite(e) else "-",
                ])
    cols = ["quantity", "t"] + ([] if pre else ["probe"]) + [
        f"slope [{rates.attrs['level']:.0%}]", "widths used", "predicted order", "verdict [99%]"]
    out = _table(cols, rows) + [""] if rows else []
    n_cells = len(rates["quantity"]) * len(rates["time"]) * len(probes)
    n_un = sum(len(v) for v in unresolved.values())
    if n_un:
        cell = "(quantity, t)" if pre else "(quantity, t, probe)"
        which = "; ".join(f"`{_QUANTITY_LABELS[q]}` in {len(v)}" + (f" ({', '.join(v)})" if len(v) <= 3 else "")
                          for q, v in unresolved.items())
        out.append(f"**Not resolved: {n_un} of {n_cells} {cell} cells**, left out of the table above: {which}. "
                   f"Fewer than two widths have the quantity more than {rates.attrs['min_sigma']:g} standard errors "
                   "above 0, so no slope can be fitted: at these widths the quantity cannot be told from 0, it is "
                   "below the Monte Carlo noise (more replicas would resolve it).")
    return out


# --------------------------------------------------------------------------- the report


def write_report(dataset_or_path: xr.Dataset | str | os.PathLike, out_dir: str | os.PathLike,
                 memory: xr.Dataset | str | None = "auto", level: float = 0.95,
                 verdict_level: float = 0.99, source: str | None = None, summary_out: list | None = None) -> Path:
    """Write ``report.md`` and its PNGs into ``out_dir`` (created); return the report's path.

    The report is what ``distntk report`` writes: a summary, the variance, mean, risk, rate,
    extrapolation and memory sections with their plots, the missing units and a glossary
    (docs/report-format.md).  The numbers are ``estimate``'s, ``convergence_rates``' and
    ``extrapolate``'s.

    Parameters
    ----------
    dataset_or_path : xarray.Dataset or str or os.PathLike
        A store Dataset (``distntk.open_store``), used as it is, or a store's path or URL,
        opened through ``open_dataset``: damaged units are left out (not done) and outliers
        flagged, and the summary names both.
    out_dir : str or os.PathLike
        The folder to write into; created if missing.
    memory : xarray.Dataset or str or None, optional
        ``"auto"`` computes ``distntk.memory.memory_contraction`` from the spec stored in the
        store (section 6 says why when it cannot); a ``memory_contraction`` result is used as
        is; ``None`` leaves it out.
    level : float, optional
        The confidence level of the components' own intervals and of the extrapolation.
    verdict_level : float, optional
        The level of the verdicts and of the rates' brackets.
    source : str or None, optional
        The store's name in the header; ``None``: the path, if one was given.
    summary_out : list or None, optional
        When given, the summary's bullet lines are appended to it (``distntk demo`` prints them).

    Returns
    -------
    pathlib.Path
        The path of ``report.md``.

    Raises
    ------
    ValueError
        If ``memory`` is a string other than ``"auto"``.
    distntk.store.StoreError
        If the store at ``dataset_or_path`` cannot be read.
    distntk.estimator.EstimateError
        If the dataset is not a result store.
    """
    ds = open_dataset(dataset_or_path)
    why_no_memory = "Not computed for this report (pass `memory=distntk.memory_contraction(...)`)."
    if isinstance(memory, str):
        if memory != "auto":
            raise ValueError(f"memory={memory!r}; expected 'auto', None or a memory_contraction Dataset")
        memory, why_no_memory = _store_memory(ds)
    if source is None and not isinstance(dataset_or_path, xr.Dataset):
        source = os.fspath(dataset_or_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    est = estimate(ds, level=level, verdict_level=verdict_level)
    rates = convergence_rates(est, level=verdict_level)
    missing = missing_units(ds)
    figs = {"nvar_vs_t.png": plot_nvar(est), "mean_vs_h.png": plot_mean(est)}
    n_widths = int((est["n_init"] > 0).any([d for d in est["n_init"].dims if d != "width"]).sum())
    if n_widths >= 2:
        figs["convergence.png"] = plot_convergence(rates, _headline(est))
    ext = extrapolate(est, level=level) if n_widths >= 3 else None
    if ext is not None:
        figs["extrapolation.png"] = plot_extrapolation(est, ext, _headline(est))
    if memory is not None:
        figs["memory.png"] = plot_memory(memory)
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=110)

    a = ds.attrs
    title = a.get("title") or "distntk result store"
    md = [f"# {title}", ""]
    meta = [f"store `{source}`" if source is not None else "in-memory dataset"]
    for k in ("spec_hash", "created", "updated", "distntk_version"):
        if a.get(k):
            meta.append(f"{k} `{str(a[k])[:16] if k == 'spec_hash' else a[k]}`")
    md += [" · ".join(meta), "",
           f"beta = {a.get('beta')}, alpha = {a.get('alpha')}, T = {a.get('T')}, L = {a.get('L')}, "
           f"widths {', '.join(str(int(N)) for N in ds['width'].values)}, {ds.sizes['init']} inits x "
           f"{ds.sizes['data']} data sequences, seed {a.get('seed')}.", ""]
    notes = [f"- **Damaged units left out.** {a_}" for a_ in [ds.attrs.get("distntk_left_out")] if a_]
    notes += [f"- **Outlier flags (kept).** {a_}" for a_ in [ds.attrs.get("distntk_flagged")] if a_]
    notes += [n for n in [_memory_window_note(ds)] if n]
    bullets = summary(est, rates, memory, missing, notes=notes)
    if summary_out is not None:
        summary_out.extend(bullets)
    md += ["## Summary", "", "Every term is defined in the [glossary](#glossary) at the end.", ""] + bullets + [
        "",
        f"Verdicts are per cell at {verdict_level:.0%}: \"consistent\" means the interval contains the prediction. "
        f"Even an exact prediction disagrees in about {1 - verdict_level:.0%} of cells; neighbouring times and probes "
        "share replicas, so the cells are not independent.",
        "",
    ]
    tw, tb, tm = _variance_tables(est, "")
    md += ["## 1. Variance across data sequences: Poisson vs i.i.d. (docs/model.md#poisson)", "",
           "![N Var vs t](nvar_vs_t.png)", "",
           f"Points: N times the pooled within-init variance; band: the {verdict_level:.0%} init-robust interval "
           "used for the verdicts; solid: Poisson prediction V_t; dashed: i.i.d. prediction. The table's "
           f"chi-square interval ({level:.0%}) assumes Var(g | theta) is the same for every init; `dispersion` "
           "(1 when it is) measures how far that holds.", "",
           "### N·Var across data sequences against the Poisson (V_t) and i.i.d. predictions, per (width, t, probe)",
           ""] + tw + [""]
    md += ["## 2. Variance across initialisations (docs/model.md#init)", "",
           "### Between-init variance against N^(1-2β) E_t C_0 E_tᵀ, per (width, t, probe)", ""] + tb + [""]
    md += ["## 3. Mean vs the limit h_t (docs/model.md#limit-ode)", "", "![mean vs h](mean_vs_h.png)", "",
           "Intervals: t with (inits - 1) degrees of freedom on the init means, so they include the "
           "initialisation noise.", "", "### Simulated mean against the limit h_t, per (width, t, probe)", ""]
    md += tm + [""]
    if "risk_within" in est:
        rw, rb, rm = _variance_tables(est, "risk_")
        md += ["## 4. Stationary risk R(g) = 1/2 sum_z pi_L(z) (f(z) - g(z))^2", "",
               "The same comparisons for the risk, linearised around h_t for the predictions.", "",
               "### Risk: N·Var across data sequences against its Poisson and i.i.d. predictions, per (width, t)",
               ""] + rw + ["", "### Risk: between-init variance against its prediction, per (width, t)", ""]
        md += rb + ["", "### Risk: simulated mean against the limit risk, per (width, t)", ""] + rm + [""]
    md += ["## 5. Convergence rates (docs/model.md#rates)", ""]
    if "convergence.png" in figs:
        md += ["![convergence](convergence.png)", "",
               f"Weighted least squares of log q on log N with delta-method errors; points within "
               f"{rates.attrs['min_sigma']:g} standard errors of 0 are noise and left out (drawn as their upper "
               "bound). Reference orders: init "
               f"fluctuations N^(1/2-beta) = N^{rates.attrs['order_init']:.2f}, data fluctuations N^-0.5.", "",
               f"### Slopes in N at every (t, probe), {rates.attrs['level']:.0%} intervals", ""]
        md += _rate_table(rates, "") + [""]
        if "risk_slope" in rates:
            md += [f"### Slopes in N of the stationary risk, at every t, {rates.attrs['level']:.0%} intervals", ""]
            md += _rate_table(rates, "risk_") + [""]
    else:
        md += ["Needs at least two widths with data.", ""]
    md += ["## 5b. Extrapolation to infinite width (docs/model.md#extrapolation)", ""]
    if ext is not None:
        md += ["![extrapolation](extrapolation.png)", "",
               "Each comparison fitted across the widths as r_inf (1 + c N^-gamma) (the mean: d_inf + c N^-gamma), "
               "gamma profiled over 0.02 to 1.5; the interval is the union of the fixed-gamma intervals the "
               f"profile does not reject, at {level:.0%}, with the estimator's own errors. \"consistent in the "
               "limit\": the interval holds the theory's limit (1 for the ratios, 0 for the mean). A wide "
               "interval says the widths do not pin the limit down, not that the theory fails.", ""]
        md += ["### Each comparison's limit N -> infinity, per (t, probe)", ""] + _extrapolation_table(ext) + [""]
    else:
        md += ["Needs at least three widths with data.", ""]
    md += ["## 6. Memory fixed point (docs/model.md#memory)", ""]
    if memory is not None:
        m = memory.attrs
        md += ["![memory](memory.png)", "",
               f"Width {m['width']}, init {m['init']}: fitted rate {m['rate']:.4f} ± {m['rate_se']:.1g} per step; "
               f"log rho = {m['log_rho']:.4f}; log(max_i |b^i| sup|sigma'|) = {m['log_max_b']:.4f}; "
               f"bound max_i |S_k - S'_k| <= rho^(k+1) d holds: {m['bound_holds']}.", ""]
    else:
        md += [why_no_memory, ""]
    md += ["## Missing units", ""]
    if missing:
        md += [f"{len(missing)} units (width, init, data range) are not done:", ""] + _fmt_units(missing, 200) + [""]
    else:
        md += ["None: every unit is done.", ""]
    md += ["## Method", "",
           "One-way random effects per (width, time, probe): within-init variance = pooled variance across data "
           "sequences (chi-square interval); between-init variance = (S_1^2 - MSW)/n~ from the unweighted init "
           "means, truncated at 0, with the modified large-sample interval; mean = mean of the init means with a "
           "t interval. Comparisons with V_t/N use an init-robust standard error. Formulas and the choice of "
           "intervals: the docstring of `distntk/estimator.py`.", ""]
    md += _glossary(out) + [""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


# --------------------------------------------------------------------------- sweeps


def sweep_headlines(catalog: Catalog, level: float = 0.95, verdict_level: float = 0.99) -> list[dict]:
    """Per member of a :class:`~distntk.catalog.Catalog`: the headline comparisons.

    The headline cell is the most probable probe at the last time (as in a
    store's report), at the largest width with done replicas.  Each row holds the
    member's swept key values, ``N``, ``t``, ``probe``, the replicas done, and
    ``ratio_poisson``, ``ratio_iid``, ``ratio_init`` with their intervals at
    ``verdict_level`` and verdicts, plus ``beta`` and ``between``/``pred_between``.
    """
    keys = catalog.swept
    rows = []
    for name in catalog.stores:
        ds, _ = catalog.checked(name)
        row = {"store": name, **{k: catalog.spec_value(name, k) for k in keys}, "beta": float(ds.attrs["beta"])}
        est = estimate(ds, level=level, verdict_level=verdict_level)
        with_data = [int(N) for N in est["width"].values if int(est["n_init"].sel(width=N).max()) > 0]
        row.update(n_done=int(est.attrs["n_done"]), n_replicas=int(est.attrs["n_replicas"]))
        if not with_data:
            rows.append({**row, "width": None})
            continue
        cell = {**_headline(est), "width": max(with_data)}
        e = est.sel(cell)
        row.update(width=cell["width"], time=float(cell["time"]), probe=str(cell["probe"]))
        for q in ("ratio_poisson", "ratio_iid", "ratio_init"):
            row.update({q: float(e[q]), f"{q}_lo": float(e[f"{q}_lo"]), f"{q}_hi": float(e[f"{q}_hi"]),
                        f"verdict_{q.removeprefix('ratio_')}": str(e[f"verdict_{q.removeprefix('ratio_')}"].values)})
        row.update(between=float(e["between"]), pred_between=float(e["pred_between"]))
        if len(with_data) >= 3:  # the extrapolation of the Poisson ratio at the headline (time, probe)
            x = extrapolate(est, level=level).sel(quantity="poisson", time=cell["time"], probe=cell["probe"])
            row.update({k: float(x[k]) for k in ("r_inf", "r_inf_lo", "r_inf_hi", "c", "gamma")},
                       verdict_limit=str(x["verdict_limit"].values),
                       per_width={int(N): tuple(float(est[k].sel(width=N, time=cell["time"], probe=cell["probe"]))
                                                for k in _RATIO_BAND) for N in with_data})
        rows.append(row)
    return rows


def plot_sweep_extrapolation(rows: list[dict], keys: list[str]) -> Figure:
    """One panel per member with three widths or more: the headline ratio ``N Var / V_t`` against
    ``N^-gamma`` (the member's fitted gamma), the fitted line and ``r_inf`` with its interval at 0."""
    members = [r for r in rows if "r_inf" in r]
    ncol = min(3, len(members))
    nrow = -(-len(members) // ncol)
    fig = Figure(figsize=(4.0 * ncol, 3.2 * nrow))
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, r in zip(axes, members, strict=False):
        N = sorted(r["per_width"])
        g = _draw_extrapolation(ax, N, np.array([r["per_width"][n] for n in N]), r)
        title = ", ".join(f"{k.split('.')[-1]}={_key_text(r[k])}" for k in keys)
        if not title or len(title) > 45:  # a zip's matrices and tables: the member's name says it shorter
            title = str(r["store"]).removesuffix(".zarr")
        ax.set_title(title if len(title) <= 45 else title[:42] + "...", fontsize=9)
        ax.set_xlabel(f"N^-gamma (gamma = {g:.2f})", fontsize=8)
        ax.set_ylabel("N·Var / V_t", fontsize=8)
    for ax in axes[len(members):]:
        ax.set_visible(False)
    fig.suptitle("Headline ratio against N^-gamma: points per width, fit r_inf (1 + c N^-gamma), square r_inf",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _key_text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def _sweep_axes(rows: list[dict], keys: list[str]) -> list[list[str]]:
    """The swept keys grouped into plot axes: keys whose values determine each other (a zip) share one."""
    groups: list[list[str]] = []
    for k in keys:
        for g in groups:
            ab, ba, ok = {}, {}, True
            for r in rows:
                va, vb = _key_text(r.get(g[0])), _key_text(r.get(k))
                if ab.setdefault(va, vb) != vb or ba.setdefault(vb, va) != va:
                    ok = False
                    break
            if ok:
                g.append(k)
                break
        else:
            groups.append([k])
    return groups


def _axis_label(r: dict, group: list[str]) -> str:
    """A row's value on an axis: the key's value, or for a zip the member name's label (e.g. ``sticky``)."""
    if len(group) == 1 and not isinstance(r.get(group[0]), (dict, list)):
        return _key_text(r.get(group[0]))
    labels = [p for p in str(r.get("store", "")).split(",") if "=" not in p and "@" not in p]
    text = ",".join(labels) or "; ".join(_key_text(r.get(k)) for k in group)
    return text if len(text) <= 40 else text[:37] + "..."


def plot_sweep_ratios(rows: list[dict], keys: list[str], verdict_level: float) -> Figure:
    """The headline ratios N Var / Poisson and N Var / i.i.d. with intervals, one panel per swept axis
    (keys varied together, a zip, share one panel).

    Colour: the prediction; marker: the member's values on the other axes (named in the one legend with their
    keys), each marker shifted a little along the axis.
    """
    from matplotlib.lines import Line2D

    keys = keys or ["store"]
    rows = [r for r in rows if r.get("width") is not None]
    axes_keys = _sweep_axes(rows, keys)
    fig = Figure(figsize=(5.2 * len(axes_keys), 4.4))
    axes = fig.subplots(1, len(axes_keys), squeeze=False)
    colours = {"ratio_poisson": "C0", "ratio_iid": "C3"}
    handles = [Line2D([], [], color=colours["ratio_poisson"], marker="o", ls="none", label="N Var / Poisson V_t"),
               Line2D([], [], color=colours["ratio_iid"], marker="o", ls="none", label="N Var / i.i.d. prediction")]
    for ax, group in zip(axes[0], axes_keys, strict=True):
        key = group[0]
        numeric = len(group) == 1 and all(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
                                          for r in rows)
        values = sorted({_axis_label(r, group) for r in rows})
        others = [g for g in axes_keys if g is not group]
        label_of = lambda r, others=others: ", ".join(_axis_label(r, g) for g in others)  # noqa: E731
        groups = sorted({label_of(r) for r in rows})
        span = np.ptp([float(r[key]) for r in rows]) if numeric else 1.0
        for gi, g in enumerate(groups):
            sub = [r for r in rows if label_of(r) == g]
            x = np.array([r[key] if numeric else values.index(_axis_label(r, group)) for r in sub], dtype=float)
            marker = "os^Dvp"[gi % 6]
            for qi, q in enumerate(("ratio_poisson", "ratio_iid")):
                off = ((gi * 2 + qi) - (2 * len(groups) - 1) / 2) * (0.015 if numeric else 0.06) * (span or 1.0)
                y = np.array([r[q] for r in sub])
                err = np.array([[r[q] - r[f"{q}_lo"] for r in sub], [r[f"{q}_hi"] - r[q] for r in sub]])
                ax.errorbar(x + off, y, yerr=err, fmt=marker, ms=4, capsize=2, color=colours[q])
            if g:
                handles.append(Line2D([], [], color="gray", marker=marker, ls="none",
                                      label=f"{' + '.join(k for o in others for k in o)}: {g}"))
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        _plain_log_ticks(ax)
        ax.set_xlabel(" + ".join(group))
        if not numeric:
            ax.set_xticks(range(len(values)), values, rotation=20, fontsize=7)
        ax.set_ylabel(f"N Var / prediction ({verdict_level:.0%} interval)")
    _figure_legend(fig, ncol=2, handles=handles)
    return fig


def _plain_log_ticks(ax) -> None:
    """Plain numbers on a log y axis; the minor ticks labelled only when the axis spans less than a decade."""
    lo, hi = ax.get_ylim()
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.2g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain if hi / lo < 10 else matplotlib.ticker.NullFormatter())
    ax.tick_params(axis="y", which="both", labelsize=7)


def plot_sweep_init(rows: list[dict], verdict_level: float, keys: list[str] | None = None) -> Figure:
    """Between-init variance over its prediction N^(1-2 beta) var_init_coef, against beta, on a log axis.

    Colour: the width; marker and line style: the member's other swept values (e.g. the chain), so members at
    equal beta stay apart (each also shifted a little along beta).  The axis spans the ratios with a factor 30
    of room either way: a bar that runs off it goes further (a lower bound 0, an MLS interval that cannot
    exclude no between-init variance, always does), and a ratio of 0 (between truncated at 0) is a downward
    triangle on the bottom edge.
    """
    fig = Figure(figsize=(5.6, 4.4))
    ax = fig.subplots()
    rows = [r for r in rows if r.get("width") is not None]
    groups = [g for g in _sweep_axes(rows, list(keys or [])) if not any(k.split(".")[-1] == "beta" for k in g)]
    other = lambda r: ", ".join(_axis_label(r, g) for g in groups)  # noqa: E731
    kinds = sorted({other(r) for r in rows})
    widths = sorted({r["width"] for r in rows})
    betas = sorted({r["beta"] for r in rows})
    step = 0.025 * ((betas[-1] - betas[0]) or 1.0) if betas else 0.0
    ys = np.array([r["ratio_init"] for r in rows], dtype=float)
    pos = ys[np.isfinite(ys) & (ys > 0)]
    bounds = np.array([[r["ratio_init_lo"], r["ratio_init_hi"]] for r in rows], dtype=float).ravel()
    bounds = bounds[np.isfinite(bounds) & (bounds > 0)]
    if pos.size:
        bottom = max(np.min(np.concatenate([pos, bounds])), pos.min() / 30) / 1.5
        top = min(np.max(np.concatenate([pos, bounds])), pos.max() * 30) * 1.5
    else:
        bottom, top = 0.1, 10.0
    for ci, N in enumerate(widths):
        for ki, kind in enumerate(kinds):
            sub = sorted((r for r in rows if r["width"] == N and other(r) == kind), key=lambda r: r["beta"])
            if not sub:
                continue
            x = np.array([r["beta"] for r in sub]) + (ki - (len(kinds) - 1) / 2) * step
            y = np.array([r["ratio_init"] for r in sub], dtype=float)
            lo = np.array([r["ratio_init_lo"] for r in sub], dtype=float)
            hi = np.array([r["ratio_init_hi"] for r in sub], dtype=float)
            zero = ~(y > 0)
            y_shown = np.where(zero, bottom, y)
            lo = np.where(lo > 0, np.minimum(lo, y_shown), bottom / 10)  # below the axis: the bar runs off it
            label = f"N = {N}" + (f", {kind}" if kind else "")
            style = dict(color=f"C{ci}", ms=5, mfc="none" if ki % 2 else f"C{ci}")
            ax.errorbar(x, y_shown, yerr=[y_shown - lo, np.maximum(hi - y_shown, 0)], fmt="os^Dp"[ki % 5],
                        ls=["-", "--", ":", "-."][ki % 4], lw=0.8, capsize=2, label=label, **style)
            if zero.any():
                ax.plot(x[zero], y_shown[zero], "v", **style)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    _plain_log_ticks(ax)
    ax.set_xlabel("beta")
    ax.set_ylabel(f"between / N^(1-2 beta) E_t C_0 E_t^T ({verdict_level:.0%} MLS)")
    _figure_legend(fig, ncol=2)
    return fig


def _sweep_meanings(rows: list[dict], vl: float) -> list[str]:
    """One bullet per prediction: what the members' verdicts at the headline cell mean for the theory."""
    def names(q):
        bad = [f"`{r['store']}`" for r in rows if r.get(f"verdict_{q}") == "inconsistent"]
        return ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")

    n = len(rows)
    c = {q: sum(r.get(f"verdict_{q}") == "consistent" for r in rows) for q in ("poisson", "iid", "init")}
    out = ["- *What it means (Poisson):* " + (
        "across the swept settings the fluctuations across data sequences are what the Poisson equation "
        "predicts, within what chance allows." if _chance(c["poisson"], n, vl) else
        f"the Poisson prediction fails more often than chance explains, at {names('poisson')}: at the widths run, "
        "those settings are not yet in the regime the theory describes (or it does not hold there); compare their "
        "reports across widths.")]
    out.append("- *What it means (i.i.d.):* " + (
        "the naive i.i.d. prediction fails in every member: the chains' correlations change the variance throughout, "
        "and only the Poisson equation accounts for them." if c["iid"] == 0 else
        f"the i.i.d. prediction fails at {names('iid')} and is not rejected in {c['iid']} of {n} members: there the "
        "chain's correlations change the variance too little for these replicas to see."))
    out.append("- *What it means (initialisation):* " + (
        "the spread across initialisations follows its leading-order prediction N^(1-2β) E_t C_0 E_tᵀ across β, "
        "within what chance allows." if _chance(c["init"], n, vl) else
        f"the spread across initialisations departs from N^(1-2β) E_t C_0 E_tᵀ at {names('init')}, more often than "
        "chance explains: higher-order terms in 1/N matter for those settings at these widths."))
    return out


def write_sweep_report(catalog: Catalog, out_dir: str | os.PathLike, level: float = 0.95,
                       verdict_level: float = 0.99) -> Path:
    """Write the report of every store of a catalog (a sweep root) into ``out_dir``; return its path.

    ``sweep.md`` holds the headline ratios against each swept key (``ratios.png``),
    the between-init variance against its ``N^(1-2 beta)`` prediction across beta
    (``init.png``), a verdict table per member and the members that are missing or
    unfinished, named with their missing units.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = catalog.swept
    rows = sweep_headlines(catalog, level, verdict_level)
    figs = {}
    if any(r.get("width") is not None for r in rows):
        figs = {"ratios.png": plot_sweep_ratios(rows, keys, verdict_level),
                "init.png": plot_sweep_init(rows, verdict_level, keys)}
    if any("r_inf" in r for r in rows):
        figs["extrapolation.png"] = plot_sweep_extrapolation(rows, keys)
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=110)
    manifest = catalog.manifest or {}
    md = [f"# Sweep {manifest.get('name', '')}".rstrip(), "",
          f"root `{catalog.root}` · {len(catalog.stores)} stores read"
          + (f" of {len(manifest['members'])} members" if manifest else "")
          + (f" · swept keys: {', '.join(f'`{k}`' for k in keys)}" if keys else ""), ""]
    done = [r for r in rows if r["n_done"] == r["n_replicas"]]
    md += ["## Summary", ""]
    n_cons = sum(r.get("verdict_poisson") == "consistent" for r in rows)
    n_iid = sum(r.get("verdict_iid") == "consistent" for r in rows)
    with_data = [r for r in rows if r.get("width") is not None]
    md += [f"- {len(done)} of {len(rows)} stores are complete"
           + (f"; {len(catalog.problems)} members missing or unreadable (listed below)." if catalog.problems else "."),
           f"- Headline cell (most probable probe, t = T, largest width with data): N·Var is consistent with the "
           f"Poisson-equation prediction at {verdict_level:.0%} in {n_cons} of {len(with_data)} members, and with the "
           f"i.i.d. prediction in {n_iid} of {len(with_data)}.",
           f"- Between-init variance consistent with N^(1-2β)·var_init_coef in "
           f"{sum(r.get('verdict_init') == 'consistent' for r in rows)} of {len(with_data)} members.", ""]
    if with_data:
        md[-1:-1] = _sweep_meanings(with_data, verdict_level)
        md.insert(md.index("## Summary") + 2, "Every term is defined in the [glossary](#glossary) at the end.")
        md.insert(md.index("## Summary") + 3, "")
    if figs:
        md += ["## Headline ratios against the swept keys", "", "![ratios](ratios.png)", "",
               f"Circles: N·Var / Poisson prediction; squares: N·Var / i.i.d. prediction; bars: {verdict_level:.0%} "
               "init-robust intervals (the verdict level). A ratio of 1 is agreement.", "",
               "## Between-init variance across β (docs/model.md#init)", "", "![init](init.png)", "",
               f"Between-init variance over its prediction N^(1-2β)·var_init_coef (= E_t C_0 E_tᵀ), "
               f"{verdict_level:.0%} MLS intervals, on a log axis: colour is the width, marker and line style the "
               "member's other swept values; a bar that runs off the axis goes further (to 0 at the bottom), a "
               "triangle on the bottom edge is a ratio of 0.",
               ""]
    if "extrapolation.png" in figs:
        ext_rows = [[r["store"], f"{r['time']:g}", r["probe"], _ci(r["r_inf"], r["r_inf_lo"], r["r_inf_hi"]),
                     f"{r['gamma']:.2f}", r["verdict_limit"]] for r in rows if "r_inf" in r]
        md += ["## Extrapolation to infinite width (docs/model.md#extrapolation)", "",
               "![extrapolation](extrapolation.png)", "",
               "The headline N·Var / V_t fitted across each member's widths as r_inf (1 + c N^-gamma), gamma "
               f"profiled; {level:.0%} intervals with the estimator's own errors. \"consistent in the limit\": the "
               "interval holds 1.", ""]
        md += ["### The headline ratio's limit per member", ""]
        md += _table(["member", "t", "probe", "r_inf [interval]", "gamma", "verdict"], ext_rows) + [""]
    md += ["## Verdicts per member", "",
           f"### The headline cell of every member: ratios with {verdict_level:.0%} intervals and verdicts", ""]
    header = ["member", *keys, "N", "done", "N·Var/Poisson", "verdict", "N·Var/iid", "verdict", "between/pred",
              "verdict"]
    table = []
    for r in rows:
        cells = [f"`{r['store']}`", *[_key_text(r.get(k)) for k in keys]]
        if r.get("width") is None:
            table.append(cells + ["-", f"0/{r['n_replicas']}"] + ["-"] * 6)
            continue
        table.append(cells + [str(r["width"]), f"{r['n_done']}/{r['n_replicas']}",
                              _ci(r["ratio_poisson"], r["ratio_poisson_lo"], r["ratio_poisson_hi"]),
                              r["verdict_poisson"],
                              _ci(r["ratio_iid"], r["ratio_iid_lo"], r["ratio_iid_hi"]), r["verdict_iid"],
                              _ci(r["ratio_init"], r["ratio_init_lo"], r["ratio_init_hi"]), r["verdict_init"]])
    md += _table(header, table) + [""]
    md += ["## Missing and unfinished members", ""]
    lines = [f"- `{n}`: {why}" for n, why in sorted(catalog.problems.items())]
    lines += [f"- `{n}`: damaged units left out: {why}" for n, why in sorted(catalog.damaged.items())]
    for name in catalog.stores:
        miss = missing_units(catalog.checked(name)[0])
        if miss:
            lines.append(f"- `{name}`: {len(miss)} units not done: " + "; ".join(ln[2:] for ln in _fmt_units(miss, 5)))
    md += (lines or ["None: every member is complete."]) + [""]
    flagged = catalog.flagged
    if flagged:
        md += ["## Outlier flags (kept in every estimate)", ""]
        md += [f"- `{n}`: {why}" for n, why in sorted(flagged.items())] + [""]
    md += _glossary(out) + [""]
    path = out / "sweep.md"
    path.write_text("\n".join(md))
    return path
