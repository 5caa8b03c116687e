"""Training-kernel throughput: the fast engine, the JAX peer and the NumPy reference side by side.

A unit-step is one hidden unit advanced one SGD step (tanh, RTRL, d = 1).  Each
ISA row runs in one process pinned to one core (numba single-threaded, BLAS/OMP
and XLA on one thread): fast, JAX peer (``bench/jax_peer.py``) and reference on
the same arrays, back to back.  Each figure is the median over ``--repeat``
segments of ``2 N / 40`` steps (what a run with 41 records at ``T = 2`` uses),
timed by the process's CPU time (the machine is shared: CPU time leaves out the
time other processes hold the core; the fast/JAX ratio by wall-clock time is
printed beside it).  Two rows per size: the native ISA of this machine, and AVX2
code generation in a subprocess (numba told to generate Haswell code, XLA
``--xla_cpu_max_isa=AVX2``, NumPy's AVX-512 loops disabled), so a developer on
an AVX-512 machine sees the AVX2 numbers too.  The ``zmm`` column says whether
the compiled fast kernel uses 512-bit registers (read from its assembly).

Correctness, in the same processes: every kernel then trains the same replicas
for a whole run (``2 N`` steps) from the same start, and the fast engine's and
the JAX peer's final parameters and memory must equal the reference's to
``1e-10`` relative (max abs difference / max abs value, per array); the script
exits with status 1 otherwise (``--quick`` skips this check).

Cost model (second table).  Per iteration of its vector loop (``lanes`` units)
the fast sweep issues ``ops`` vector arithmetic instructions, ``ops tanh`` of them
for its tanh (both counted in the assembly compiled for that ISA), and
``memory ops`` loads and stores.  Its bound is its arithmetic at the rate its
SIMD tanh alone reaches in L1: ``tanh ns/value x ops / ops tanh`` (loads and
stores free, the division weighted as in tanh).

Kernel quadrature (limit solver).  ``distntk._fast.memory_jacobian_kernel`` on the
docs/model.md#reference-case chain at ``L = 8`` (all 256 histories, 510 prefix nodes), over
the nodes of the default rule (tolerance 1e-6) in blocks of the size
``limit.ntk_features`` uses there, tanh and RTRL: ns per point and prefix node,
against the NumPy reference ``rnn.memory_and_jacobian`` (no prefix sharing:
``H L`` steps per point; its ``s`` and ``J`` must equal the kernel's to 1e-12
relative) and against its bound: the vector loop's arithmetic (counted in its
assembly) at the SIMD tanh's rate.  ``--quadrature`` runs only this part (and the
tanh probe it needs), on both ISAs.

Usage: python bench/bench_kernel.py [--repeat 5] [--quick] [--no-avx2] [--quadrature]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
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
from _common import AVX2_ENV, machine_info, median, repeat, table  # noqa: E402

from distntk import _fast  # noqa: E402
from distntk.rnn import ENGINES, Params, RNNConfig, init_params  # noqa: E402

SIZES = [(1024, 16), (4096, 8)]
REL = 1e-10
def setup(cfg, N, R, n, d=1, seed=0):
    rng = np.random.default_rng(seed)
    p0 = init_params(cfg, N, d, rng)
    p = Params(*(np.repeat(a, R, axis=0) for a in (p0.c, p0.w, p0.a, p0.b)))
    xs = rng.choice([-1.0, 1.0], size=(R, n, d))
    ys = rng.standard_normal((R, n))
    state = [np.zeros((R, N)), np.zeros((R, N, d + 2))]
    return p, state, xs, ys


def variants(reps):
    """Fast ns/unit-step for the other compiled variants (vs the reference) and as the block outgrows L2."""
    rows = []
    for act, grad in (("tanh", "truncated"), ("sigmoid", "rtrl")):
        cfg = RNNConfig(activation=act, gradient=grad, b_max=0.3 if act == "tanh" else 2.0)
        N, R, n = 4096, 8, 204
        t = {}
        for name in ("fast", "reference"):
            run, _ = _numpy_runner(name, cfg, N, R, n)
            run()
            t[name] = median(repeat(run, reps if name == "fast" else 3, time.process_time)) / (R * N * n) * 1e9
        rows.append(dict(model=f"{act}/{grad}", N=N, R=R, fast_ns=t["fast"], ref_ns=t["reference"]))
    cfg = RNNConfig()
    for N in (16384, 65536, 262144):
        n = max(8, 2_000_000 // N)
        run, _ = _numpy_runner("fast", cfg, N, 1, n)
        run()
        t = median(repeat(run, reps, time.process_time)) / (N * n) * 1e9
        rows.append(dict(model="tanh/rtrl", N=N, R=1, fast_ns=t, ref_ns=float("nan")))
    return rows


def _numpy_runner(kernel, cfg, N, R, n, seed=0):
    p, state, xs, ys = setup(cfg, N, R, n, seed=seed)
    seg = ENGINES[kernel]
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
    """Unit-steps per second of fast, JAX peer and reference on one segment: medians by CPU and wall time."""
    cfg = RNNConfig()
    n = max(20, 2 * N // 40)
    out = {}
    for name in ("fast", "jax", "reference"):
        run, _ = _jax_runner(cfg, N, R, n) if name == "jax" else _numpy_runner(name, cfg, N, R, n)
        run()  # compile / warm up
        k = reps if name != "reference" else max(3, reps // 2)
        out[name] = R * N * n / median(repeat(run, k, time.process_time))
        out[name + "_wall"] = R * N * n / median(repeat(run, k))
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
        return max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(x, y, strict=True))

    return rel(finals["fast"], finals["reference"]), rel(finals["jax"], finals["reference"])


def isa_rows(reps, check=True):
    rows = []
    for N, R in SIZES:
        r = rates(N, R, reps)
        r["err_fast"], r["err_jax"] = agreement(N, R) if check else (float("nan"), float("nan"))
        rows.append(dict(N=N, R=R, **r))
    return rows


def bound(reps):
    """The fast kernel's cost model on this ISA: its SIMD ``tanh`` alone and the vector ops of its loops."""
    x = np.random.default_rng(1).standard_normal(4096) * 2
    y = np.empty_like(x)
    _fast._tanh_array(x, y)
    clock = time.process_time
    t_tanh = median(repeat(lambda: [_fast._tanh_array(x, y) for _ in range(500)], reps, clock)) / (500 * len(x))
    t_np = median(repeat(lambda: [np.tanh(x, out=y) for _ in range(500)], reps, clock)) / (500 * len(x))
    a_steps, a_tanh = kernel_asm()
    ops_step, mem_step, lanes = vector_ops(a_steps)
    ops_tanh, _, _ = vector_ops(a_tanh)
    return dict(tanh_ns=t_tanh * 1e9, numpy_tanh_ns=t_np * 1e9, ops_step=ops_step, mem_step=mem_step,
                ops_tanh=ops_tanh, lanes=lanes, zmm="zmm" in a_steps)


def walk(reps, N=4096, R=8, L=10):
    """The record walk (risk over all histories): the fast window kernel against the NumPy reference.

    Binary chain, all ``2^L`` histories sorted, so the walk visits ``2^(L+1) - 2`` distinct
    prefix nodes per replica; rates are per node and unit.
    """
    from distntk.chain import markov_chain, window_chain
    from distntk.rnn import history_outputs

    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    cfg = RNNConfig()
    hist = np.ascontiguousarray(window_chain(chain, L).histories, dtype=np.int64)
    lcp = _fast.common_prefix(hist)
    nodes = int(L + np.sum(L - lcp[1:]))
    p, _, _, _ = setup(cfg, N, R, 1)
    p.c += np.random.default_rng(2).standard_normal(p.c.shape) * 0.01  # replicas differ, as after training
    out = np.empty((R, len(hist)))
    kern = _fast.window_kernel(False)
    fast = lambda: kern(p.c, p.w, p.a, p.b, chain.inputs, hist, lcp, cfg.scale(N), out)  # noqa: E731
    fast()
    t_fast = median(repeat(fast, reps, time.process_time))
    ref = history_outputs(p, chain.inputs, hist, cfg.scale(N), "tanh")
    t_ref = median(repeat(lambda: history_outputs(p, chain.inputs, hist, cfg.scale(N), "tanh"), max(3, reps // 2),
                          time.process_time))
    err = float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))
    a_walk = _fresh_asm(kern, p.c, p.w, p.a, p.b, chain.inputs, hist, lcp, 1.0, out)
    ops_level, mem_level, _ = vector_ops(a_walk)
    return dict(N=N, R=R, L=L, H=len(hist), nodes=nodes, fast_ns=t_fast / (R * N * nodes) * 1e9,
                ref_ns=t_ref / (R * N * nodes) * 1e9, err=err, ops_level=ops_level, mem_level=mem_level)


QUAD_REL = 1e-12


def quadrature(reps, L=8):
    """The limit solver's kernel quadrature: ``memory_jacobian_kernel`` over the default rule's nodes.

    docs/model.md#reference-case chain, all ``2^L`` histories sorted (``2^(L+1) - 2`` prefix nodes), the
    rule ``limit.ntk_features`` builds at tolerance 1e-6, in its node blocks; rates are
    per point and prefix node.  The reference (``rnn.memory_and_jacobian``, NumPy) runs
    on the first 1024 points, every window from the start.
    """
    from distntk.chain import markov_chain, window_chain
    from distntk.limit import quadrature_rule
    from distntk.rnn import memory_and_jacobian

    cfg = RNNConfig()
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    win = window_chain(chain, L)
    rule = quadrature_rule(cfg, win, None, 0, 1e-6, 1 << 21, 64)
    d = chain.dim
    hist = np.ascontiguousarray(win.histories, dtype=np.int64)
    lcp = _fast.common_prefix(hist)
    H = len(hist)
    nodes = int(L + np.sum(L - lcp[1:]))
    full = np.zeros((len(rule.pts), d + 2))
    for j, col in enumerate(rule.coords):
        full[:, col] = rule.pts[:, j]
    Q = len(full)
    block = int(np.clip((1 << 25) // (H * (d + 3)), 8, 256))  # as limit.ntk_features
    run = _fast.memory_jacobian_kernel(d, True, False)
    args = [(np.ascontiguousarray(full[lo:lo + block, :d].T), full[lo:lo + block, d].copy(),
             full[lo:lo + block, d + 1].copy()) for lo in range(0, Q, block)]
    outs = [(np.empty((H, len(a))), np.empty((H, d + 2, len(a)))) for _, a, _ in args]

    def fast():
        for (w, a, b), (s, J) in zip(args, outs, strict=True):
            run(w, a, b, chain.inputs, hist, lcp, s, J)

    def write():  # the kernel's unavoidable stores: every window's s and J into the caller's (H, ., q) outputs
        for s, J in outs:
            s.fill(0.5)
            J.fill(0.5)

    fast()
    t_fast = median(repeat(fast, reps, time.process_time))
    m = min(Q, 1024)
    xs = chain.inputs[hist]

    def ref():
        return memory_and_jacobian(full[:m, :d], full[:m, d], full[:m, d + 1], xs, "tanh", True)

    s_ref, J_ref = ref()
    t_ref = median(repeat(ref, max(3, reps // 2), time.process_time))
    s_fast = np.concatenate([s for s, _ in outs], axis=1)[:, :m]
    J_fast = np.concatenate([J for _, J in outs], axis=2)[:, :, :m]
    err = max(float(np.max(np.abs(s_fast - s_ref.T)) / np.max(np.abs(s_ref))),
              float(np.max(np.abs(J_fast - J_ref.transpose(1, 2, 0))) / np.max(np.abs(J_ref))))
    write()  # after the comparison: overwrites the outputs
    t_write = median(repeat(write, reps, time.process_time))
    (w, a, b), (s, J) = args[0], outs[0]
    ops, mem, _ = vector_ops(_fresh_asm(run, w, a, b, chain.inputs, hist, lcp, s, J))
    return dict(Q=Q, block=block, L=L, H=H, nodes=nodes, fast_ns=t_fast / (Q * nodes) * 1e9,
                ref_ns=t_ref / (m * nodes) * 1e9, write_ns=t_write / (Q * nodes) * 1e9, err=err, ops=ops, mem=mem)


def _fresh_asm(dispatcher, *args):
    """Assembly of a numba kernel compiled afresh for this process's ISA (cached code cannot be inspected)."""
    from numba import njit

    f = njit(error_model="numpy")(dispatcher.py_func)
    f(*args)
    return next(iter(f.inspect_asm().values()))


_NOT_ARITH = ("vmov", "vbroadcast", "vzeroupper", "vpbroadcast", "vextract", "vinsert", "vperm", "vshuf",
              "vunpck")


def vector_ops(asm: str) -> tuple[int, int, int]:
    """``(arithmetic ops, memory ops, lanes)`` per iteration of the vector loop that divides (the hot loop).

    The loop is the block from its label to the backward jump; arithmetic ops are the
    ``v...pd``/``v...q`` instructions other than moves and broadcasts (an FMA counts once).
    """
    lines = [ln.strip() for ln in asm.splitlines()]
    for i, ln in enumerate(lines):
        if ln.startswith("vdivpd") and ("zmm" in ln or "ymm" in ln):
            start = max(j for j in range(i) if lines[j].endswith(":") and lines[j].startswith(".LBB"))
            label = lines[start][:-1]
            end = next(j for j in range(i, len(lines)) if lines[j].split()[:2] == ["jne", label]
                       or lines[j].split()[:2] == ["jb", label] or lines[j].split()[:2] == ["jl", label])
            body = [ln for ln in lines[start + 1:end] if ln.startswith("v")]
            arith = [ln for ln in body if not ln.startswith(_NOT_ARITH)]
            mem = [ln for ln in body if "(" in ln]
            return len(arith), len(mem), 8 if "zmm" in lines[i] else 4
    raise ValueError("no vector loop with a division found")


def kernel_asm():
    """(steps asm, tanh asm) of the fast engine, compiled for this ISA."""
    steps = _fast.segment_kernel(1, True, False).compiled[0]
    Z = np.zeros((9, 64))
    a_steps = _fresh_asm(steps, Z, 64, np.ones((3, 1)), np.ones(3), 0.1, 0.1, True)
    a_tanh = _fresh_asm(_fast._tanh_array, np.zeros(8), np.zeros(8))
    return a_steps, a_tanh


def child(argv):
    """Compute one ISA's rows and print them as JSON (``--child``)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--quadrature", action="store_true")
    a = ap.parse_args(argv)
    if a.quadrature:
        print(json.dumps(dict(bound=bound(a.repeat), quadrature=quadrature(a.repeat))))
        return
    print(json.dumps(dict(rows=isa_rows(a.repeat, not a.no_check), bound=bound(a.repeat), walk=walk(a.repeat),
                          quadrature=quadrature(a.repeat), variants=variants(a.repeat))))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="no whole-run agreement check (smoke test)")
    ap.add_argument("--no-avx2", action="store_true", help="native ISA only")
    ap.add_argument("--quadrature", action="store_true", help="only the kernel quadrature (limit solver)")
    args = ap.parse_args(argv)
    if args.quadrature:  # no JAX peer in this part
        print("## Kernel quadrature of the limit solver: fast vs NumPy reference (one core, float64, tanh + RTRL)")
        jax_version = "not needed"
    else:
        try:
            import jax
        except ImportError:
            raise SystemExit("bench_kernel: the JAX peer needs the bench extra: pip install -e '.[bench]' "
                             "(make bench does)") from None
        print("## Training kernel: fast vs JAX peer vs NumPy reference (one core, float64, tanh + RTRL, d = 1)")
        jax_version = jax.__version__
    for line in machine_info():
        print("  " + line)
    print(f"  jax {jax_version}; load average {os.getloadavg()[0]:.2f} at start")
    results = {}
    child_args = (["--repeat", str(args.repeat)] + (["--no-check"] if args.quick else [])
                  + (["--quadrature"] if args.quadrature else []))
    for isa, extra in [("native", {})] + ([] if args.no_avx2 else [("AVX2", AVX2_ENV)]):
        env = dict(os.environ, **extra)
        proc = subprocess.run([sys.executable, __file__, "--child"] + child_args, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"bench_kernel: the {isa} run failed")
        results[isa] = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = []
    if not args.quadrature:
        bad += _print_training(results, args.quick)
    bad += _print_quadrature(results)
    if not args.quadrature:
        _print_variants(results)
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)")
    if bad:
        raise SystemExit("bench_kernel: not within tolerance of the reference: " + "; ".join(bad))


def _print_training(results, quick):
    """The training-kernel, cost-model and record-walk tables; returns the failed agreement checks."""
    rows, bad = [], []
    for isa, res in results.items():
        for r in res["rows"]:
            rows.append([r["N"], r["R"], isa, "yes" if res["bound"]["zmm"] else "no", r["fast"] / 1e6, r["jax"] / 1e6,
                         r["reference"] / 1e6, r["fast"] / r["jax"], r["fast_wall"] / r["jax_wall"],
                         r["fast"] / r["reference"], 1e9 / r["fast"], r["err_fast"], r["err_jax"]])
            if not (r["err_fast"] < REL and r["err_jax"] < REL) and not quick:
                bad.append(f"{isa} N={r['N']}: fast {r['err_fast']:.1e}, jax {r['err_jax']:.1e}")
    print("M unit-steps/s by CPU time (pinned to one core); fast/JAX also by wall-clock time")
    print(table(["N", "R", "ISA", "zmm", "fast", "JAX peer", "reference", "fast/JAX", "(wall)", "fast/ref",
                 "fast ns/unit-step", "fast rel.err", "JAX rel.err"], rows,
                ["{}", "{}", "{}", "{}", "{:.0f}", "{:.0f}", "{:.1f}", "{:.2f}x", "{:.2f}x", "{:.1f}x", "{:.2f}",
                 "{:.1e}", "{:.1e}"]))
    print()
    brow = []
    for isa, res in results.items():
        b = res["bound"]
        bound_ns = b["tanh_ns"] * b["ops_step"] / b["ops_tanh"]
        for r in res["rows"]:
            fast_ns = 1e9 / r["fast"]
            brow.append([isa, r["N"], b["lanes"], b["ops_tanh"], b["ops_step"], b["mem_step"], b["tanh_ns"],
                         b["numpy_tanh_ns"], bound_ns, fast_ns, fast_ns / bound_ns])
    print("Cost model of the fast sweep: bound = SIMD tanh ns/value x ops / ops tanh (see the docstring)")
    print(table(["ISA", "N", "lanes", "ops tanh", "ops", "memory ops", "SIMD tanh ns", "numpy.tanh ns",
                 "bound ns/unit-step", "fast ns/unit-step", "fast/bound"], brow,
                ["{}", "{}", "{}", "{}", "{}", "{}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}x"]))
    print()
    wrow = []
    for isa, res in results.items():
        w, b = res["walk"], res["bound"]
        # per node and unit: the level sweep (ops_level), plus one FMA of the window's dot product per H/nodes
        bound_ns = b["tanh_ns"] / b["ops_tanh"] * (w["ops_level"] + w["H"] / w["nodes"])
        wrow.append([isa, w["N"], w["R"], w["H"], w["nodes"], w["ops_level"], w["ref_ns"], w["fast_ns"],
                     w["ref_ns"] / w["fast_ns"], bound_ns, w["fast_ns"] / bound_ns, w["err"]])
        if not w["err"] < REL:
            bad.append(f"{isa} record walk: {w['err']:.1e}")
    print("Record walk (risk over all 2^L histories of a binary chain, sorted): ns per prefix node and unit, CPU time;"
          "\nbound = SIMD tanh ns/value x (ops of the level sweep + one FMA per unit for each window's dot) / ops tanh")
    print(table(["ISA", "N", "R", "H", "nodes", "ops", "reference ns", "fast ns", "fast/ref", "bound ns",
                 "fast/bound", "rel.err"], wrow,
                ["{}", "{}", "{}", "{}", "{}", "{}", "{:.2f}", "{:.2f}", "{:.1f}x", "{:.2f}", "{:.2f}x", "{:.1e}"]))
    print()
    return bad


def _print_quadrature(results):
    """The kernel-quadrature table; returns the failed agreement checks."""
    qrow, bad = [], []
    for isa, res in results.items():
        q, b = res["quadrature"], res["bound"]
        bound_ns = b["tanh_ns"] / b["ops_tanh"] * q["ops"]  # per point and prefix node: the loop's arithmetic
        qrow.append([isa, q["Q"], q["block"], q["H"], q["nodes"], q["ops"], q["mem"], b["tanh_ns"], q["ref_ns"],
                     q["fast_ns"], q["ref_ns"] / q["fast_ns"], bound_ns, q["fast_ns"] / bound_ns, q["write_ns"],
                     q["fast_ns"] / (bound_ns + q["write_ns"]), q["err"]])
        if not q["err"] < QUAD_REL:
            bad.append(f"{isa} kernel quadrature: {q['err']:.1e}")
    print("Kernel quadrature of the limit solver (memory_jacobian_kernel; reference chain, L = 8, the default rule's"
          "\nnodes in ntk_features' blocks, tanh, RTRL): ns per point and prefix node, CPU time;"
          "\nbound = SIMD tanh ns/value x ops of the vector loop / ops tanh; reference = rnn.memory_and_jacobian;"
          "\nwrite = filling the outputs (H (d + 3) doubles per point and block, as the kernel stores them)")
    print(table(["ISA", "points", "block", "H", "nodes", "ops", "memory ops", "SIMD tanh ns", "reference ns",
                 "fast ns", "fast/ref", "bound ns", "fast/bound", "write ns", "fast/(bound+write)", "rel.err"], qrow,
                ["{}", "{}", "{}", "{}", "{}", "{}", "{}", "{:.2f}", "{:.1f}", "{:.2f}", "{:.1f}x", "{:.2f}",
                 "{:.2f}x", "{:.2f}", "{:.2f}x", "{:.1e}"]))
    print()
    return bad


def _print_variants(results):
    vrow = []
    for isa, res in results.items():
        for v in res["variants"]:
            has_ref = v["ref_ns"] == v["ref_ns"]  # not NaN
            vrow.append([isa, v["model"], v["N"], v["R"], f"{8 * v['N'] * 9 / 2**20:.2f}",
                         f"{v['ref_ns']:.2f}" if has_ref else "-", f"{v['fast_ns']:.2f}",
                         f"{v['ref_ns'] / v['fast_ns']:.1f}x" if has_ref else "-"])
    print("Other variants, and one replica's block (9 doubles per unit) outgrowing L2: ns/unit-step, CPU time")
    print(table(["ISA", "model", "N", "R", "block MiB", "reference ns", "fast ns", "fast/ref"], vrow,
                ["{}"] * 8))


if __name__ == "__main__":
    main()
