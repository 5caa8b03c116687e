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
numba); a sampler's replicas (``[chain] kind = "sampler"``) also hold their whole
paths, ``B + floor(T N)`` steps of ``d`` numbers each.  The number is an
estimate within a small factor, not a bound.

The limit (:func:`estimate_limit`).  Its cost is the quadrature rule's node
count ``Q`` times the memory steps each node is run through: ``H L`` on the
window chain (window limit); ``S (n + burn) + H_b L_b`` for the sampled
infinite-past limit (``S`` path segments of ``n`` steps, each started ``burn``
steps early, and the basis window's ``H_b`` histories of ``L_b`` steps); ``L (S n
+ n_b)`` for continuous data, AR(1) or sampler (every window evaluated from zero memory).  ``Q`` is not
guessed: the rule is chosen here, on at most 64 histories, as the solve chooses
it (a fraction of a second up to a few seconds at ``rho`` near 1), and the solve
reuses it.  CPU-seconds use :data:`SECONDS_PER_NODE_STEP` (window) and
:data:`SECONDS_PER_PATH_STEP` (sampled and AR(1)), the upper ends of the
measured figures (``bench/bench_limit_cost.py``), plus :data:`LIMIT_BASE_SECONDS`.

A sampler's own time (``[chain] kind = "sampler"``) is measured, not modelled: the fastest of 3
one-path draws of 1,024 values, per value (:attr:`distntk.sampler.Sampler.seconds_per_step`; it runs
the sampler, once, when a cost is first estimated), times the values drawn one path at a time: each
replica's ``B + floor(T N)`` (in ``core_hours`` and :attr:`Cost.draw_seconds`) and the limit's ``S (n +
L - 1)`` (in its ``core_seconds``).  The many-path draws of short windows (the basis, the risk's
windows) are a few calls and are not counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import DistntkError

if TYPE_CHECKING:
    from .experiment import Experiment

__all__ = ["Cost", "CostError", "LimitCost", "estimate_cost", "estimate_limit", "check_cost", "total_cost",
           "replica_steps", "SECONDS_PER_UNIT_STEP", "SECONDS_PER_NODE_STEP", "SECONDS_PER_PATH_STEP",
           "LIMIT_BASE_SECONDS", "ACTOR_BASE_BYTES",
           "DEFAULT_MAX_CORE_HOURS", "machine_memory"]

SECONDS_PER_UNIT_STEP = 2.2e-9
SECONDS_PER_NODE_STEP = 3.5e-8  # window limit: CPU-s per quadrature node per history step (measured 28-34 ns)
SECONDS_PER_PATH_STEP = 1.3e-7  # sampled / AR(1) limit: per node per path step (measured 92-121 ns)
LIMIT_BASE_SECONDS = 0.5  # the eigenproblems and the predictions around the feature passes
ACTOR_BASE_BYTES = 400 * 2**20
DEFAULT_MAX_CORE_HOURS = 100.0


class CostError(DistntkError, ValueError):
    """An experiment refused before it starts, for its size; one-line message."""


@dataclass(frozen=True)
class LimitCost:
    """The limit's share of a run: the method, the rule's node count and the CPU it takes."""

    method: str  # "window", "sampled", "ar1" or "sampler"
    nodes: int  # quadrature nodes Q
    node_steps: float  # Q times the memory steps each node is run through
    core_seconds: float
    segments: int  # path segments the sampled limit spreads over actors (1 for the window limit)

    def describe(self) -> str:
        spread = f" over {self.segments} segments" if self.segments > 1 else ""
        return (f"limit ({self.method}, {self.nodes:,} quadrature nodes{spread}) about "
                f"{_duration(self.core_seconds)} of CPU")


@dataclass(frozen=True)
class Cost:
    unit_steps: float  # hidden-unit updates, training and evaluation
    core_hours: float  # replicas at SECONDS_PER_UNIT_STEP, plus the limit
    store_bytes: float  # output (and risk) arrays, uncompressed
    unit_bytes: float  # peak memory of one work unit in an actor, ACTOR_BASE_BYTES included
    replicas: int
    units: int
    limits: tuple[LimitCost, ...] = ()  # one per experiment whose limit was costed
    draw_seconds: float = 0.0  # a sampler's own CPU drawing the replicas' paths (in core_hours)

    @property
    def limit_core_hours(self) -> float:
        return sum(c.core_seconds for c in self.limits) / 3600.0

    def describe(self) -> str:
        """One line: ``... replicas about 0.73 core-hours (at 2.2 ns/unit-step), limit (...) about 21 s ...``."""
        reps = (f"{self.replicas} replicas in {self.units} units, {self.unit_steps:.3g} unit-steps, about "
                f"{_hours(self.core_hours - self.limit_core_hours)} core-hours "
                f"(at {SECONDS_PER_UNIT_STEP * 1e9:g} ns/unit-step"
                + (f", the sampler's draws {_duration(self.draw_seconds)} of it" if self.draw_seconds else "") + ")")
        if len(self.limits) == 1:
            reps += f"; {self.limits[0].describe()}"
        elif self.limits:
            reps += (f"; {len(self.limits)} limits ({max(c.nodes for c in self.limits):,} quadrature nodes at most) "
                     f"about {_duration(self.limit_core_hours * 3600)} of CPU")
        return (f"{reps}; total about {_hours(self.core_hours)} core-hours, store {_size(self.store_bytes)}, "
                f"peak memory per actor {_size(self.unit_bytes)}")


def total_cost(costs: Iterable[Cost]) -> Cost:
    """The cost of several experiments run together (a sweep): sums, and the largest unit's memory."""
    costs = list(costs)
    return Cost(unit_steps=sum(c.unit_steps for c in costs), core_hours=sum(c.core_hours for c in costs),
                store_bytes=sum(c.store_bytes for c in costs), unit_bytes=max(c.unit_bytes for c in costs),
                replicas=sum(c.replicas for c in costs), units=sum(c.units for c in costs),
                limits=tuple(lc for c in costs for lc in c.limits),
                draw_seconds=sum(c.draw_seconds for c in costs))


def _duration(s: float) -> str:
    if s < 1:
        return f"{s:.2g} s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _size(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if b < 1024 or unit == "PiB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} PiB"  # pragma: no cover


def _hours(h: float) -> str:
    return f"{h:.2g}" if h < 10 else f"{h:,.0f}"


def estimate_limit(exp: Experiment) -> LimitCost:
    """The limit's :class:`LimitCost` (module docstring): chooses the quadrature rule the solve will reuse."""

    from .chain import window_chain
    from .limit import MAX_HISTORIES, quadrature_rule

    source = getattr(exp, "source", None)
    model = exp.model
    if source is not None:  # a continuous source (AR(1) or sampler)
        from .continuous import rule_window

        # the rule's chain and windows as continuous_limit chooses them
        win = window_chain(source.rule_chain(9), rule_window(exp.L, source.dim), max_histories=1 << 16)
        rule = quadrature_rule(model, win, exp.limit.resolution, exp.seed, exp.limit.tol, 1 << 21, 64)
        steps = exp.L * (exp.limit.segments * exp.limit.segment_steps + 2048)
        method, rate, spread = source.kind, SECONDS_PER_PATH_STEP, 1
        # a sampler's own time: its segments, one path of segment_steps + L - 1 values each
        drawn = exp.limit.segments * (exp.limit.segment_steps + exp.L - 1) * _draw_seconds(exp)
    elif exp.limit.memory == "sampled":
        win = window_chain(exp.chain, exp.limit.basis_L, max_histories=1 << 20)
        rule = quadrature_rule(model, win, exp.limit.resolution, 0, exp.limit.tol, 1 << 21, 64)
        from .longmem import burn_in

        burn = burn_in(model.rho, exp.limit.l0 if exp.limit.l0 is not None else exp.limit.basis_L)
        steps = exp.limit.segments * (exp.limit.segment_steps + burn) + win.n_histories * win.L
        method, rate, spread = "sampled", SECONDS_PER_PATH_STEP, exp.limit.segments
        drawn = 0.0
    else:
        win = window_chain(exp.chain, exp.L, max_histories=max(exp.limit.max_histories, MAX_HISTORIES))
        rule = quadrature_rule(model, win, exp.limit.resolution, 0, exp.limit.tol, 1 << 21, 64)
        steps = win.n_histories * win.L
        method, rate, spread = "window", SECONDS_PER_NODE_STEP, 1
        drawn = 0.0
    Q = len(rule.pts)
    return LimitCost(method, Q, float(Q) * steps, LIMIT_BASE_SECONDS + rate * Q * steps + drawn, spread)


def _draw_seconds(exp: Experiment) -> float:
    """A sampler's CPU seconds per value of a one-path draw (measured on first use; 0 for other chains)."""
    source = getattr(exp, "source", None)
    return float(source.seconds_per_step) if getattr(source, "kind", None) == "sampler" else 0.0


def replica_steps(exp: Experiment) -> dict[int, float]:
    """``{N: unit_steps(N)}``: the hidden-unit updates of one replica of each width (the module docstring's
    formula); a work unit of width ``N`` and ``R`` replicas takes about ``R unit_steps(N)``
    :data:`SECONDS_PER_UNIT_STEP` seconds of CPU."""
    return _replica_steps(exp, _risk_histories(exp))


def _burn_in(exp: Experiment) -> int:
    """``B``: the steps each replica runs before its training time starts."""
    return exp.L if exp.model.burn_in is None else int(exp.model.burn_in)


def _replica_steps(exp: Experiment, H: int) -> dict[int, float]:
    n_t, P, L, B = len(exp.times), len(exp.probes), exp.L, _burn_in(exp)
    return {int(N): float(N) * (B + int(exp.T * N)) + n_t * float(N) * L * (P + H) for N in exp.replicas.widths}


def _risk_histories(exp: Experiment) -> int:
    """``H``: the histories the risk is averaged over (0 without the risk)."""
    if not exp.record_risk:
        return 0
    if getattr(exp, "source", None) is not None:  # continuous: the risk averages stationary windows drawn once
        from .continuous import RISK_WINDOWS

        return RISK_WINDOWS
    from .chain import window_chain

    return window_chain(exp.chain, exp.L, max_histories=max(exp.limit.max_histories, 1)).n_histories


def estimate_cost(exp: Experiment, limit: bool = True) -> Cost:
    """The :class:`Cost` of every replica of ``exp`` (formulas in the module docstring), and of its limit
    unless ``limit`` is false (choosing the rule takes up to a few seconds)."""
    d = exp.chain.dim
    n_t, P = len(exp.times), len(exp.probes)
    H, B = _risk_histories(exp), _burn_in(exp)
    per_width = exp.replicas.n_init * exp.replicas.n_data
    per_replica = _replica_steps(exp, H)
    steps = sum(per_width * per_replica[int(N)] for N in exp.replicas.widths)
    R = min(exp.replicas.block, exp.replicas.n_data)
    Nmax = float(max(exp.replicas.widths))
    chunk = max(256.0, Nmax // 8)
    unit = 8.0 * R * (2 * Nmax * (d + 3) + chunk * (d + 1) + H + n_t * (P + 1)) + ACTOR_BASE_BYTES
    if getattr(getattr(exp, "source", None), "kind", None) == "sampler":  # each replica's path is drawn whole
        unit += 8.0 * R * (B + int(exp.T * Nmax)) * d
    n_rep = len(exp.replicas.widths) * per_width
    store = 8.0 * n_rep * n_t * (P + (1 if exp.record_risk else 0))
    units = len(exp.replicas.widths) * exp.replicas.n_init * -(-exp.replicas.n_data // exp.replicas.block)
    lim = (estimate_limit(exp),) if limit else ()
    per_step = _draw_seconds(exp)  # a sampler: each replica draws one path of B + floor(T N) values
    drawn = per_step * per_width * sum(B + int(exp.T * N) for N in exp.replicas.widths) if per_step else 0.0
    hours = (steps * SECONDS_PER_UNIT_STEP + drawn + sum(c.core_seconds for c in lim)) / 3600.0
    return Cost(steps, hours, store, unit, n_rep, units, lim, drawn)


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
