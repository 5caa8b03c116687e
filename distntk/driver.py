"""The driver of ``distntk run``: spec -> lease -> store -> Ray actors -> store.

1. Take the store's lease (:mod:`distntk.lease`): one driver per store; a live
   holder is refused with one line naming it, a stale one taken over.
2. Open the spec's store, or create and pre-allocate it: the driver solves the
   limit once (``Experiment.predictions``) and hands the predictions to the
   store, which keeps them beside the (empty) data.  An existing store made from
   a different spec is refused (keys named).
3. Plan: the experiment's units that are not marked ``done`` (resume).
4. Hand them to :func:`distntk.service.run_units` as opaque calls of
   ``Experiment.compute``; each drained batch of results goes to the store's
   :class:`~distntk.store.UnitWriter`, which writes it concurrently with the
   computation (data, then ``done``), with at most ``max_pending`` units
   buffered in the driver.  The driver is the only writer.

Seeds are keyed by ``(width, init, data)`` (MODEL.md / rnn.py), so a unit
recomputed after an interruption writes the very same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .lease import acquire
from .service import RunSummary, UnitInfo, connect, run_units
from .spec import Spec
from .store import ResultStore, check_location, open_or_create

__all__ = ["RunReport", "run"]


@dataclass(frozen=True)
class RunReport:
    store: str
    total: int  # units in the experiment
    skipped: int  # already done before this run
    computed: int
    summary: RunSummary | None
    lease_taken_over: str | None = None  # the stale holder whose lease this run took over
    peak_pending: int = 0  # the most results the driver held unwritten (bounded by max_pending + one batch)


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
    max_pending: int = 1024,
    runtime_env: dict | None = None,
) -> RunReport:
    """Compute every unit of ``spec`` not yet done in ``store`` (default: the spec's store).

    ``announce(n_todo, n_total)`` is called once the store is open (before Ray starts);
    ``on_unit(unit, UnitInfo)`` after each unit's data and ``done`` are stored.
    ``max_pending`` bounds the results buffered in the driver while the store catches up.
    ``runtime_env`` goes to ``ray.init`` when joining the cluster at ``address``.
    """
    path = store or spec.store
    exp = spec.experiment
    check_location(path, storage_options)  # an unreachable or unwritable location fails here, with its own words
    with acquire(path, storage_options) as lease:
        rs: ResultStore = open_or_create(path, spec, exp.predictions, storage_options, command=command)
        if lease.taken_over:
            rs.log(f"lease taken over from {lease.taken_over}")
        units = exp.units()
        todo = rs.pending(units)
        if announce is not None:
            announce(len(todo), len(units))
        if not todo:
            return RunReport(path, len(units), len(units), 0, None, lease.taken_over)
        rs.log(f"run: {len(todo)} of {len(units)} units to compute ({command or 'distntk.driver.run'})")
        if exp.record_risk:
            exp.limit()  # solved once here; the actors receive it with the experiment
        infos: dict = {}

        with connect(address, num_cpus=actors, runtime_env=runtime_env), rs.writer(max_pending=max_pending) as w:

            def on_result(unit, result, info: UnitInfo) -> None:
                w.submit(unit, result, info.wall_time, info.node)
                infos[unit] = info

            def report(done: list) -> None:
                for u in done:
                    info = infos.pop(u)
                    if on_unit is not None:
                        on_unit(u, info)

            def on_batch() -> None:
                lease.check()
                w.flush()
                report(w.completed())

            summary = run_units(exp.compute, todo, on_result, actors=actors, progress=progress, desc=spec.name,
                                size=lambda u: u.data_stop - u.data_start, item_name="replicas", on_batch=on_batch)
            w.close()
            report(w.completed())
            peak = w.peak_pending
        lease.check()
        nodes = ", ".join(f"{n[:12]}: {c}" for n, c in sorted(summary.nodes.items()))
        rs.log(f"run: computed {summary.units} units ({summary.items} replicas) in {summary.seconds:.1f} s "
               f"on {summary.actors} actors; nodes {nodes}")
    return RunReport(path, len(units), len(units) - len(todo), summary.units, summary, lease.taken_over, peak)
