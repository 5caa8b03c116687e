"""The Ray layer: run opaque work units on a pool of actors and stream the results back.

Nothing here knows what a unit computes.  :func:`run_units` takes a callable
``fn(unit) -> result`` and a list of picklable ``units``; it puts ``fn`` in the
object store once, starts ``actors`` Ray actors that each hold it (explicit
``num_cpus``, ``max_restarts``, ``max_task_retries``, spread over the nodes) in
an :class:`ActorPool`, keeps at most ``in_flight`` units queued per actor, and
drains completions in batches (one blocking ``ray.wait`` for the first, a
non-blocking one for the rest, one ``ray.get``).  Iterating the :class:`UnitRun`
it returns yields each drained batch of ``(unit, result, UnitInfo)`` in the driver
(an empty one about once a second while none complete), so the driver records,
checks and commits between batches.
Service events (a lost actor, a resubmitted unit, a replaced actor) go to the
``logging`` logger ``distntk.service``.

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

:func:`check_address` asks ``address`` whether it is a Ray cluster before anything
else happens (``ray.init`` on a wrong address retries for minutes, printing Ray's
reconnect lines): a TCP connection first (refused, unknown host, no answer), then
one gRPC call with a deadline of ``timeout`` seconds, the call ``ray.init`` makes
first: ``NodeInfoGcsService.GetClusterId`` on a GCS (``HOST:PORT``, what
``ray start --head`` prints; ``auto`` resolved as Ray resolves it), or the Ray
client's ``ClusterInfo(PING)`` on a client server (``ray://HOST:PORT``).  The call
carries no token: a reply, or Ray's ``UNAUTHENTICATED``, means a Ray server is
there (its token is ``ray.init``'s business); a listener that does not speak
HTTP/2 fails at once, one that says nothing meets the deadline, and another gRPC
server answers ``UNIMPLEMENTED``.  Each is one :class:`ConnectError` line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from ._text import one_line
from .errors import DistntkError

__all__ = ["UnitInfo", "RunSummary", "UnitFailed", "ServiceError", "ConnectError", "ActorPool", "connect",
           "check_address", "run_units", "UnitRun", "cluster_cpus"]

ACTOR_PREFIX = "distntk-worker"
_log = logging.getLogger("distntk.service")


class ServiceError(DistntkError, RuntimeError):
    """The cluster could not be reached or the run could not finish; one-line message."""

    exit_code = 1


class ConnectError(ServiceError):
    """Ray could not be started or the cluster could not be reached."""

    exit_code = 2


class UnitFailed(ServiceError):
    """The unit's function raised; ``unit`` and ``cause`` say which and why."""

    def __init__(self, unit: Any, cause: BaseException):
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


def _token_notice(record: logging.LogRecord) -> bool:
    return "Token authentication is enabled for this Ray cluster" not in record.getMessage()


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


CHECK_TIMEOUT_S = 10.0  # the deadline of check_address's gRPC call: a live GCS answers in milliseconds
_EXPECTED = "expected the HOST:PORT that `ray start --head` prints (port 6379 by default), ray://HOST:PORT or auto"


def check_address(address: str | None, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise a one-line :class:`ConnectError` unless a Ray cluster answers at ``address``; see the module docstring.

    ``None`` and ``"local"`` (an embedded Ray), an address of another Ray client
    plugin (``module://...``), and any address while Ray is already initialised in
    this process (:func:`connect` then uses that Ray as is) are not checked.
    """
    if not address or address == "local" or ray.is_initialized():
        return
    scheme, sep, rest = address.partition("://")
    if sep and scheme in ("http", "https"):
        raise ConnectError(f"address {address}: an HTTP address (the dashboard's, for `ray job submit`); "
                           f"{_EXPECTED}")
    if sep and scheme != "ray":
        return
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        try:
            resolved = canonicalize_bootstrap_address("auto")
        except Exception as exc:  # noqa: BLE001 - Ray's words, on one line
            raise ConnectError(f"address auto: {one_line(exc)}") from None
        if not resolved:
            raise ConnectError(f"address auto: no running Ray cluster found on this machine; {_EXPECTED}")
        address = resolved
    kind = "Ray client server" if sep else "Ray cluster"
    hostport = rest if sep else address
    host, _, port = hostport.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectError(f"address {address}: not HOST:PORT; {_EXPECTED}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except socket.gaierror as exc:
        why = f"unknown host {host!r} ({one_line(exc)})"
    except TimeoutError:
        why = f"no answer within {timeout:g} s"
    except OSError as exc:
        why = one_line(exc).lower()
    else:
        why = _grpc_probe(hostport, bool(sep), timeout)
        if why:
            raise ConnectError(f"{address} is not a {kind}: {why}; {_EXPECTED}")
        return
    raise ConnectError(f"cannot reach a {kind} at {address}: {why}; {_EXPECTED}")


def _grpc_probe(hostport: str, client: bool, timeout: float) -> str | None:
    """``None`` if a Ray GCS (or client server) answers its first call at ``hostport``, else why not."""
    import grpc

    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):  # as Ray's own channels do
        from ray._private.tls_utils import load_certs_from_env

        chain, key, ca = load_certs_from_env()
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
        channel = grpc.secure_channel(hostport, creds)
    else:
        channel = grpc.insecure_channel(hostport)
    try:
        if client:
            from ray.core.generated import ray_client_pb2 as pb
            from ray.core.generated import ray_client_pb2_grpc as rpc

            rpc.RayletDriverStub(channel).ClusterInfo(pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING),
                                                      timeout=timeout)
        else:
            from ray.core.generated import gcs_service_pb2 as pb
            from ray.core.generated import gcs_service_pb2_grpc as rpc

            rpc.NodeInfoGcsServiceStub(channel).GetClusterId(pb.GetClusterIdRequest(), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code()
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return None  # Ray's token check answered: a Ray server, whose token ray.init handles
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"something listens there but gives no gRPC reply within {timeout:g} s"
        if code == grpc.StatusCode.UNIMPLEMENTED:
            return "a gRPC server of another service answers there"
        last = (exc.details() or "").rsplit(": ", 1)[-1]  # "failed to connect ...: ipv4:HOST:PORT: <why>"
        return f"something listens there but does not speak gRPC ({one_line(last, 50)})"
    finally:
        channel.close()
    return None


@contextlib.contextmanager
def connect(address: str | None = None, num_cpus: int | None = None, namespace: str | None = None,
            runtime_env: dict | None = None) -> Iterator[None]:
    """Ray for the duration of the block: join ``address`` or start an embedded local Ray.

    An already initialised Ray (a test, a notebook) is used as is and left running.
    ``runtime_env`` (e.g. ``{"py_modules": [...]}``: code the workers need that the
    cluster lacks) is the job's, given when joining ``address``.
    """
    if ray.is_initialized():
        yield
        return
    kwargs = dict(namespace=namespace, logging_level="WARNING", configure_logging=True)
    if address and runtime_env:
        kwargs["runtime_env"] = runtime_env
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            # the embedded Ray is this process's own (loopback, private token): Ray's notice that token
            # authentication is on by default says nothing the user must act on
            logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_token_notice)
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        where = f"the Ray cluster at {address}" if address else "an embedded Ray"
        raise ConnectError(f"cannot start or reach {where}: {one_line(exc)}") from None
    try:
        yield
    finally:
        ray.shutdown()


class ActorPool:
    """A fixed number of actor slots, each holding at most ``in_flight`` calls of one function.

    ``submit`` sends a unit to a slot with room, ``completed`` drains every
    finished call at once (one blocking ``ray.wait`` for the first, then a
    non-blocking one for all the others, then one ``ray.get`` for the batch),
    ``replace`` swaps a slot's lost actor for a new one.  What to run next, and
    how often, is the caller's business (:func:`run_units`).
    """

    def __init__(self, fn: Callable, n_actors: int, *, num_cpus: float = 1, in_flight: int = 2,
                 max_restarts: int = 2, max_task_retries: int = 2):
        self._fn_box = [ray.put(fn)]  # one copy in the object store, owned by this driver
        self._opts = (num_cpus, max_restarts, max_task_retries)
        self.size, self.in_flight = n_actors, in_flight
        self.actors = [self._new(k, 0) for k in range(n_actors)]
        self.gens = [0] * n_actors
        self._calls: dict = {}  # ref -> (slot, actor generation, tag)
        self._free = deque(k for _ in range(in_flight) for k in range(n_actors))  # one entry per free call slot

    def _new(self, slot: int, gen: int):
        num_cpus, max_restarts, max_task_retries = self._opts
        return _Worker.options(
            name=f"{ACTOR_PREFIX}-{slot}" + (f".{gen}" if gen else ""),
            num_cpus=num_cpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            max_concurrency=self.in_flight,  # the calls in flight run on threads: one waits on I/O, one computes
            scheduling_strategy="SPREAD",
        ).remote()

    def has_room(self) -> bool:
        return bool(self._free)

    def busy(self) -> int:
        return len(self._calls)

    def submit(self, tag: Any, unit: Any) -> None:
        """Run ``fn(unit)`` on a slot with room; ``tag`` comes back with its outcome."""
        k = self._free.popleft()
        self._calls[self.actors[k].run.remote(self._fn_box, unit)] = (k, self.gens[k], tag)

    def completed(self, timeout: float) -> list:
        """``[(tag, slot, generation, value or exception)]`` of every call finished within ``timeout`` s."""
        if not self._calls:
            return []
        refs = list(self._calls)
        ready, rest = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            return []
        if rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        try:
            values = ray.get(ready)
        except Exception:  # one of them failed: take them one by one
            values = []
            for ref in ready:
                try:
                    values.append(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - sorted out by the caller
                    values.append(exc)
        out = []
        for ref, value in zip(ready, values, strict=True):
            k, gen, tag = self._calls.pop(ref)
            if gen == self.gens[k]:
                self._free.append(k)
            out.append((tag, k, gen, value))
        return out

    def replace(self, slot: int, gen: int) -> bool:
        """Replace the actor of ``slot`` if it is still generation ``gen``; True if replaced now."""
        if self.gens[slot] != gen:
            return False
        with contextlib.suppress(Exception):
            ray.kill(self.actors[slot], no_restart=True)
        self.gens[slot] += 1
        self.actors[slot] = self._new(slot, self.gens[slot])
        # calls still queued on the old actor fail and come back; the new one starts with all slots free
        self._free = deque(k for k in self._free if k != slot)
        self._free.extend([slot] * self.in_flight)
        return True

    def shutdown(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)


class UnitRun:
    """Units computed on Ray actors, delivered as they complete: iterate for batches.

    Each step of the iteration is one drained batch, a list of ``(unit, result, UnitInfo)``, each unit
    exactly once over the run; an empty batch comes about once a second while none complete, so the caller
    can commit, check its lease, or stop the run by raising or leaving the loop.  :attr:`summary` is set
    once the iteration ends.  Use it as a context manager (or iterate it to the end) so that its actors are
    released however the caller's loop ends.
    """

    def __init__(self, fn, units, *, actors, num_cpus, in_flight, max_restarts, max_task_retries,
                 max_attempts, size, count, item_name, progress, desc):
        if not ray.is_initialized():
            raise ServiceError("run_units needs Ray; call it inside distntk.service.connect()")
        self.units = list(units)
        self.n_actors = max(1, min(actors or max(1, int(cluster_cpus() // num_cpus)), max(len(self.units), 1)))
        self._pool_args = dict(num_cpus=num_cpus, in_flight=in_flight, max_restarts=max_restarts,
                               max_task_retries=max_task_retries)
        self.fn, self.max_attempts, self.size, self.count = fn, max_attempts, size, count
        self.item_name, self.progress, self.desc = item_name, progress, desc
        self.summary: RunSummary | None = None
        self._batches = self._run()

    def __iter__(self):
        return self._batches

    def __enter__(self) -> "UnitRun":
        return self

    def __exit__(self, *exc) -> None:
        self._batches.close()

    def _run(self):
        units, count, size = self.units, self.count, self.size
        t0 = time.perf_counter()
        summary = dict(units=0, items=0, nodes={}, retried=0)
        if not units:
            self.summary = RunSummary(seconds=0.0, actors=0, **summary)
            return
        pool = ActorPool(self.fn, self.n_actors, **self._pool_args)
        queue = deque(range(len(units)))  # indices into `units`
        attempts = [0] * len(units)
        delivered: set[int] = set()
        bar = _progress(sum(count(u) for u in units), self.desc, self.progress)
        try:
            while queue or pool.busy():
                while queue and pool.has_room():
                    j = queue.popleft()
                    if j in delivered:
                        continue
                    attempts[j] += 1
                    pool.submit(j, units[j])
                batch = pool.completed(timeout=1.0)
                out = []
                for j, k, gen, value in batch:
                    u = units[j]
                    if isinstance(value, RayTaskError):
                        if out:  # what completed before it is delivered first
                            yield out
                        raise UnitFailed(u, value.cause if value.cause is not None else value) from None
                    if isinstance(value, RayActorError):
                        if j in delivered:
                            continue
                        if attempts[j] >= self.max_attempts:
                            if out:  # what completed before it is delivered first
                                yield out
                            raise ServiceError(f"unit {u} failed {attempts[j]} times: actor lost "
                                               f"({type(value).__name__})") from None
                        summary["retried"] += 1
                        queue.appendleft(j)
                        _log.warning("unit %s: actor %d lost (%s); resubmitted, attempt %d", u, k,
                                     type(value).__name__, attempts[j] + 1)
                        if not isinstance(value, ActorUnavailableError) and pool.replace(k, gen):  # gone for good
                            _log.warning("actor slot %d replaced by a new actor", k)
                        continue
                    if isinstance(value, BaseException):
                        if out:
                            yield out
                        raise ServiceError(f"unit {u}: {type(value).__name__}: {one_line(value)}") from None
                    if j in delivered:
                        continue
                    result, wall, node = value
                    delivered.add(j)
                    out.append((u, result, UnitInfo(wall, node, k, attempts[j])))
                    summary["units"] += count(u)
                    summary["items"] += size(u)
                    summary["nodes"][node] = summary["nodes"].get(node, 0) + count(u)
                    bar.update(count(u))
                yield out
                rate = summary["items"] / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{rate:.1f} {self.item_name}/s", refresh=not batch)
            self.summary = RunSummary(seconds=time.perf_counter() - t0, actors=self.n_actors, **summary)
        finally:
            bar.close()
            pool.shutdown()


def run_units(
    fn: Callable[[Any], Any],
    units: Iterable,
    *,
    actors: int | None = None,
    num_cpus: float = 1,
    in_flight: int = 2,
    max_restarts: int = 2,
    max_task_retries: int = 2,
    max_attempts: int = 4,
    size: Callable[[Any], int] = lambda unit: 1,
    count: Callable[[Any], int] = lambda unit: 1,
    item_name: str = "items",
    progress: bool = True,
    desc: str = "units",
) -> UnitRun:
    """Compute ``fn(unit)`` for every unit on Ray actors; iterate the result for batches of completions.

    ``for batch in run_units(fn, units): for unit, result, info in batch: ...`` delivers each result once,
    in the driver (:class:`UnitRun`).  ``size(unit)`` counts the items a unit contributes (for the rate
    shown as ``item_name``/s), ``count(unit)`` the work units it holds (a call of several: the progress bar
    and :attr:`RunSummary.units` count those).  A unit whose ``fn`` raises stops the run with
    :class:`UnitFailed` once the units completed before it are delivered; a lost actor's units are
    resubmitted, up to ``max_attempts``.  Must be called with Ray initialised (see :func:`connect`).
    """
    return UnitRun(fn, units, actors=actors, num_cpus=num_cpus, in_flight=in_flight, max_restarts=max_restarts,
                   max_task_retries=max_task_retries, max_attempts=max_attempts, size=size, count=count,
                   item_name=item_name, progress=progress, desc=desc)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="unit", file=sys.stderr, disable=not enabled,
                mininterval=0.5, dynamic_ncols=True, smoothing=0.1)
