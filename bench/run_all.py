"""Run every benchmark (``make bench``) and print the tables docs/performance.md quotes.

Each benchmark runs in its own process with one BLAS/OMP thread.  On machines
where the environment sets ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` (a guard
for old OpenBLAS builds) both are removed for the benchmark processes only, so
that the current OpenBLAS picks its own kernel (printed under ``blas:``).
The machine is shared: every figure is a median of repeats, and ratios are
taken within one process.  Takes a few minutes on 2 cores, plus about 7 for
bench_store.py (the result path: stores, S3 behind a latency proxy, 64 actors) and about 6 for
bench_workers.py (workers write, the driver commits: ``distntk run`` end to end on a local store and
S3 behind the proxy); bench_limit_cost.py runs its window cases only (the sampled ones take minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [["bench_kernel.py"], ["bench_memory.py"], ["bench_limit.py"], ["bench_ray.py"], ["bench_store.py"],
           ["bench_workers.py"], ["bench_limit_cost.py", "--only", "window"]]


def main():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    t0 = time.perf_counter()
    for script in SCRIPTS:
        subprocess.run([sys.executable, str(HERE / script[0])] + script[1:], env=env, check=True)
        print(flush=True)
    print(f"(all benchmarks: {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
