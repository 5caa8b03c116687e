"""Training-kernel throughput: the fast engine, the JAX peer and the NumPy reference side by side.

A unit-step is one hidden unit advanced one SGD step (tanh, RTRL, d = 1).  Each
row runs in one process pinned to one core (numba single-threaded, BLAS/OMP and
XLA on one thread), fast, JAX peer and reference on the same arrays back to
back; each figure is the median over ``--repeat`` segments of ``2 N / 40`` steps
(what a run with 41 records at ``T = 2`` uses), and the ratios are taken between
the medians.  Two rows per size: the native ISA of this machine, and AVX2 code
generation in a subprocess (numba told to generate Haswell code, XLA
``--xla_cpu_max_isa=AVX2``, NumPy's AVX-512 dispatch disabled), so a developer on
an AVX-512 machine sees the AVX2 numbers too.  The ``zmm`` column says whether
the compiled fast kernel uses 512-bit registers (read from its assembly).

Correctness in the same process: every kernel then trains the same replicas
for a whole run (``2 N`` steps) from the same start, and the fast engine's and
the JAX peer's final parameters and memory must equal the reference's to
``1e-10`` relative (max abs difference / max abs value, per array); the script
exits with status 1 otherwise.

The cost model: per unit-step the fast kernel evaluates one ``tanh`` and does
``FLOPS_REST`` other double-precision operations, with ``MEM_ROWS`` doubles
loaded and stored.  Its bound on this core is the measured SIMD ``tanh`` time per
value plus ``FLOPS_REST`` operations at the measured rate of a streaming
FMA loop of the same vector width (see :func:`bound_rows`).

Usage: python bench/bench_kernel.py [--repeat 5] [--quick] [--no-avx2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# One core, one thread, before numpy / jax start their thread pools.
if hasattr(os, "sched_setaffinity"):
    _cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {_cpus[-1]})
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import machine_info, median, repeat, table  # noqa: E402

from distntk import _fast  # noqa: E402
from distntk.rnn import KERNELS, Params, RNNConfig, init_params  # noqa: E402

SIZES = [(1024, 16), (4096, 8)]
REL = 1e-10
FLOPS_REST = 17  # double operations per unit-step besides tanh (see the docstring of distntk._fast)
# Haswell code generation for the AVX2 row (numba: CPU name, and no host features added to it).
AVX2_ENV = {
    "NUMBA_CPU_NAME": "haswell",
    "NUMBA_CPU_FEATURES": "",
    "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
}


def setup(cfg, N, R, n, d=1, seed=0):
    rng = np.random.default_rng(seed)
    p0 = init_params(cfg, N, d, rng)
    p = Params(*(np.repeat(a, R, axis=0) for a in (p0.c, p0.w, p0.a, p0.b)))
    xs = rng.choice([-1.0, 1.0], size=(R, n, d))
    ys = rng.standard_normal((R, n))
    state = [np.zeros((R, N)), np.zeros((R, N, d + 2))]
    return p, state, xs, ys


def _numpy_runner(kernel, cfg, N, R, n, seed=0):
    p, state, xs, ys = setup(cfg, N, R, n, seed=seed)
    seg = KERNELS[kernel]
    args = (cfg.eta(N), cfg.scale(N), cfg.activation, cfg.gradient == "rtrl", True)
    return (lambda: seg(p, state, xs, ys, *args)), (lambda: (p.c, p.w, p.a, p.b, state[0]))


def _jax_runner(cfg, N, R, n, seed=0):
    import jax_peer

    p, state, xs, ys = setup(cfg, N, R, n, seed=seed)
    box = list(jax_peer.to_device(p.c, p.w, p.a, p.b, state[0], state[1]))
    dx, dy = jax_peer.to_device(xs, ys)
    eta, scale = cfg.eta(N), cfg.scale(N)

    def run():
        box[:] = jax_peer.segment(*box, dx, dy, eta, scale)

    return run, (lambda: tuple(np.asarray(v) for v in box[:5]))


def rates(N, R, reps):
    """Unit-steps per second of fast, JAX peer and reference on one segment, medians of ``reps``."""
    cfg = RNNConfig()
    n = max(20, 2 * N // 40)
    out = {}
    for name in ("fast", "jax", "reference"):
        run, _ = _jax_runner(cfg, N, R, n) if name == "jax" else _numpy_runner(name, cfg, N, R, n)
        run()  # compile / warm up
        out[name] = R * N * n / median(repeat(run, reps if name != "reference" else max(3, reps // 2)))
    return out


def agreement(N, R):
    """Max relative difference of fast and JAX peer to the reference after a whole run (``2 N`` steps)."""
    cfg = RNNConfig()
    n = 2 * N
    finals = {}
    for name in ("fast", "jax", "reference"):
        run, result = _jax_runner(cfg, N, R, n, seed=1) if name == "jax" else _numpy_runner(name, cfg, N, R, n, 1)
        run()
        finals[name] = result()

    def rel(x, y):
        return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(x, y))

    return rel(finals["fast"], finals["reference"]), rel(finals["jax"], finals["reference"])


def uses_zmm() -> bool:
    """Whether the compiled fast training kernel uses 512-bit registers."""
    steps = _fast.segment_kernel(1, True, False).compiled[0]
    return any("zmm" in asm for asm in steps.inspect_asm().values())


def isa_rows(reps, check=True):
    rows = []
    for N, R in SIZES:
        r = rates(N, R, reps)
        err_fast, err_jax = agreement(N, R) if check else (float("nan"), float("nan"))
        rows.append(dict(N=N, R=R, zmm=uses_zmm(), fast=r["fast"], jax=r["jax"], reference=r["reference"],
                         err_fast=err_fast, err_jax=err_jax))
    return rows


def bound_rows(reps):
    """The fast kernel's parts on this ISA: its SIMD ``tanh`` alone and its whole unit-step."""
    x = np.random.default_rng(1).standard_normal(4096) * 2
    y = np.empty_like(x)
    _fast._tanh_array(x, y)
    t_tanh = median(repeat(lambda: [_fast._tanh_array(x, y) for _ in range(500)], reps)) / (500 * len(x))
    t_np = median(repeat(lambda: [np.tanh(x, out=y) for _ in range(500)], reps)) / (500 * len(x))
    t_fma = _fast_fma_rate(reps)
    return dict(tanh_ns=t_tanh * 1e9, numpy_tanh_ns=t_np * 1e9, flop_ns=t_fma * 1e9)


def _fast_fma_rate(reps):
    """Seconds per double-precision operation of a streaming, vectorised multiply-add loop in L1."""
    from numba import njit

    @njit(cache=False, fastmath=False)
    def axpy(x, y, k):
        for _ in range(k):
            for i in range(x.shape[0]):
                y[i] = y[i] * 0.999 + x[i]  # one multiply and one add (an FMA after contraction)

    x = np.ones(1024)
    y = np.zeros(1024)
    axpy(x, y, 1)
    k = 2000
    return median(repeat(lambda: axpy(x, y, k), reps)) / (2 * k * x.size)


def child(argv):
    """Compute one ISA's rows and print them as JSON (``--child``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args(argv)
    print(json.dumps(dict(rows=isa_rows(a.repeat, not a.no_check), bound=bound_rows(a.repeat))))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="no whole-run agreement check (smoke test)")
    ap.add_argument("--no-avx2", action="store_true", help="native ISA only")
    args = ap.parse_args(argv)
    print("## Training kernel: fast vs JAX peer vs NumPy reference (M unit-steps/s, one core, float64, tanh+RTRL)")
    for line in machine_info():
        print("  " + line)
    import jax

    print(f"  jax {jax.__version__}; load average {os.getloadavg()[0]:.2f} at start")
    results = {}
    child_args = ["--repeat", str(args.repeat)] + (["--no-check"] if args.quick else [])
    for isa, extra in [("native", {})] + ([] if args.no_avx2 else [("AVX2", AVX2_ENV)]):
        env = dict(os.environ, **extra)
        if isa != "native":
            env["XLA_FLAGS"] = extra["XLA_FLAGS"]  # replaces the one-thread flags this process added
        proc = subprocess.run([sys.executable, __file__, "--child"] + child_args, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"bench_kernel: the {isa} run failed")
        results[isa] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows, bad = [], []
    for isa, res in results.items():
        for r in res["rows"]:
            rows.append([r["N"], r["R"], isa, "yes" if r["zmm"] else "no", r["fast"] / 1e6, r["jax"] / 1e6,
                         r["reference"] / 1e6, r["fast"] / r["jax"], r["fast"] / r["reference"], 1e9 / r["fast"],
                         r["err_fast"], r["err_jax"]])
            if not (r["err_fast"] < REL and r["err_jax"] < REL) and not args.quick:
                bad.append(f"{isa} N={r['N']}: fast {r['err_fast']:.1e}, jax {r['err_jax']:.1e}")
    print(table(["N", "R", "ISA", "zmm", "fast M/s", "JAX M/s", "reference M/s", "fast/JAX", "fast/ref",
                 "fast ns/unit-step", "fast rel.err", "JAX rel.err"], rows,
                ["{}", "{}", "{}", "{}", "{:.0f}", "{:.0f}", "{:.1f}", "{:.2f}x", "{:.1f}x", "{:.2f}", "{:.1e}",
                 "{:.1e}"]))
    print()
    brow = []
    for isa, res in results.items():
        b = res["bound"]
        fast_ns = min(1e9 / r["fast"] for r in res["rows"])
        bound_ns = b["tanh_ns"] + FLOPS_REST * b["flop_ns"]
        brow.append([isa, b["tanh_ns"], b["numpy_tanh_ns"], b["flop_ns"], bound_ns, fast_ns, fast_ns / bound_ns])
    print(f"Cost model: fast ns/unit-step >= tanh + {FLOPS_REST} other flops at the FMA-loop rate")
    print(table(["ISA", "SIMD tanh ns", "numpy.tanh ns", "ns/flop (FMA loop)", "bound ns/unit-step",
                 "fast ns/unit-step", "fast/bound"], brow,
                ["{}", "{:.2f}", "{:.2f}", "{:.3f}", "{:.2f}", "{:.2f}", "{:.2f}x"]))
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)")
    if bad:
        raise SystemExit("bench_kernel: not within 1e-10 of the reference: " + "; ".join(bad))


if __name__ == "__main__":
    main()
