"""Training-kernel throughput: unit-steps per second, fast vs the NumPy reference.

A unit-step is one hidden unit advanced one SGD step.  Both kernels run on one
core (numba single-threaded; BLAS/OMP threads 1), on the same arrays, in the
same process; each figure is the median of ``--repeat`` segments, and the ratio
is taken between the medians.  The segment length is what a run with 41
records at ``T = 2`` uses (``2 N / 40`` steps), at least 20 steps.

Usage: python bench/bench_kernel.py [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, median, repeat, table  # noqa: E402

from distntk import _fast  # noqa: E402
from distntk.rnn import KERNELS, Params, RNNConfig, init_params  # noqa: E402


def setup(cfg, N, R, n, d=1, seed=0):
    rng = np.random.default_rng(seed)
    p0 = init_params(cfg, N, d, rng)
    p = Params(*(np.repeat(a, R, axis=0) for a in (p0.c, p0.w, p0.a, p0.b)))
    xs = rng.choice([-1.0, 1.0], size=(R, n, d))
    ys = rng.standard_normal((R, n))
    state = [np.zeros((R, N)), np.zeros((R, N, d + 2))]
    return p, state, xs, ys


def rate(kernel, cfg, N, R, n, reps):
    p, state, xs, ys = setup(cfg, N, R, n)
    seg = KERNELS[kernel]
    args = (cfg.eta(N), cfg.scale(N), cfg.activation, cfg.gradient == "rtrl", True)
    seg(p, state, xs[:, :2], ys[:, :2], *args)  # compile / warm up
    times = repeat(lambda: seg(p, state, xs, ys, *args), reps)
    return R * N * n / median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer sizes (smoke test)")
    args = ap.parse_args(argv)
    print("## Training kernel (unit-steps/s, one core, float64)")
    for line in machine_info():
        print("  " + line)
    sizes = [(1024, 1), (1024, 16), (4096, 1), (4096, 16), (16384, 1), (16384, 16)]
    variants = [("tanh", "rtrl")]
    if args.quick:
        sizes = [(1024, 1), (4096, 16)]
    rows = []
    for act, grad in variants + [("tanh", "truncated"), ("sigmoid", "rtrl")]:
        cfg = RNNConfig(activation=act, gradient=grad, b_max=0.3 if act == "tanh" else 2.0)
        for N, R in sizes if (act, grad) in variants else [(4096, 16)]:
            n = max(20, 2 * N // 40)
            ref = rate("reference", cfg, N, R, n, args.repeat)
            fast = rate("fast", cfg, N, R, n, args.repeat)
            rows.append([N, R, f"{act}/{grad}", n, ref, fast, fast / ref, 1e9 / fast])
    print(table(["N", "R", "model", "steps", "reference /s", "fast /s", "ratio", "fast ns/unit-step"], rows,
                ["{}", "{}", "{}", "{}", "{:.3g}", "{:.3g}", "{:.1f}x", "{:.2f}"]))

    # What limits the fast kernel: its tanh alone, and the working set leaving L2.
    x = np.random.default_rng(1).standard_normal(16384) * 2
    y = np.empty_like(x)
    _fast._tanh_array(x, y)
    t_tanh = median(repeat(lambda: [_fast._tanh_array(x, y) for _ in range(200)], args.repeat)) / (200 * len(x))
    t_np = median(repeat(lambda: [np.tanh(x, out=y) for _ in range(200)], args.repeat)) / (200 * len(x))
    cfg = RNNConfig()
    lim = []
    for N in (4096, 16384, 65536, 262144):
        n = max(8, 2_000_000 // N)
        lim.append([N, 8 * N * 9 / 2**20, 1e9 / rate("fast", cfg, N, 1, n, args.repeat)])
    print()
    print(f"tanh alone (SIMD, compiled): {t_tanh * 1e9:.2f} ns/value; numpy.tanh: {t_np * 1e9:.2f} ns/value")
    print(table(["N", "replica block MiB", "fast ns/unit-step"], lim, ["{}", "{:.2f}", "{:.2f}"]))


if __name__ == "__main__":
    main()
