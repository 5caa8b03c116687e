"""Your own target: a Python function as the target, run on an embedded local Ray, compared with the limit.

    python examples/custom_target.py [WORK]

WORK (default: a new temporary directory) receives the spec ``switch.toml`` and the
store ``switch.zarr``; run again with the same WORK, the run finds every unit done.

The target is :func:`switched` below: ``f = 1`` when the chain has just changed
state (``X_k != X_{k-1}``), else ``0``, a function of the last ``m = 2`` inputs.
The spec names it ``"custom_target:switched"`` (``module:function``): this file is
that module, imported by name by the spec and by Ray's workers, which find it
because its directory is on the driver's ``sys.path`` (Python puts a script's
directory there).  So the file defines the target at the top and runs only under
``if __name__ == "__main__"``.  Copied under another name, the spec follows
(``Path(__file__).stem``).

Importing a module runs its code: a code target is refused unless allowed,
``load_spec(path, allow_code=True)`` here, ``distntk run --allow-code`` on the
command line.  The SHA-256 of this file is part of the spec hash, so after an
edit a run into the same WORK is refused (start a new WORK).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def switched(x: np.ndarray) -> np.ndarray:
    """1.0 where the input just changed, else 0.0; ``x`` is ``(n, m, d)``, oldest input first."""
    return np.any(x[:, -1] != x[:, -2], axis=-1).astype(float)


# The reference chain of docs/model.md#reference-case (sticky binary) at tiny widths: a run of
# seconds; for a real study widen `widths` and raise `n_init` x `n_data`.
SPEC = """\
name = "switch"
description = "the switch indicator f = 1[X_k != X_(k-1)] on the sticky binary chain"
seed = 20260611

[chain]
inputs = [-1.0, 1.0]
transition = [[0.8, 0.2], [0.3, 0.7]]

[target]
name = "{module}:switched"
m = 2

[model]
beta = 0.75
b_max = 0.3

[training]
T = 1.0
times = [0.5, 1.0]
L = 4

[replicas]
widths = [16, 32, 64]
n_init = 4
n_data = 8
block = 8

[probes]
most_likely = 2
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", nargs="?", help="directory for the spec and the store (default: a new temp dir)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="distntk-custom-target-"))
    work.mkdir(parents=True, exist_ok=True)

    import distntk
    from distntk.driver import run

    spec_path = work / "switch.toml"
    spec_path.write_text(SPEC.format(module=Path(__file__).stem))
    spec = distntk.load_spec(spec_path, allow_code=True)  # imports this file as a module: our target is code
    store = work / "switch.zarr"

    t0 = time.perf_counter()
    report = run(spec, str(store), actors=2, progress=False)  # an embedded local Ray, 2 actors
    print(f"{report.computed} units computed, {report.skipped} already done, in {time.perf_counter() - t0:.1f} s")
    print(f"store: {store}")

    est = distntk.estimate(distntk.open_store(store))
    level = f"{est.attrs['verdict_level']:.0%}"
    print(f"\n{'width':>5} {'time':>5} {'probe':>6} {'N*Var':>8} {'Poisson':>8} {'i.i.d.':>8}  "
          f"N*Var/Poisson [{level} interval]  verdict")
    for N in est.width.values:
        for t in est.time.values:
            for z in est.probe.values:
                c = est.sel(width=N, time=t, probe=z)
                print(f"{N:5d} {t:5.2f} {z:>6} {N * float(c.within):8.4f} {N * float(c.pred_within_poisson):8.4f} "
                      f"{N * float(c.pred_within_iid):8.4f}  {float(c.ratio_poisson):6.3f} "
                      f"[{float(c.ratio_poisson_lo):.3f}, {float(c.ratio_poisson_hi):.3f}]  {c.verdict_poisson.item()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
