"""Outlier flags on clean stores: the false-flag rate across beta and chains, and the flag's power.

A flag (``distntk.verify.outliers``) marks a unit whose mean lies more than 10 expected standard
deviations from its width's median, the scale holding the predicted between-init spread
``N^{1-2 beta} var_init_coef``, the data noise of a unit mean and, as a floor, the robust spread
(1.4826 MAD) of the unit means.  This study computes clean stores, every unit from its seeds, as
``distntk run`` would (``Experiment.compute``, the same bits), for

* beta in {0.55, 0.65, 0.75, 0.85, 0.95} (``--betas``) on the two chains of ``jobs/beta-sweep.toml``:
  ``sticky`` (P = [[0.8, 0.2], [0.3, 0.7]], the tanh_linear target) and ``anti`` (P = [[0.2, 0.8],
  [0.7, 0.3]], f = x_k);
* two designs: ``new-user`` (widths 32, 64; 8 inits x 32 data sequences, block 16: 16 units per
  width, the sweep a new user ran) and ``quickstart`` (widths 64, 128; 16 inits x 32 data, block 16);
* ``--seeds`` root seeds per (beta, chain, design),

and counts, per cell, the units the flag marks (``new``) beside those the flag without the
predicted spread (MAD only, distntk 0.5) marked (``mad_only``).  Every unit of a clean store is
correct, so every flag is a false flag.  With no false flag among ``n`` units the one-sided 95 %
upper bound of the rate is ``1 - 0.05^(1/n)`` (about ``3/n``); printed with the counts.  Then the
power: in each store one unit (chosen by the seed) has its values multiplied by ``--scale``
(default 10, a damage case of earlier rounds) and the flag must mark it.

One JSON line per cell, then the totals.  It asserts nothing (a study, not a test); docs/concepts/verdicts.md
and docs/model.md#outliers quote its totals with the command.

    python bench/bench_outliers.py                      # 100 seeds: 32,000 new-user units + 64,000 quickstart
    python bench/bench_outliers.py --seeds 10 --betas 0.55 0.95
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

CHAINS = {
    "sticky": ([[0.8, 0.2], [0.3, 0.7]], 'name = "tanh_linear"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]'),
    "anti": ([[0.2, 0.8], [0.7, 0.3]], 'name = "linear"\nweights = [1.0]'),
}
DESIGNS = {"new-user": ((32, 64), 8, 32, 16), "quickstart": ((64, 128), 16, 32, 16)}


def spec_text(beta: float, chain: str, design: str) -> str:
    transition, target = CHAINS[chain]
    widths, n_init, n_data, block = DESIGNS[design]
    return f"""name = "flags"
seed = 1
[chain]
inputs = [-1.0, 1.0]
transition = {transition}
[target]
{target}
[model]
beta = {beta}
b_max = 0.3
[training]
T = 2.0
times = [0.5, 1.0, 1.5, 2.0]
L = 8
[replicas]
widths = {list(widths)}
n_init = {n_init}
n_data = {n_data}
block = {block}
[probes]
most_likely = 3
"""


def outputs(e) -> np.ndarray:
    """``(width, init, data, time, probe)`` of every unit of ``e``, computed from its seeds."""
    out = np.full((len(e.replicas.widths), e.replicas.n_init, e.replicas.n_data, len(e.times), len(e.probes)), np.nan)
    for u in e.units():
        out[e.replicas.widths.index(u.width), u.init, u.data_start:u.data_stop] = e.compute(u)["output"]
    return out


def cell(beta: float, chain: str, design: str, seeds: int, scale: float) -> dict:
    from distntk.spec import canonical_json, parse_spec
    from distntk.verify import init_variance, outliers

    spec = parse_spec(spec_text(beta, chain, design))
    e0 = spec.experiment
    pred = e0.predictions()
    widths = list(e0.replicas.widths)
    init_var = init_variance({"spec_canonical": canonical_json(spec.canonical)}, pred.var_init_coef.values, widths)
    units = flagged = mad_only = hits = 0
    zmax = 0.0
    for s in range(seeds):
        e = dataclasses.replace(e0, seed=1000 + s)
        out = outputs(e)
        done = np.isfinite(out).all(axis=(3, 4))
        units += len(e.units())
        flagged += len(outliers(out, done, widths, e.replicas.block, init_var))
        mad_only += _mad_only(out, done, widths, e.replicas.block)
        zmax = max(zmax, _largest_z(out, widths, e.replicas.block, init_var))
        u = e.units()[np.random.default_rng(s).integers(len(e.units()))]
        sl = (widths.index(u.width), u.init, slice(u.data_start, u.data_stop))
        out[sl] *= scale
        hits += u in outliers(out, done, widths, e.replicas.block, init_var)
    return {"beta": beta, "chain": chain, "design": design, "stores": seeds, "units": units, "new": flagged,
            "mad_only": mad_only, "largest_z_new": round(zmax, 2), f"x{scale:g}_found": hits}


def _mad_only(out, done, widths, block) -> int:
    """Units the flag of distntk 0.5 marked: ``|m_u - median| > 10 * 1.4826 MAD`` alone (no predicted spread)."""
    from distntk.verify import OUTLIER_Z

    n = 0
    for wi in range(len(widths)):
        m = out[wi].reshape(out.shape[1], -1, block, *out.shape[3:]).mean(axis=2).reshape(-1, *out.shape[3:])
        med = np.median(m, axis=0)
        mad = 1.4826 * np.median(np.abs(m - med), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(mad > 0, np.abs(m - med) / np.where(mad > 0, mad, 1.0), 0.0)
        n += int((z.reshape(len(m), -1).max(axis=1) > OUTLIER_Z).sum())
    return n


def _largest_z(out, widths, block, init_var) -> float:
    """The largest z of any unit and cell under the flag's scale (how close a clean store comes to 10)."""
    from distntk.experiment import unit_grid
    from distntk.verify import _unit_z

    return max(float(_unit_z(out[wi], unit_grid([N], out.shape[1], out.shape[2], block), init_var[wi])[0].max())
               for wi, N in enumerate(widths))


def upper95(k: int, n: int) -> float:
    """One-sided 95 % upper bound of a rate with ``k`` events in ``n`` trials (Clopper-Pearson)."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=100, help="root seeds per (beta, chain, design)")
    ap.add_argument("--betas", type=float, nargs="+", default=[0.55, 0.65, 0.75, 0.85, 0.95])
    ap.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    ap.add_argument("--scale", type=float, default=10.0, help="factor on one unit per store, for the power")
    args = ap.parse_args()
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    rows = []
    for design in args.designs:
        for beta in args.betas:
            for chain in CHAINS:
                rows.append(cell(beta, chain, design, args.seeds, args.scale))
                print(json.dumps(rows[-1]), flush=True)
    n, k, k0 = (sum(r[c] for r in rows) for c in ("units", "new", "mad_only"))
    stores = sum(r["stores"] for r in rows)
    found = sum(r[f"x{args.scale:g}_found"] for r in rows)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"total_units": n, "false_flags_new": k, "rate_new_upper95": upper95(k, n),
                      "false_flags_mad_only": k0, "rate_mad_only": k0 / n, "stores": stores,
                      f"x{args.scale:g}_found": found, "largest_z_new": max(r["largest_z_new"] for r in rows),
                      "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu.ru_utime + cpu.ru_stime, 1),
                      "load_before": load0, "load_after": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
