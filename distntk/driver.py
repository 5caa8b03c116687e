"""The driver of ``distntk run``: spec -> store -> Ray actors -> store.

1. Open the spec's store, or create and pre-allocate it; creating it solves the
   limit once and stores ``h`` and the predictions beside the (empty) data.  An
   existing store made from a different spec is refused (keys named).
2. Plan: the experiment's units that are not marked ``done`` (resume).
3. Hand them to :func:`distntk.service.run_units` as opaque calls of
   ``Experiment.compute``; the driver writes every result it receives (data,
   then wall time / node / write count, then ``done``), so it is the only writer.

Seeds are keyed by ``(width, init, data)`` (MODEL.md / rnn.py), so a unit
recomputed after an interruption writes the very same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .service import RunSummary, UnitInfo, connect, run_units
from .spec import Spec
from .store import ResultStore, open_or_create

__all__ = ["RunReport", "run"]


@dataclass(frozen=True)
class RunReport:
    store: str
    total: int  # units in the experiment
    skipped: int  # already done before this run
    computed: int
    summary: RunSummary | None


def run(
    spec: Spec,
    store: str | None = None,
    *,
    address: str | None = None,
    actors: int | None = None,
    progress: bool = True,
    storage_options: dict | None = None,
    on_unit: Callable | None = None,
    announce: Callable[[int, int], None] | None = None,
    command: str = "",
) -> RunReport:
    """Compute every unit of ``spec`` not yet done in ``store`` (default: the spec's store).

    ``announce(n_todo, n_total)`` is called once the store is open (before Ray starts);
    ``on_unit(unit, UnitInfo)`` after each unit is written.
    """
    path = store or spec.store
    rs: ResultStore = open_or_create(path, spec, storage_options, command=command)
    exp = spec.experiment
    units = exp.units()
    todo = rs.pending(units)
    if announce is not None:
        announce(len(todo), len(units))
    if not todo:
        return RunReport(path, len(units), len(units), 0, None)
    rs.log(f"run: {len(todo)} of {len(units)} units to compute ({command or 'distntk.driver.run'})")
    if exp.record_risk:
        exp.limit()  # solved once here; the actors receive it with the experiment

    def write(unit, result, info: UnitInfo) -> None:
        rs.write_unit(unit, result, info.wall_time, info.node)
        if on_unit is not None:
            on_unit(unit, info)

    with connect(address, num_cpus=actors):
        summary = run_units(exp.compute, todo, write, actors=actors, progress=progress, desc=spec.name,
                            size=lambda u: u.data_stop - u.data_start, item_name="replicas")
    nodes = ", ".join(f"{n[:12]}: {c}" for n, c in sorted(summary.nodes.items()))
    rs.log(f"run: computed {summary.units} units ({summary.items} replicas) in {summary.seconds:.1f} s "
           f"on {summary.actors} actors; nodes {nodes}")
    return RunReport(path, len(units), len(units) - len(todo), summary.units, summary)
