"""What an experiment costs before it runs: work, core-hours, store size, memory per actor.

``distntk run`` prints :func:`estimate_cost` before it starts and refuses a spec
whose estimate exceeds ``--max-core-hours`` or whose work unit cannot fit in
an actor's memory (:func:`check_cost`).

Work.  A replica of width ``N`` trains ``B + floor(T N)`` steps (``B`` the
burn-in), each touching every hidden unit once (docs/model.md#network: ``O(N)`` per step for
the diagonal recurrence with RTRL), and at each of the ``n_t`` recording times
evaluates the network on the ``P`` probe windows (and on the ``H`` histories of
the window chain when the risk is recorded), ``L`` steps each::

    unit_steps(N) = N (B + floor(T N)) + n_t N L (P + H [record_risk])

summed over ``widths x n_init x n_data`` replicas.  Core-hours use
:data:`SECONDS_PER_UNIT_STEP`, the upper end of the fast engine's measured
1.9-2.2 ns per unit-step (``bench/bench_kernel.py``); the reference NumPy engine
is slower, so its estimate is a lower bound.

Store.  ``output`` is ``8 W I R n_t P`` bytes (``risk`` adds ``8 W I R n_t``),
before compression.

Memory.  One work unit holds ``block`` replicas: parameters ``c, a, b`` and
``w`` (``N (d + 3)`` numbers), the memory ``S`` and its sensitivities
(``N (d + 3)``), a data chunk of ``max(256, N / 8)`` steps (``d + 1`` numbers
each) and, with the risk, the outputs on the ``H`` histories; 8 bytes each,
plus :data:`ACTOR_BASE_BYTES` for the actor process itself (Python, NumPy,
numba).  The number is an estimate within a small factor, not a bound.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .experiment import Experiment

__all__ = ["Cost", "CostError", "estimate_cost", "check_cost", "total_cost", "SECONDS_PER_UNIT_STEP",
           "ACTOR_BASE_BYTES",
           "DEFAULT_MAX_CORE_HOURS", "machine_memory"]

SECONDS_PER_UNIT_STEP = 2.2e-9
ACTOR_BASE_BYTES = 400 * 2**20
DEFAULT_MAX_CORE_HOURS = 100.0


class CostError(ValueError):
    """An experiment refused before it starts, for its size; one-line message."""


@dataclass(frozen=True)
class Cost:
    unit_steps: float  # hidden-unit updates, training and evaluation
    core_hours: float  # at SECONDS_PER_UNIT_STEP
    store_bytes: float  # output (and risk) arrays, uncompressed
    unit_bytes: float  # peak memory of one work unit in an actor, ACTOR_BASE_BYTES included
    replicas: int
    units: int

    def describe(self) -> str:
        """One line: ``1.2e+09 unit-steps, about 0.73 core-hours (at 2.2 ns/unit-step), store 1.2 MiB, ...``."""
        return (f"{self.replicas} replicas in {self.units} units, {self.unit_steps:.3g} unit-steps, about "
                f"{_hours(self.core_hours)} core-hours (at {SECONDS_PER_UNIT_STEP * 1e9:g} ns/unit-step), store "
                f"{_size(self.store_bytes)}, peak memory per actor {_size(self.unit_bytes)}")


def total_cost(costs: Iterable[Cost]) -> Cost:
    """The cost of several experiments run together (a sweep): sums, and the largest unit's memory."""
    costs = list(costs)
    return Cost(unit_steps=sum(c.unit_steps for c in costs), core_hours=sum(c.core_hours for c in costs),
                store_bytes=sum(c.store_bytes for c in costs), unit_bytes=max(c.unit_bytes for c in costs),
                replicas=sum(c.replicas for c in costs), units=sum(c.units for c in costs))


def _size(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} PiB"  # pragma: no cover


def _hours(h: float) -> str:
    return f"{h:.2g}" if h < 10 else f"{h:,.0f}"


def estimate_cost(exp: Experiment) -> Cost:
    """The :class:`Cost` of every replica of ``exp`` (formulas in the module docstring)."""
    d = exp.chain.dim
    n_t, P, L = len(exp.times), len(exp.probes), exp.L
    from .chain import window_chain

    H = window_chain(exp.chain, L, max_histories=max(exp.max_histories, 1)).n_histories if exp.record_risk else 0
    B = L if exp.model.burn_in is None else int(exp.model.burn_in)
    per_width = exp.n_init * exp.n_data
    steps = 0.0
    for N in exp.widths:
        N = float(N)
        steps += per_width * (N * (B + int(exp.T * N)) + n_t * N * L * (P + H))
    R = min(exp.block, exp.n_data)
    Nmax = float(max(exp.widths))
    chunk = max(256.0, Nmax // 8)
    unit = 8.0 * R * (2 * Nmax * (d + 3) + chunk * (d + 1) + H + n_t * (P + 1)) + ACTOR_BASE_BYTES
    n_rep = len(exp.widths) * per_width
    store = 8.0 * n_rep * n_t * (P + (1 if exp.record_risk else 0))
    units = len(exp.widths) * exp.n_init * -(-exp.n_data // exp.block)
    return Cost(steps, steps * SECONDS_PER_UNIT_STEP / 3600.0, store, unit, n_rep, units)


def machine_memory() -> float:
    """Physical memory of this machine in bytes (NaN where the OS does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux/macOS
        return float("nan")


def check_cost(cost: Cost, max_core_hours: float = DEFAULT_MAX_CORE_HOURS, actor_bytes: float | None = None) -> None:
    """Raise :class:`CostError` when ``cost`` exceeds ``max_core_hours`` or one unit exceeds ``actor_bytes``."""
    if cost.core_hours > max_core_hours:
        raise CostError(f"the estimate is {_hours(cost.core_hours)} core-hours ({cost.unit_steps:.3g} unit-steps), "
                        f"above --max-core-hours {max_core_hours:g}; raise --max-core-hours to run it")
    if actor_bytes is not None and cost.unit_bytes > actor_bytes:
        raise CostError(f"one work unit needs about {_size(cost.unit_bytes)}, more than the "
                        f"{_size(actor_bytes)} an actor has here; expected a smaller replicas.block or smaller "
                        "widths")
