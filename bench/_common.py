"""Shared helpers for the benchmarks: machine information and repeated timing."""

from __future__ import annotations

import os
import platform
import statistics
import time

# AVX2 code generation, for the AVX2 rows of an AVX-512 machine: numba compiles for Haswell (CPU name, and no host
# features added to it: NUMBA_CPU_FEATURES empty), XLA caps its ISA, NumPy drops its AVX-512 loops, OpenBLAS its
# SkylakeX kernels.  Set in the environment of a benchmark's subprocess.
AVX2_ENV = {
    "NUMBA_CPU_NAME": "haswell",
    "NUMBA_CPU_FEATURES": "",
    "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
}


def machine_info() -> list[str]:
    import numba
    import numpy
    import scipy

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines = [
        f"cpu: {cpu}; cores: {os.cpu_count()}; python {platform.python_version()}",
        f"numpy {numpy.__version__}, scipy {scipy.__version__}, numba {numba.__version__}",
    ]
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            lines.append(f"blas: {pool.get('internal_api')} {pool.get('version')} core={pool.get('architecture')} "
                         f"threads={pool.get('num_threads')}")
    except ImportError:
        lines.append("blas: (threadpoolctl not installed)")
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                                       "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS") if k in os.environ}
    lines.append(f"env: {env}")
    return lines


def repeat(fn, n: int, clock=time.perf_counter) -> list[float]:
    """Seconds of ``n`` calls of ``fn()`` by ``clock`` (wall clock unless told; ``time.process_time``: CPU)."""
    out = []
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def median(xs) -> float:
    return float(statistics.median(xs))


def table(header: list[str], rows: list[list], fmt: list[str]) -> str:
    cells = [header] + [[f.format(v) for f, v in zip(fmt, r, strict=True)] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c[i].rjust(widths[i]) for i in range(len(header))) + " |" for c in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
