"""N*Var across widths against the Poisson and i.i.d. predictions: one store, the estimator, one figure.

    python examples/comparison_plot.py [STORE] [--out OUT] [--time T]

STORE (default ``stores/quickstart.zarr``, what ``make demo`` writes; or the
store ``examples/custom_target.py`` prints) is read with ``distntk.open_store``
and estimated with ``distntk.estimate``.  The figure ``OUT/nvar_vs_width.png``
(default OUT: a new temporary directory) has one panel per probe window and one
for the stationary risk, at the time T (default: the last recorded time): the
simulated ``N*Var`` (points, with the estimator's init-robust interval at the
verdict level), the Poisson-equation prediction (black) and the naive i.i.d.
one (red, dashed), against the width ``N``.  A correct simulation follows the
black line as ``N`` grows.

The figure is drawn with matplotlib's object API (``matplotlib.figure.Figure``,
no pyplot): no backend is chosen or switched, so this runs headless and leaves a
notebook's backend alone.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_nvar_vs_width(est, t: float) -> Figure:
    """The figure: ``est`` is ``distntk.estimate(ds)``; one panel per probe, then the risk, at time ``t``."""
    N = est.width.values
    panels = [(f"probe {z}", est.sel(time=t, probe=z), "") for z in est.probe.values]
    if "risk_within" in est:
        panels.append(("stationary risk", est.sel(time=t), "risk_"))
    fig = Figure(figsize=(3.2 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, c, pre) in zip(axes, panels, strict=True):
        poisson = N * c[pre + "pred_within_poisson"].values  # the predictions of N*Var do not depend on N
        iid = N * c[pre + "pred_within_iid"].values
        nvar = N * c[pre + "within"].values
        lo, hi = c[pre + "ratio_poisson_lo"].values * poisson, c[pre + "ratio_poisson_hi"].values * poisson
        yerr = np.clip([nvar - lo, hi - nvar], 0, None)
        ax.errorbar(N, nvar, yerr=yerr, fmt="o", color="C0", ms=4, capsize=3,
                    label=f"simulated N Var ({est.attrs['verdict_level']:.0%} interval)")
        ax.plot(N, poisson, "-", color="k", label="Poisson prediction")
        ax.plot(N, iid, "--", color="C3", label="i.i.d. prediction")
        ax.set_xscale("log", base=2)
        ax.set_xticks(N, [str(n) for n in N])
        ax.set_ylim(0, 1.15 * np.nanmax([*np.minimum(hi, 3 * np.nanmax(poisson)), *nvar, *poisson, *iid]))
        ax.set_title(f"{title}, t = {t:g}", fontsize=9)
        ax.set_xlabel("width N")
    axes[0].set_ylabel("N Var across data sequences")
    axes[0].legend(fontsize=7, loc="lower left")
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", nargs="?", default="stores/quickstart.zarr", help="a distntk result store")
    parser.add_argument("--out", help="directory for the figure (default: a new temp dir)")
    parser.add_argument("--time", type=float, help="the training time to plot (default: the last one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="distntk-plot-"))
    out.mkdir(parents=True, exist_ok=True)

    import distntk

    est = distntk.estimate(distntk.open_store(args.store))
    t = float(est.time.values[-1] if args.time is None else est.time.sel(time=args.time, method="nearest"))

    print(f"{'panel':>10} {'width':>5} {'N*Var':>8} {'Poisson':>8} {'i.i.d.':>8}")
    for z in est.probe.values:
        for N in est.width.values:
            c = est.sel(time=t, probe=z, width=N)
            print(f"{z:>10} {N:5d} {N * float(c.within):8.4f} {N * float(c.pred_within_poisson):8.4f} "
                  f"{N * float(c.pred_within_iid):8.4f}")

    path = out / "nvar_vs_width.png"
    plot_nvar_vs_width(est, t).savefig(path, dpi=120)
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
