"""The driver of ``distntk run``: spec -> lease -> store -> Ray actors -> store.

1. Take the store's lease (:mod:`distntk.lease`): one driver per store; a live
   holder is refused with one line naming it, a stale one taken over.
2. Open the spec's store, or create and pre-allocate it: the driver solves the
   limit once (``Experiment.predictions``) and hands the predictions to the
   store, which keeps them beside the (empty) data.  An existing store made from
   a different spec is refused (keys named).
3. Plan: the experiment's units that are not marked ``done`` (resume).
4. Run: hand them to :func:`distntk.service.run_units` in calls of up to
   :data:`UNITS_PER_CALL` units and :data:`CALL_SECONDS` of estimated compute
   (:func:`distntk.cost.replica_steps`; fewer units when there are few per
   actor), with 2 calls in flight per actor, more (up to :data:`MAX_IN_FLIGHT`)
   when calls are short: one computes while the others' writes wait on the
   store, so its latency is hidden.
   On a schema-3 store the workers write: each actor computes a unit
   (``Experiment.compute``), stores its chunks itself
   (:func:`distntk.store.write_chunks`) and returns a receipt of about 100
   bytes, the chunks' digests; the driver never touches the data and only
   commits the receipts into the ``unit`` records, whole chunks of at least
   1,024 records a few times a second (:meth:`~distntk.store.UnitWriter.commit`).
   A worker that cannot write the store (a local path on a node that does not
   share it, storage errors that outlast its retries) returns the result
   instead, and the driver writes that unit (one warning line per store says
   why).  Older stores (schema 1, 2) are written by the driver as before:
   results go to the store's :class:`~distntk.store.UnitWriter`, which writes
   them concurrently with the computation (data, then the record), with at most
   ``max_pending`` units buffered in the driver.
5. For each batch of completions (``run_units`` yields one about once a second,
   empty when none completed): record the receipts, check the leases, commit.
6. Close: the last commit, and one history line per store.

A wrong ``address`` is refused first, in one line, before any lease, store or
limit (:func:`distntk.service.check_address`).

A sweep (:mod:`distntk.sweep`) runs through :func:`run_sweep`: its manifest is
recorded in the root (a changed sweep is refused), and :func:`run_many` puts the
units of every member store through one actor pool, interleaved across members,
each store with its own lease, writer and resume plan.

Seeds are keyed by ``(width, init, data)`` (docs/model.md#network / rnn.py), so a unit
recomputed after an interruption writes the very same bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sweep import Member, Sweep

import contextlib
import dataclasses
import itertools
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .cost import SECONDS_PER_UNIT_STEP, replica_steps
from .lease import acquire
from .service import RunSummary, UnitFailed, UnitInfo, check_address, cluster_cpus, connect, run_units
from .spec import Spec
from .store import ResultStore, check_location, location, open_or_create, write_chunks

__all__ = ["RunReport", "run", "run_many", "run_sweep", "member_store", "UNITS_PER_CALL"]

UNITS_PER_CALL = 16  # the most units in one Ray call (fewer when the run has fewer than 8 calls per actor)
CALL_SECONDS = 1.0  # a call holds at most this much estimated compute (one unit at least): short calls balance
HIDE_SECONDS = 0.25  # the store latency per call that an actor's other calls in flight hide (see _in_flight)
MAX_IN_FLIGHT = 8  # calls per actor, at most
_COMPUTING = threading.Lock()  # in an actor process: the calls in flight (threads) compute one at a time


@dataclass(frozen=True)
class RunReport:
    """What one ``run`` did to one store.

    Parameters
    ----------
    store : str
        The store's location.
    total : int
        Units in the experiment.
    skipped : int
        Units already done before this run.
    computed : int
        Units computed by this run.
    summary : distntk.service.RunSummary or None
        The actor pool's account (seconds, nodes, retries); ``None`` when nothing was computed.
    lease_taken_over : str or None, optional
        The stale holder whose lease this run took over.
    peak_pending : int, optional
        The most results the driver held unwritten (bounded by ``max_pending`` plus one batch).
    record_writes : int, optional
        Record objects written (schema 3: about one per 1,024 units per flush).
    """

    store: str
    total: int  # units in the experiment
    skipped: int  # already done before this run
    computed: int
    summary: RunSummary | None
    lease_taken_over: str | None = None  # the stale holder whose lease this run took over
    peak_pending: int = 0  # the most results the driver held unwritten (bounded by max_pending + one batch)
    record_writes: int = 0  # record objects written: unit chunks (schema 3: about one per 1,024 units per flush)


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
    phase: Callable[[str | None], None] | None = None,
    check: bool = False,
) -> RunReport:
    """Compute every unit of ``spec`` not yet done in ``store``: what ``distntk run`` does.

    Takes the store's lease, opens the store or creates it (solving the limit once for its
    predictions), and computes the units not marked done on Ray actors; see the module
    docstring for the steps.  A run interrupted at any point resumes where it stopped.

    Parameters
    ----------
    spec : Spec
        The spec to run (``load_spec``).
    store : str or None, optional
        The store's location, a local path or an fsspec URL; ``None``: the spec's ``store``.
    address : str or None, optional
        The Ray cluster to join (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); ``None`` starts
        an embedded local Ray.  A wrong address is refused first, before the lease, the store
        or the limit.
    actors : int or None, optional
        The number of actors (and the embedded Ray's CPUs); ``None``: one per CPU of the cluster.
    progress : bool, optional
        Show a progress bar.
    storage_options : dict or None, optional
        Options of the fsspec backend of a URL store (``endpoint_url``, ``key``, ...).
    on_unit : callable or None, optional
        ``on_unit(unit, info)`` after each unit's data and ``done`` are stored, with its
        ``distntk.service.UnitInfo`` (wall time, node, actor).
    announce : callable or None, optional
        ``announce(n_todo, n_total)``, called once the store is open (before Ray starts).
    command : str, optional
        The command line recorded in the store's log.
    max_pending : int, optional
        The most results buffered in the driver while the store catches up.
    runtime_env : dict or None, optional
        Given to ``ray.init`` when joining the cluster at ``address`` (e.g. ``{"py_modules": [...]}``:
        code the workers need that the cluster lacks).
    phase : callable or None, optional
        ``phase(text)`` as each step that can take a while begins (solving the limit, starting
        Ray), and ``phase(None)`` once the units' own progress begins.
    check : bool, optional
        Also read every done unit's chunks and recompute those that do not match their records
        (a store damaged since it was written); without it a resume reads the records only.

    Returns
    -------
    RunReport
        The counts of units done before and by this run, and the actors' summary.

    Raises
    ------
    distntk.service.ConnectError
        If no Ray cluster answers at ``address``, or Ray cannot be started.
    distntk.store.StoreError
        If the store cannot be opened, created or written, holds another spec's results, or its
        lease is held by a live driver.
    distntk.service.UnitFailed
        If a unit's computation raises (a diverging training, say): which unit, and why.
    distntk.service.ServiceError
        If a unit's actor is lost on every attempt.
    """
    return run_many([(spec, store or spec.store)], address=address, actors=actors, progress=progress,
                    storage_options=storage_options,
                    on_unit=None if on_unit is None else (lambda k, u, info: on_unit(u, info)),
                    announce=announce, command=command, max_pending=max_pending, runtime_env=runtime_env,
                    desc=spec.name, phase=phase, check=check)[0]


class _Compute:
    """The work of one Ray call: ``(k, units)`` -> ``[(unit, receipt or result, wall seconds)]``.

    ``experiments[k].compute(unit)`` for each unit; where ``targets[k]`` is a schema-3 store's
    :class:`~distntk.store.ChunkTarget`, the worker stores the chunks and the receipt is
    ``{"digest": {name: digest}}``; else (or when :func:`~distntk.store.write_chunks` says why it
    cannot) ``{"result": result, "why": reason}`` for the driver to write.  An actor runs its calls in
    flight on threads (:class:`distntk.service.ActorPool`): one computes while another's writes are
    in flight, so the store's latency is hidden behind the next call's computation.
    """

    def __init__(self, experiments, targets):
        self.experiments, self.targets = list(experiments), list(targets)

    def __call__(self, item):
        k, units = item
        done = []
        with _COMPUTING:  # one call computes at a time; another call's writes go on meanwhile
            for unit in units:
                t0 = time.perf_counter()
                try:
                    result = self.experiments[k].compute(unit)
                except Exception as exc:
                    exc.distntk_unit = unit  # the driver names this unit, not the whole call
                    raise
                done.append((unit, result, time.perf_counter() - t0))
        target = self.targets[k]
        if target is None:
            return [(unit, {"result": result, "why": None}, wall) for unit, result, wall in done]
        t0 = time.perf_counter()
        digests = write_chunks(target, [(unit, result) for unit, result, _ in done])
        share = (time.perf_counter() - t0) / len(done)  # the writes, all in flight at once, shared out
        return [(unit, {"digest": d} if isinstance(d, dict) else {"result": result, "why": d}, wall + share)
                for (unit, result, wall), d in zip(done, digests, strict=True)]


def _calls(todo: list, n_actors: int, seconds: Callable) -> tuple[list, float]:
    """``[(k, unit)]`` -> ``([(k, (unit, ...))], s)``: consecutive units of one store in calls of up to
    :data:`UNITS_PER_CALL` units and :data:`CALL_SECONDS` of estimated compute (``seconds(k, unit)``; one
    unit at least), and at least 8 calls per actor where there are enough units (the last calls balance the
    load); ``s`` is the median call's estimated compute."""
    per = max(1, min(UNITS_PER_CALL, len(todo) // max(1, 8 * n_actors)))
    out: list = []
    for k, unit in todo:
        s = seconds(k, unit)
        if out and out[-1][0] == k and len(out[-1][1]) < per and out[-1][2] + s <= CALL_SECONDS:
            out[-1][1].append(unit)
            out[-1][2] += s
        else:
            out.append([k, [unit], s])
    return [(k, tuple(us)) for k, us, _ in out], sorted(c[2] for c in out)[len(out) // 2] if out else 0.0


def _in_flight(call_seconds: float) -> int:
    """Calls in flight per actor: one computes while the others wait for their writes.  A call's writes
    (about one store latency) are hidden when the calls queued behind it compute for longer: ``1 +
    HIDE_SECONDS / call_seconds``, between 2 and :data:`MAX_IN_FLIGHT`.  Long calls keep 2, so that what is
    queued on an actor (and would wait there if that actor is slow) stays short."""
    return min(MAX_IN_FLIGHT, max(2, 1 + math.ceil(HIDE_SECONDS / max(call_seconds, 1e-9))))


def _unit_seconds(experiments: list) -> Callable:
    """``seconds(k, unit)``: the estimated compute of ``unit`` of ``experiments[k]`` (:mod:`distntk.cost`)."""
    steps = [replica_steps(exp) for exp in experiments]
    return lambda k, unit: (unit.data_stop - unit.data_start) * steps[k][unit.width] * SECONDS_PER_UNIT_STEP


def run_many(
    jobs: Iterable[tuple[Spec, str]],
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
    desc: str = "units",
    phase: Callable[[str | None], None] | None = None,
    check: bool = False,
) -> list[RunReport]:
    """Compute every unit not yet done of several ``(spec, store)`` jobs through one actor pool (a sweep's
    members; :func:`run` is the one-job case).

    Every store gets its own lease, its own writer and its own resume plan; the
    units of all stores are interleaved in one queue, so a cluster stays full across
    stores.  ``address``: the Ray cluster to join (default: an embedded local Ray); ``actors``: how many
    (default one per CPU); ``announce(n_todo, n_total)`` is called once the stores are open (before Ray
    starts), counting units over all stores; ``on_unit(k, unit, UnitInfo)`` after each unit of job ``k`` is
    stored.  ``max_pending`` bounds the results buffered in the driver while a store catches up (stores
    the driver writes).  ``runtime_env`` goes to ``ray.init`` when joining the cluster at ``address``.
    ``phase(text)`` is called as each step that can take a while begins (solving the limit, starting
    Ray), and ``phase(None)`` once the units' own progress begins.  ``check``: also read every done
    unit's chunks and recompute those that do not match their records (a store damaged since it was
    written); without it a resume reads the records only.  Returns one report per job.
    """
    check_address(address)  # a wrong address: one line now, before a lease, a store or a limit
    phase = phase or _quiet
    jobs = [(spec, location(path)) for spec, path in jobs]
    # an unreachable or unwritable location fails here, with its own words; a new store's is probed here only
    probed = {path for _, path in jobs if not check_location(path, storage_options)}
    with contextlib.ExitStack() as stack:
        ray_once = _RayOnce(stack, address, actors, runtime_env, phase)  # one Ray start per run, limit included
        leases, stores, plans = [], [], []
        for spec, path in jobs:
            exp = spec.experiment
            lease = stack.enter_context(acquire(path, storage_options))
            solve = _predictions(exp, ray_once, actors, progress, phase)
            rs: ResultStore = open_or_create(path, spec, solve, storage_options, command=command,
                                             redo_interrupted=True, checked=path in probed)
            if lease.taken_over:
                rs.log(f"lease taken over from {lease.taken_over}")
            units = exp.units()
            leases.append(lease)
            stores.append(rs)
            plans.append((units, rs.pending(units, check=check)))
        n_todo, n_total = sum(len(t) for _, t in plans), sum(len(u) for u, _ in plans)
        if announce is not None:
            announce(n_todo, n_total)
        reports = [RunReport(path, len(u), len(u) - len(t), 0, None, lease.taken_over)
                   for (_, path), (u, t), lease in zip(jobs, plans, leases, strict=True)]
        if not n_todo:
            return reports
        todo = []
        for k, ((spec, _), rs, (units, pending)) in enumerate(zip(jobs, stores, plans, strict=True)):
            if pending:
                rs.log(f"run: {len(pending)} of {len(units)} units to compute ({command or 'distntk.driver.run'})")
                spec.experiment.prepare()  # the risk's windows, once here; the actors receive them with it
            todo += [(k, u) for u in pending]
        infos: dict = {}

        targets = [rs.chunk_target() for rs in stores]
        ray_once.start()
        with contextlib.ExitStack() as writers:
            ws = [writers.enter_context(rs.writer(max_pending=max_pending)) if plan[1] else None
                  for rs, plan in zip(stores, plans, strict=True)]
            calls, call_s = _calls(todo, actors or max(1, int(cluster_cpus())),
                                   _unit_seconds([spec.experiment for spec, _ in jobs]))
            calls = _interleave(calls)
            said: set = set()

            def record(item, outs, info: UnitInfo) -> None:
                k = item[0]
                for unit, receipt, wall in outs:
                    if "digest" in receipt:
                        ws[k].commit(unit, wall, info.node, receipt["digest"])
                    else:
                        ws[k].submit(unit, receipt["result"], wall, info.node)
                        if receipt["why"] and k not in said:
                            said.add(k)
                            print(f"distntk run: warning: {jobs[k][1]}: a worker on node {info.node[:12]} cannot "
                                  f"write the store ({receipt['why']}); the driver writes its units",
                                  file=sys.stderr)
                    infos[(k, unit)] = dataclasses.replace(info, wall_time=wall)

            def report(k: int, done: list) -> None:
                for u in done:
                    info = infos.pop((k, u))
                    if on_unit is not None:
                        on_unit(k, u, info)

            compute = _Compute((spec.experiment for spec, _ in jobs), targets)
            try:
                with run_units(compute, calls, actors=actors, in_flight=_in_flight(call_s), progress=progress,
                               desc=desc,
                               size=lambda item: sum(u.data_stop - u.data_start for u in item[1]),
                               count=lambda item: len(item[1]), item_name="replicas") as run:
                    for batch in run:  # about once a second: record the receipts, check the leases, commit
                        for item, outs, info in batch:
                            record(item, outs, info)
                        for lease in leases:
                            lease.check()
                        for k, w in enumerate(ws):
                            if w is not None:
                                w.flush()
                                report(k, w.completed())
                summary = run.summary
            except UnitFailed as exc:
                unit = getattr(exc.cause, "distntk_unit", None)
                if unit is None:  # the call failed before its units computed (a module the workers lack, ...)
                    units = exc.unit[1]
                    unit = f"{units[0]}" + (f" (and {len(units) - 1} more of its call)" if len(units) > 1 else "")
                raise UnitFailed(unit, exc.cause) from None
            peaks, puts = [], []
            for k, w in enumerate(ws):
                if w is not None:
                    w.close()
                    report(k, w.completed())
                peaks.append(0 if w is None else w.peak_pending)
                puts.append(0 if w is None else w.record_writes)
        for lease in leases:
            lease.check()
        nodes = ", ".join(f"{n[:12]}: {c}" for n, c in sorted(summary.nodes.items()))
        out = []
        for k, (rs, rep, (_, pending)) in enumerate(zip(stores, reports, plans, strict=True)):
            if not pending:
                out.append(rep)
                continue
            rs.log(f"run: computed {len(pending)} units in a run of {summary.units} units ({summary.items} replicas) "
                   f"over {len(jobs)} store(s) in {summary.seconds:.1f} s on {summary.actors} actors; nodes {nodes}")
            out.append(RunReport(rep.store, rep.total, rep.skipped, len(pending), summary, rep.lease_taken_over,
                                 peaks[k], puts[k]))
    return out


class _Segment:
    """A path segment of the sampled limit as a Ray work unit (``distntk.longmem.segment_stats``)."""

    def __init__(self, fn, problem):
        self.fn, self.problem = fn, problem

    def __call__(self, index):
        with _COMPUTING:  # the actor's calls in flight are threads: one segment computes at a time
            return self.fn(self.problem, index)


def _quiet(text: str | None) -> None:
    pass


class _RayOnce:
    """Ray for the rest of a run, started the first time it is needed (a sampled limit's segments, or the
    units) and stopped when the run ends: one start per run."""

    def __init__(self, stack: contextlib.ExitStack, address, actors, runtime_env, phase):
        self.stack, self.address, self.actors, self.runtime_env, self.phase = stack, address, actors, runtime_env, phase
        self.up = False

    def start(self, why: str = "starting Ray") -> None:
        if not self.up:
            self.phase(why)
            self.stack.enter_context(connect(self.address, num_cpus=self.actors, runtime_env=self.runtime_env))
            self.phase(None)
            self.up = True


def _predictions(exp, ray_once: _RayOnce, actors, progress, phase) -> Callable:
    """``exp.predictions`` (called only when a store is created or its predictions rebuilt), announced through
    ``phase``; a sampled limit's path segments run on Ray actors, in the run's own cluster or an embedded Ray
    started for them."""
    if exp.limit.memory == "sampled":
        what = (f"solving the limit over the infinite past (a basis window of L = {exp.limit.basis_L}, then "
                f"{exp.limit.segments} path segments of {exp.limit.segment_steps} steps on Ray actors)")
    elif getattr(exp, "source", None) is not None:  # a continuous source: the AR(1) or a user's sampler
        name = "AR(1)" if getattr(exp, "ar", None) is not None else "sampler's"
        what = (f"solving the {name} limit (windows of L = {exp.L} values, {exp.limit.segments} path segments "
                f"of {exp.limit.segment_steps} steps, in this process)")
    else:
        what = f"solving the limit (window L = {exp.L}, kernel by quadrature)"
    if exp.limit.memory != "sampled":
        def solve():
            phase(what)
            return exp.predictions()

        return solve

    def ray_map(fn, problem, indices):
        got = {}
        ray_once.start("starting Ray for the limit's path segments")
        with run_units(_Segment(fn, problem), indices, actors=actors, progress=progress, desc="limit segments",
                       item_name="segments") as run:
            for batch in run:
                got.update((i, res) for i, res, _ in batch)
        return [got[i] for i in indices]

    def solve_sampled():
        phase(what)
        return exp.predictions(map_segments=ray_map)

    return solve_sampled


def _interleave(items: list) -> list:
    """Round-robin over the jobs' queues: every store advances from the start of the run."""
    queues: dict = {}
    for item in items:
        queues.setdefault(item[0], []).append(item)
    out = []
    for group in itertools.zip_longest(*queues.values()):
        out += [x for x in group if x is not None]
    return out


def member_store(root: str, member: Member) -> str:
    """Where a sweep member's store lives: ``ROOT/<member name>.zarr``."""
    return f"{str(root).rstrip('/')}/{member.name}.zarr"


def run_sweep(sweep: Sweep, root: str, *, storage_options: dict | None = None,
              **kwargs: object) -> list[RunReport]:
    """Run every member of ``sweep`` into ``ROOT/<member>.zarr`` through one actor pool (see :func:`run_many`).

    The root's manifest is written first; a root holding another sweep is refused
    with one line naming what differs (:func:`distntk.catalog.write_manifest`).
    """
    from .catalog import write_manifest

    check_address(kwargs.get("address"))
    write_manifest(str(root), sweep.manifest, storage_options)
    jobs = [(m.spec, member_store(root, m)) for m in sweep.members]
    return run_many(jobs, storage_options=storage_options, desc=sweep.name, **kwargs)
