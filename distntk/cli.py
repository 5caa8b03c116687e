"""Command line: ``distntk demo`` (more subcommands arrive with the service).

Errors in user input print one line ``distntk: error: ...`` and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main"]


def _section6_experiment():
    from .chain import markov_chain
    from .experiment import Experiment
    from .rnn import RNNConfig
    from .target import make_target

    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1.0, 0.8], outer=[0.0, 0.0, 0.3])
    L = 8
    from .chain import window_chain

    win = window_chain(chain, L)
    probes = win.histories[win.most_likely(3)]
    return Experiment(chain=chain, target=target, model=RNNConfig(), T=2.0, times=(0.5, 1.0, 1.5, 2.0), L=L,
                      probes=probes, widths=(1024,), n_init=8, n_data=64, block=64, seed=2026, name="section6")


def _demo(args) -> int:
    t0 = time.perf_counter()
    exp = _section6_experiment()
    pred = exp.predictions()
    N = exp.widths[0]
    out = np.stack([exp.compute(u)["output"] for u in exp.units()])  # (init, data, time, probe)
    mean = out.mean(axis=(0, 1))
    nvar = N * out.var(axis=1, ddof=1).mean(axis=0)
    print(f"MODEL.md section 6 case: N = {N}, {exp.n_init} inits x {exp.n_data} data sequences, L = {exp.L}")
    print(f"{'probe':>9} {'t':>5} {'h_t':>8} {'sim mean':>9} {'N*Var sim':>10} {'N*Var Poisson':>14} {'N*Var iid':>10}")
    for p, lab in enumerate(exp.probe_labels()):
        for i, t in enumerate(exp.times):
            print(f"{lab:>9} {t:5.2f} {pred.h.values[i, p]:8.4f} {mean[i, p]:9.4f} {nvar[i, p]:10.4f} "
                  f"{pred.nvar_poisson.values[i, p]:14.4f} {pred.nvar_iid.values[i, p]:10.4f}")
    print(f"wall time {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="distntk", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="run the MODEL.md section 6 case in-process and print the comparison table")
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        return _demo(args)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
