"""The Ray layer: run opaque work units on a pool of actors and stream the results back.

Nothing here knows what a unit computes.  :func:`run_units` takes a callable
``fn(unit) -> result`` and a list of picklable ``units``; it puts ``fn`` in the
object store once, starts ``actors`` Ray actors that each hold it (explicit
``num_cpus``, ``max_restarts``, ``max_task_retries``, spread over the nodes),
keeps at most ``in_flight`` units queued per actor, and streams completions with
``ray.wait``.  Each completion reaches ``on_result(unit, result, UnitInfo)`` in
the driver, which is therefore the single writer of whatever it stores.

Failures.  Ray restarts a crashed actor (``max_restarts``) and replays its
queued calls (``max_task_retries``).  When an actor is gone for good (killed
with ``no_restart``, or out of restarts) its units come back to the queue and
the actor is replaced, up to ``max_attempts`` tries per unit; results of a unit
that already reported are ignored, so none is delivered twice.  An exception
raised by ``fn`` itself is not retried: it stops the run with
:class:`UnitFailed` after the results already delivered.

:func:`connect` starts an embedded single-node Ray (``address=None``), or joins
the cluster at ``address`` (``ray.init(address=...)``; inside ``ray job submit``
``RAY_ADDRESS`` points at the job's cluster).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from ._text import one_line

__all__ = ["UnitInfo", "RunSummary", "UnitFailed", "ServiceError", "ConnectError", "connect", "run_units",
           "cluster_cpus"]

ACTOR_PREFIX = "distntk-worker"


class ServiceError(RuntimeError):
    """The cluster could not be reached or the run could not finish; one-line message."""


class ConnectError(ServiceError):
    """Ray could not be started or the cluster could not be reached."""


class UnitFailed(ServiceError):
    """The unit's function raised; ``unit`` and ``cause`` say which and why."""

    def __init__(self, unit, cause: BaseException):
        self.unit, self.cause = unit, cause
        super().__init__(one_line(f"unit {unit} failed: {type(cause).__name__}: {one_line(cause)}"))


@dataclass(frozen=True)
class UnitInfo:
    """Where and how long a unit ran: wall seconds inside the actor, Ray node id, actor slot."""

    wall_time: float
    node: str
    actor: int
    attempt: int


@dataclass(frozen=True)
class RunSummary:
    units: int
    items: int
    seconds: float
    nodes: dict  # node id -> units computed there
    retried: int  # units resubmitted after an actor failure
    actors: int


@ray.remote
class _Worker:
    """Calls the unit function and times it.

    The function travels as an object ref boxed in a list with every call (Ray
    then passes the argument inline instead of resolving it) and is fetched once
    per actor life, so a restarted actor simply fetches it again from the
    driver-owned object, alive for the whole run.
    """

    def __init__(self):
        self._fn, self._key = None, None
        self._node = ray.get_runtime_context().get_node_id()

    def run(self, fn_box: list, unit):
        if self._key != fn_box[0].hex():
            self._fn, self._key = ray.get(fn_box[0]), fn_box[0].hex()
        t0 = time.perf_counter()
        out = self._fn(unit)
        return out, time.perf_counter() - t0, self._node

    def node(self) -> str:
        return self._node


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None, namespace: str | None = None):
    """Ray for the duration of the block: join ``address`` or start an embedded local Ray.

    An already initialised Ray (a test, a notebook) is used as is and left running.
    """
    if ray.is_initialized():
        yield
        return
    kwargs = dict(namespace=namespace, logging_level="WARNING", configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        where = f"the Ray cluster at {address}" if address else "an embedded Ray"
        raise ConnectError(f"cannot start or reach {where}: {one_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def _new_actor(slot: int, gen: int, num_cpus: float, max_restarts: int, max_task_retries: int):
    return _Worker.options(
        name=f"{ACTOR_PREFIX}-{slot}" + (f".{gen}" if gen else ""),
        num_cpus=num_cpus,
        max_restarts=max_restarts,
        max_task_retries=max_task_retries,
        scheduling_strategy="SPREAD",
    ).remote()


def run_units(
    fn: Callable[[Any], Any],
    units: Iterable,
    on_result: Callable[[Any, Any, UnitInfo], None],
    *,
    actors: int | None = None,
    num_cpus: float = 1,
    in_flight: int = 2,
    max_restarts: int = 2,
    max_task_retries: int = 2,
    max_attempts: int = 4,
    size: Callable[[Any], int] = lambda unit: 1,
    item_name: str = "items",
    progress: bool = True,
    desc: str = "units",
) -> RunSummary:
    """Compute ``fn(unit)`` for every unit on Ray actors; deliver each result once, in the driver.

    ``size(unit)`` counts the items a unit contributes (for the rate shown as
    ``item_name``/s).  Must be called with Ray initialised (see :func:`connect`).
    """
    units = list(units)
    if not ray.is_initialized():
        raise ServiceError("run_units needs Ray; call it inside distntk.service.connect()")
    n_actors = max(1, min(actors or max(1, int(cluster_cpus() // num_cpus)), max(len(units), 1)))
    t0 = time.perf_counter()
    summary = dict(units=0, items=0, nodes={}, retried=0)
    if not units:
        return RunSummary(seconds=0.0, actors=0, **summary)

    fn_box = [ray.put(fn)]  # one copy in the object store, owned by this driver
    opts = (num_cpus, max_restarts, max_task_retries)
    pool = [_new_actor(k, 0, *opts) for k in range(n_actors)]
    gens = [0] * n_actors
    load = [0] * n_actors
    queue = deque(range(len(units)))  # indices into `units`
    attempts = [0] * len(units)
    inflight: dict = {}  # ref -> (slot, actor generation, unit index)
    delivered: set[int] = set()
    bar = _progress(len(units), desc, progress)

    def fill(k: int) -> None:
        while load[k] < in_flight and queue:
            j = queue.popleft()
            attempts[j] += 1
            inflight[pool[k].run.remote(fn_box, units[j])] = (k, gens[k], j)
            load[k] += 1

    try:
        for k in range(n_actors):
            fill(k)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            if not ready:
                bar.refresh()
                continue
            for ref in ready:
                k, gen, j = inflight.pop(ref)
                load[k] -= 1
                u = units[j]
                try:
                    out, wall, node = ray.get(ref)
                except RayTaskError as exc:
                    raise UnitFailed(u, exc.cause if exc.cause is not None else exc) from None
                except RayActorError as exc:
                    if attempts[j] >= max_attempts:
                        raise ServiceError(f"unit {u} failed {attempts[j]} times: actor lost "
                                           f"({type(exc).__name__})") from None
                    summary["retried"] += 1
                    queue.appendleft(j)
                    gone = not isinstance(exc, ActorUnavailableError)  # unavailable: restarting
                    if gone and gens[k] == gen:  # this slot's actor is gone for good: replace it
                        with contextlib.suppress(Exception):
                            ray.kill(pool[k], no_restart=True)
                        gens[k] += 1
                        pool[k] = _new_actor(k, gens[k], *opts)
                else:
                    if j not in delivered:
                        delivered.add(j)
                        on_result(u, out, UnitInfo(wall, node, k, attempts[j]))
                        summary["units"] += 1
                        summary["items"] += size(u)
                        summary["nodes"][node] = summary["nodes"].get(node, 0) + 1
                        bar.update(1)
                        rate = summary["items"] / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix_str(f"{rate:.1f} {item_name}/s", refresh=False)
                fill(k)
            for k in range(n_actors):  # a replaced actor, or queue refills after a retry
                fill(k)
    finally:
        bar.close()
        for a in pool:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)
    return RunSummary(seconds=time.perf_counter() - t0, actors=n_actors, **summary)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="unit", file=sys.stderr, disable=not enabled,
                mininterval=0.5, dynamic_ncols=True, smoothing=0.1)
