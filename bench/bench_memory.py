"""Peak memory of one replica batch against the arrays it must hold.

Each configuration runs in a fresh subprocess: compile/warm up on a tiny run,
read the resident set size (RSS), run ``run_replicas`` once (probes and the
stationary risk recorded at 11 times, ``L = 8``), and read the peak RSS.  The
arrays a batch must hold are the parameters, ``S`` and ``J`` (``R N (2 d + 6)``
float64) and its outputs; the ratio is (peak - start) / those bytes.

Usage: python bench/bench_memory.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        import os

        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(N, R, T, kernel):
    import time

    import numpy as np

    from distntk.chain import markov_chain, window_chain
    from distntk.rnn import RNNConfig, run_replicas
    from distntk.target import make_target

    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1, 0.8], outer=[0, 0, 0.3])
    L = 8
    win = window_chain(chain, L)
    f = target.on_windows(chain.inputs, win.histories)
    probes = win.histories[win.most_likely(4)]
    cfg = RNNConfig()
    times = np.linspace(0, T, 11)
    kw = dict(root=0, init=0, L=L, engine=kernel, risk=(win.histories, win.pi, f))
    run_replicas(cfg, chain, target, 16, T, times, probes, width_key=16, data=[0, 1], **kw)  # compile, warm up
    start = _rss()
    t = time.perf_counter()
    out, risk = run_replicas(cfg, chain, target, N, T, times, probes, width_key=N, data=list(range(R)), **kw)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    d = chain.dim
    must = 8 * R * N * (2 * d + 6) + out.nbytes + risk.nbytes
    print(json.dumps(dict(N=N, R=R, T=T, kernel=kernel, start=start, peak=peak, must=must, wall=wall)))


def main():
    configs = [(4096, 16, 1.0, "reference"), (4096, 16, 1.0, "fast"), (16384, 16, 1.0, "fast"),
               (16384, 16, 4.0, "fast")]
    rows = []
    for N, R, T, kernel in configs:
        res = subprocess.run([sys.executable, __file__, "--child", str(N), str(R), str(T), kernel],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        grow = r["peak"] - r["start"]
        rows.append([N, R, T, kernel, r["must"] / 2**20, grow / 2**20, grow / r["must"], grow / (R * N), r["wall"]])
    print("## Memory of a replica batch (peak RSS growth over the arrays it must hold)")
    print(table(["N", "R", "T", "kernel", "must hold MiB", "peak growth MiB", "ratio", "bytes/unit", "wall s"], rows,
                ["{}", "{}", "{:g}", "{}", "{:.1f}", "{:.1f}", "{:.2f}", "{:.0f}", "{:.1f}"]))
    print("must hold = 8 R N (2 d + 6) bytes (c, w, a, b, S, J; d = 1: 64 bytes per unit) + outputs")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        main()
