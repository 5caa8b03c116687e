"""Limit-solver timings on one core: kernel, h_t, V_t and the risk functional.

Binary chain of MODEL.md 6, 41 time points on ``[0, 2]``, 4 probes (the most
likely windows); the risk functional's Poisson/i.i.d. variance and its
initialisation term at every time, as :meth:`Experiment.predictions` computes
them.  BLAS and OMP are limited to one thread.  ``L = 10`` (1024 histories) by
default; ``--L 12`` runs 4096 histories (about 20x longer).

Usage: python bench/bench_limit.py [--L 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, median, table  # noqa: E402

from distntk.chain import markov_chain  # noqa: E402
from distntk.limit import solve_limit  # noqa: E402
from distntk.rnn import RNNConfig  # noqa: E402
from distntk.target import make_target  # noqa: E402


def once(L):
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1, 0.8], outer=[0, 0, 0.3])
    T = {}
    t0 = time.perf_counter()
    lim = solve_limit(RNNConfig(), chain, target, L=L)
    T["kernel"] = time.perf_counter() - t0
    t = np.linspace(0, 2, 41)
    idx = lim.window.most_likely(4)
    E = np.zeros((len(idx), lim.window.n_histories))
    E[np.arange(len(idx)), idx] = 1.0
    t0 = time.perf_counter()
    r = lim.residual(t)
    lim.h(t)
    T["h_t"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lim.fluctuation_variances(t, E)
    lim.init_variance(t, E)
    T["V_t probes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ell = -lim.window.pi * r
    for i, ti in enumerate(t):
        lim.fluctuation_variances([ti], ell[i : i + 1])
        lim.init_variance([ti], ell[i : i + 1])
    T["V_t risk"] = time.perf_counter() - t0
    T["total"] = sum(T.values())
    return lim.window.n_histories, T, lim.kernel.error


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[10])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    print("## Limit solver (one core)")
    for line in machine_info():
        print("  " + line)
    once(4)  # compile the kernel code
    rows = []
    for L in args.L:
        runs = [once(L) for _ in range(args.repeat if L <= 10 else 1)]
        H, err = runs[0][0], runs[0][2]
        keys = list(runs[0][1])
        rows.append([L, H] + [median([r[1][k] for r in runs]) for k in keys] + [err])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(table(["L", "histories"] + [f"{k} s" for k in keys] + ["kernel error"], rows,
                ["{}", "{}"] + ["{:.2f}"] * len(keys) + ["{:.1e}"]))
    print(f"peak RSS of this process: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
