"""The limit's cost estimate against the limit's measured CPU, window, sampled and AR(1).

``distntk run`` prints the limit's cost before it solves it (:func:`distntk.cost.estimate_limit`): the
quadrature rule is chosen first (the solve reuses it), and CPU-seconds are ``Q`` nodes times the memory
steps each node is run through, at :data:`~distntk.cost.SECONDS_PER_NODE_STEP` (window) or
:data:`~distntk.cost.SECONDS_PER_PATH_STEP` (sampled, AR(1)), plus
:data:`~distntk.cost.LIMIT_BASE_SECONDS`.  This study solves each case in this process
(``Experiment.predictions``; the sampled segments run here, one after another) and prints one JSON
line: the estimate, the CPU the solve took (``time.process_time``: every thread of the process), their
ratio, the node count and the seconds the estimate itself took.  It asserts nothing.

Cases: the quickstart spec (two-state sticky chain, ``b_max`` 0.3, ``L`` 8) and variants: ``L`` 10,
``b_max`` 0.5 at ``L`` 11 (window forced), a three-state chain at ``L`` 6 (``b_max`` 0.3, sampled),
``b_max`` 0.6 (sampled), AR(1) ``phi`` 0.5 at ``L`` 6 (8 segments of 1,024 steps); and, estimate only
(``--solve-all`` solves it too), the three-state ``b_max`` 0.9 spec that took a new user by surprise.

    python bench/bench_limit_cost.py                 # about 7 minutes of CPU
    python bench/bench_limit_cost.py --only window   # the window cases (seconds)
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from distntk.cost import estimate_limit
from distntk.spec import parse_spec

_BASE = (Path(__file__).resolve().parents[1] / "distntk" / "jobs" / "quickstart.toml").read_text()
_TWO = "inputs = [-1.0, 1.0]                       # state 0 -> x = -1, state 1 -> x = +1\n" \
       "transition = [[0.8, 0.2], [0.3, 0.7]]"
_THREE = "inputs = [-1.0, 0.0, 1.0]\ntransition = [[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]]"
_AR1 = 'kind = "ar1"\nphi = 0.5\nsigma = 0.6'


def _variant(chain: str | None = None, b_max: float | None = None, L: int | None = None, limit: str = "") -> str:
    text = _BASE
    assert _TWO in text
    if chain is not None:
        text = text.replace(_TWO, chain)
    if chain == _AR1:
        text = text.replace("[probes]\nmost_likely = 3", "")
    if b_max is not None:
        text = re.sub(r"b_max = [0-9.]+", f"b_max = {b_max}", text)
    if L is not None:
        text = re.sub(r"\nL = \d+", f"\nL = {L}", text)
    return text + (f"\n[limit]\n{limit}" if limit else "")


CASES = [
    ("quickstart (window)", _variant(), True),
    ("L 10 (window)", _variant(L=10), True),
    ("b_max 0.5, L 11 (window)", _variant(b_max=0.5, L=11, limit='memory = "window"\n'), True),
    ("3 states, L 6 (sampled)", _variant(_THREE, L=6), True),
    ("b_max 0.6 (sampled)", _variant(b_max=0.6), True),
    ("AR(1) phi 0.5, L 6", _variant(_AR1, L=6, limit="segments = 8\nsegment_steps = 1024\n"), True),
    ("3 states, b_max 0.9, L 6 (sampled)", _variant(_THREE, b_max=0.9, L=6), False),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="cases whose name contains this text")
    ap.add_argument("--solve-all", action="store_true", help="also solve the estimate-only case (about 1.5 h)")
    args = ap.parse_args()
    for name, text, solve in CASES:
        if args.only and args.only not in name:
            continue
        exp = parse_spec(text).experiment
        t0 = time.perf_counter()
        est = estimate_limit(exp)
        rec = dict(case=name, method=est.method, nodes=est.nodes, node_steps=est.node_steps,
                   estimate_cpu_s=round(est.core_seconds, 2), estimate_took_s=round(time.perf_counter() - t0, 2))
        if solve or args.solve_all:
            c0, w0 = time.process_time(), time.perf_counter()
            pred = exp.predictions()
            cpu = time.process_time() - c0
            rec.update(solve_cpu_s=round(cpu, 2), solve_wall_s=round(time.perf_counter() - w0, 2),
                       estimate_over_measured=round(est.core_seconds / cpu, 2),
                       solve_nodes=int(pred.attrs.get("kernel_nodes", est.nodes)))
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
