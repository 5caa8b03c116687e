"""Limit-solver timings and memory (one thread per case by default): kernel, h_t, V_t and the risk functional.

Cases: the binary chain of docs/model.md#reference-case at ``L = 12`` (4096 histories) and
``L = 16`` (65,536), and a 3-state chain at ``L = 12`` (531,441, ``--big``).
Each case runs in its own process (so its peak RSS is its own) with the
default solver (feature space, docs/model.md#features) and the default quadrature tolerance
1e-6; 41 time points on ``[0, 2]``, 4 probes (the most likely windows), and
the risk functional's Poisson/i.i.d. variance and initialisation term at every
time, as :meth:`Experiment.predictions` computes them.  Wall times on the
shared machine are noisy; with one thread ``total CPU`` (process time) is the
figure that does not depend on the other users.  ``--dense`` adds the
dense oracle at 4096 histories for comparison.  BLAS, OMP and the solver's
feature passes use ``--threads`` threads (default 1; ``--threads 2`` is the
2-core machine's wall time, the issue's 531,441-history target).

``--avx2`` runs the cases with AVX2 code (OpenBLAS's Haswell kernels, numba
compiling for Haswell), as on a CPU without AVX-512.

Usage: python bench/bench_limit.py [--big] [--dense] [--threads N] [--avx2] | --quadrature
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AVX2_ENV, machine_info, table  # noqa: E402

from distntk.chain import markov_chain  # noqa: E402
from distntk.limit import solve_limit  # noqa: E402
from distntk.rnn import RNNConfig  # noqa: E402
from distntk.target import make_target  # noqa: E402

CASES = {
    "binary-L12": ([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0], 12),
    "binary-L16": ([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0], 16),
    "ternary-L12": ([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]], [-1.0, 0.0, 1.0], 12),
}


def once(case, method):
    P, x, L = CASES[case]
    chain = markov_chain(P, x)
    target = make_target("tanh_linear", inner=[1, 0.8], outer=[0, 0, 0.3])
    T, C = {}, {}
    cpu0 = time.process_time()
    t0, c0 = time.perf_counter(), time.process_time()
    lim = solve_limit(RNNConfig(), chain, target, L=L, method=method)
    T["kernel"], C["kernel"] = time.perf_counter() - t0, time.process_time() - c0
    t = np.linspace(0, 2, 41)
    idx = lim.window.most_likely(4)
    E = np.zeros((len(idx), lim.window.n_histories))
    E[np.arange(len(idx)), idx] = 1.0
    t0, c0 = time.perf_counter(), time.process_time()
    r = lim.residual(t)
    lim.h(t)
    T["h_t"], C["h_t"] = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    fv = lim.fluctuation_variances(t, E)
    lim.init_variance(t, E)
    T["V_t probes"], C["V_t probes"] = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ell = -lim.window.pi * r
    for i, ti in enumerate(t):
        lim.fluctuation_variances([ti], ell[i : i + 1])
        lim.init_variance([ti], ell[i : i + 1])
    T["V_t risk"], C["V_t risk"] = time.perf_counter() - t0, time.process_time() - c0
    T["total"] = sum(T.values())
    T["total CPU"] = time.process_time() - cpu0
    k = lim.kernel
    return {"case": case, "method": method, "H": lim.window.n_histories, "times": T, "cpu": C, "nodes": k.n_nodes,
            "rank": int(getattr(k, "U", np.zeros((0, 0))).shape[1]) if method == "features" else None,
            "kernel_error": k.error, "h_probe0_t2": float(lim.h([2.0])[0, idx[0]]),
            "nvar_probe0_t2": float(fv["poisson"][-1, 0, 0]),
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, "blas": _blas()}


def _blas() -> str:
    """This process's BLAS kernel family and thread count (the ISA a case really ran with)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    return ", ".join(f"{p.get('architecture')} x{p.get('num_threads')}" for p in threadpool_info()
                     if p.get("user_api") == "blas")


def quadrature_table():
    """Reference chain, L = 8, all -1 window, t = 2: the default rule (tol 1e-6) at b_max 0.3 / 0.6 / 0.9."""
    chain = markov_chain(*CASES["binary-L12"][:2])
    target = make_target("tanh_linear", inner=[1, 0.8], outer=[0, 0, 0.3])
    rows = []
    for b_max in (0.3, 0.6, 0.9):
        lim = solve_limit(RNNConfig(b_max=b_max), chain, target, L=8)
        i = lim.window.index([0] * 8)
        e = np.zeros((1, lim.window.n_histories))
        e[0, i] = 1.0
        k = lim.kernel
        rows.append([b_max, k.n_nodes, k.seconds, k.error, lim.h([2.0])[0, i],
                     lim.fluctuation_variances([2.0], e)["poisson"][0, 0, 0]])
    print("## Kernel quadrature at tol 1e-6 (docs/model.md#reference-case chain, L = 8, all -1 window, t = 2)")
    print(table(["b_max", "nodes", "kernel s", "reported error", "h", "Poisson N Var"], rows,
                ["{}", "{}", "{:.1f}", "{:.1e}", "{:.6f}", "{:.5f}"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also the 531,441-history case (needs ~16 GiB)")
    ap.add_argument("--dense", action="store_true", help="also the dense oracle at 4096 histories")
    ap.add_argument("--quadrature", action="store_true", help="only the quadrature table at b_max 0.3/0.6/0.9")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OMP threads and feature-pass threads per case")
    ap.add_argument("--avx2", action="store_true", help="AVX2 code (OpenBLAS Haswell kernels, numba Haswell code)")
    ap.add_argument("--one", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        from threadpoolctl import threadpool_limits

        # a case (--one) runs with the threads its parent set in the environment; the parent itself uses one
        threadpool_limits(int(os.environ.get("OPENBLAS_NUM_THREADS", "1")) if args.one else 1)
    except ImportError:
        pass
    if args.quadrature:
        print(f"  load average at start: {open('/proc/loadavg').read().split()[:3]}")
        quadrature_table()
        return
    if args.one:
        print(json.dumps(once(*args.one)))
        return
    print(f"## Limit solver ({args.threads} thread(s) per case, {'AVX2' if args.avx2 else 'native'} code; feature "
          "space unless marked dense)")
    for line in machine_info():
        print("  " + line)
    print(f"  load average at start: {open('/proc/loadavg').read().split()[:3]}")
    runs = [("binary-L12", "features"), ("binary-L16", "features")]
    if args.dense:
        runs.insert(1, ("binary-L12", "dense"))
    if args.big:
        runs.append(("ternary-L12", "features"))
    n = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n, NUMBA_NUM_THREADS=n)
    if args.avx2:
        env.update(AVX2_ENV)
    rows = []
    for case, method in runs:
        out = subprocess.run([sys.executable, __file__, "--one", case, method], env=env, check=True,
                             capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        T, C = res["times"], res["cpu"]
        rows.append([case, method, res["H"], res["nodes"], res["rank"] or "-", *C.values(), T["total"],
                     T["total CPU"], res["peak_mib"], res["kernel_error"], res["h_probe0_t2"],
                     res["nvar_probe0_t2"]])
        print("  done:", case, method, f"{T['total']:.1f} s wall, {T['total CPU']:.1f} s CPU, blas {res['blas']}",
              flush=True)
    keys = list(C)
    print(table(["case", "method", "histories", "nodes", "rank"] + [f"{k} CPU s" for k in keys]
                + ["total wall s", "total CPU s", "peak MiB", "kernel error", "h (top probe, t=2)",
                   "N Var (top probe, t=2)"], rows,
                ["{}", "{}", "{}", "{}", "{}"] + ["{:.2f}"] * (len(keys) + 2)
                + ["{:.0f}", "{:.1e}", "{:.6f}", "{:.5f}"]))
    print(f"  load average at end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
