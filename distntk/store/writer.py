"""Writing a store: creating it (:func:`create_store`, :func:`open_or_create`), the workers' chunks
(:class:`ChunkTarget`, :func:`write_chunks`), the driver's result path (:class:`UnitWriter`) and the unit
records (schema 3: committed in whole chunks).

Workers write (schema 3).  A Ray worker stores its unit's chunks itself
(:func:`write_chunks`, given the store's :class:`ChunkTarget`: its location and
``store_id``) and returns a receipt, the chunks' digests; the driver commits
receipts (:meth:`UnitWriter.commit`) into the records and never touches the data.
A worker that finds no store, or another one (``store_id``), at the location
(a local path on a node that does not share it), or whose writes keep failing,
writes nothing and returns the result; the driver writes that unit on the path
below.  Workers never write ``zarr.json`` or ``unit``.

The driver's result path (:class:`UnitWriter`, from :meth:`ResultStore.writer`).  Units
reach the writer in batches; a batch is cut into rectangular regions of whole
chunks (consecutive blocks of one ``(width, init)`` row, or consecutive full
rows), and each region is written with one ``setitem`` of zarr's async API per
array, every chunk's PUT in flight at once (``async.concurrency``).  Each batch
is one coroutine on zarr's event loop, several batches in flight at once, so the number of
requests in flight, not their latency, sets the throughput; the driver only
waits when ``max_pending`` units are buffered (backpressure: memory stays
bounded when the store is slower than the actors).  A batch's records (its
``done``) are written after all of the batch's data (schema 3: committed after them, with the
workers' receipts): a crash at any moment loses at most the units in flight and the
records not yet committed (at most :data:`_COMMIT_MAX_S` seconds of them), and never
leaves a unit marked done without its data.  A
failed write (a dropped connection, a 5xx) is retried with backoff, the same
bytes to the same objects, before the run stops with a one-line error.

On object storage each chunk and each ``zarr.json`` is one object, written by
one PUT.  A unit's selection covers its chunks exactly (the short last block is
the whole edge chunk), so zarr writes them without reading them first: no
read-modify-write, and two units never share an object.  The driver is the only
writer of metadata and records (workers write only their units' chunks), so the group
``zarr.json`` that :meth:`ResultStore.log` rewrites has no concurrent writer either.  Metadata are
not consolidated (that is not part of Zarr v3): every reader sees the
``zarr.json`` files themselves, so nothing goes stale across a resume.

A new store's location is checked once (:func:`~distntk.store.locations.check_writable`: a probe object
written and removed) before the limit is solved; :func:`open_or_create` with ``checked`` does not probe
again what the caller's :func:`~distntk.store.locations.check_location` just probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.sync import sync as _zarr_sync

from .._text import one_line
from ..experiment import Experiment, Unit
from ..spec import Spec, canonical_json, spec_diff
from .locations import (
    PROBE,
    StoreError,
    check_writable,
    create_group,
    filesystem,
    group_exists,
    is_local,
    local_path,
    needs_shared_filesystem,
    open_group,
    storage_errors,
)
from .objstore import CLIENT_ENV
from .reader import StoreReader, open_store_group
from .schema import (
    PER_REPLICA,
    PER_UNIT,
    PROBE_PREDICTIONS,
    RECORD_FIELDS,
    RISK_PREDICTIONS,
    SCHEMA,
    TARGET_PREDICTIONS,
    VALUE_WINDOW_DIMS,
    VAR,
    chunk_digest,
    chunk_keys,
    dimensions,
    prediction_names,
    predictions_digest,
    se_name,
    solver_attrs,
    variable_attrs,
)

__all__ = ["ResultStore", "UnitWriter", "ChunkTarget", "SpecChanged", "write_chunks", "open_result_store",
           "create_store", "open_or_create"]

_RECORDS_PER_CHUNK = 1024  # schema 3: at least this many unit records per ``unit`` chunk (or all of a width)
_COMMIT_INTERVAL_S = 0.25  # schema 3: the records are committed at most this often while a run goes on,
_COMMIT_UNITS = 256  # once this many units wait for their record,
_COMMIT_MAX_S = 2.0  # or once the oldest has waited this long (a driver killed loses at most that)
_log = logging.getLogger("distntk.store")


class SpecChanged(StoreError):
    """An existing store made from another spec: ``reason`` names the keys; ``fresh`` is a location for this spec.

    ``fresh`` is the store's name with the new spec hash's first 8 characters
    (``stores/quickstart.zarr`` -> ``stores/quickstart-3fa2c1d0.zarr``), more of the
    hash if that is taken by something else: a location where nothing is yet, or
    this very spec's store (a run there resumes).
    """

    def __init__(self, reason: str, fresh: str):
        super().__init__(f"{reason}; use another store for this spec, e.g. {fresh}")
        self.reason, self.fresh = reason, fresh


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:  # pragma: no cover - all are declared dependencies
        return "unknown"


@dataclass(eq=False)
class ResultStore(StoreReader):
    """A distntk store opened for reading or writing. Open it with :func:`open_result_store`,
    :func:`open_or_create` or :func:`create_store`."""

    _writer_state: "_Regions | None" = field(default=None, repr=False)
    _commits: "_Commits | None" = field(default=None, repr=False)

    def write_unit(self, unit: Unit, result: dict, wall_time: float, node: str) -> None:
        """Write one unit now (its data, then its record: ``done``); see :meth:`writer`."""
        if self._writer_state is None:
            self._writer_state = _Regions(self)
        w = self._writer_state
        with storage_errors(self.path, "write store", catch=(OSError,)):
            stored = _zarr_sync(w.write(w.plan([(unit, result, float(wall_time), str(node))])))
        if self.schema >= 3:
            commits = self.commits()
            for item in stored:
                commits.add(*item)
            commits.flush(wait=True)

    def chunk_target(self) -> "ChunkTarget | None":
        """Schema 3: what a worker needs to store this store's unit chunks itself (:func:`write_chunks`);
        None for older layouts (the driver writes their units)."""
        if self.schema < 3:
            return None
        names = PER_REPLICA if VAR.risk in self.group else (VAR.output,)
        client = "fsspec" if os.environ.get(CLIENT_ENV) == "fsspec" else "obstore"
        return ChunkTarget(self.path, self._storage_options, str(self.attrs.get("store_id", "")), tuple(self.widths),
                           self.block, names, client)

    def commits(self) -> "_Commits":
        """Schema 3: the store's record commits (one per opened store: the driver's view of ``unit``)."""
        if self._commits is None:
            self._commits = _Commits(self, _zarr_sync(_running_loop()))
        return self._commits

    def writer(self, max_pending: int = 1024, batches: int | None = None, concurrency: int = 64) -> "UnitWriter":
        """A :class:`UnitWriter` on this store (use it as a context manager); ``batches``: see there."""
        return UnitWriter(self, max_pending=max_pending, batches=batches, concurrency=concurrency)

    def rebuild(self, spec: Spec, predictions: Callable[[], xr.Dataset]) -> list[str]:
        """Recreate the arrays the spec implies that are missing, and rewrite lost predictions.

        Returns the names rebuilt (empty when nothing was missing; ``predictions`` is
        then not called).  A recreated per-replica array is empty: the units whose
        data it held are damaged and :meth:`pending` hands them back to be recomputed.
        """
        missing, lost = self.missing_arrays(), self.lost_predictions()
        if not missing and not lost:
            return []
        self._data_rebuilt = bool(set(PER_REPLICA) & set(missing))
        pred = predictions()
        with storage_errors(self.path, "write store", catch=(OSError,)):
            _allocate(self.group, spec.experiment, pred, self.schema, only=set(missing))
            for name in lost:
                self.array(name)[...] = pred[name].values if name != VAR.probe_window else \
                    _probe_windows(spec.experiment)
            self._arrays.clear()
            fresh = _attrs(spec, spec.experiment, pred, "")
            solver = solver_attrs(fresh)
            values = {n: np.asarray(self.array(n)[...]) for n in prediction_names(self.group.array_keys())}
            self.group.attrs.update({**solver, "predictions_digest": predictions_digest(values, solver)})
        self.log(f"rebuilt {', '.join(missing + lost)} (missing or lost; units without their data are recomputed)")
        return missing + lost

    def log(self, event: str) -> None:
        """Append ``event`` to the CF ``history`` attribute and refresh ``updated``."""
        now = _now()
        history = self.group.attrs.get("history", "")
        with storage_errors(self.path, "write store", catch=(OSError,)):
            self.group.attrs.update({"updated": now, "history": f"{history}\n{now} {event}".lstrip("\n")})


class _Regions:
    """Array handles and write counters of one store, opened once; writes batches of units by regions."""

    def __init__(self, rs: ResultStore):
        self.schema = rs.schema
        names = (VAR.output, VAR.unit) if self.schema >= 2 else (VAR.output,) + RECORD_FIELDS
        with storage_errors(rs.path, "open store"):
            self.arrays = {k: rs.array(k).async_array for k in names}
            with contextlib.suppress(KeyError):
                self.arrays[VAR.risk] = rs.array(VAR.risk).async_array
        if rs._writes is None:  # the write counters as read chunk-safe (a damaged one restarts at 0)
            units = rs.all_units()
            writes = rs.unit_fields(units)[0][VAR.unit_writes] if self.schema >= 2 else \
                rs._read(VAR.unit_writes, units)[0]
            rs._writes = np.asarray(writes, dtype=np.int64)
        self.rs, self.widths, self.block = rs, rs.widths, rs.block
        self.n_data = int(rs.array(VAR.output).shape[2])
        self.n_blocks = -(-self.n_data // self.block)

    def _digest(self, item) -> dict:
        """``{name: digest}`` of the chunks a unit ``item = (unit, result, wall, node)`` writes."""
        wi, i, _sl, b = self.rs.region(item[0])
        return {name: chunk_digest(key, np.asarray(item[1][name], dtype=np.float64))  # output, risk: float64
                for name, key in chunk_keys(self.arrays, wi, i, b).items() if name in item[1]}

    def _regions(self, batch: list) -> list:
        """``batch`` -> ``[(wi, i0, i1, b0, b1, items)]``: rectangles of whole chunks, items in row-major order.

        Consecutive blocks of one row make one region; rows covered completely and
        consecutive in ``init`` merge into one region ``(wi, i0:i1, all blocks)``.
        """
        keyed = sorted(((self.rs.region(it[0]), it) for it in batch), key=lambda x: (x[0][0], x[0][1], x[0][3]))
        rows: list = []  # [wi, i, b0, b1, items]
        for (wi, i, _sl, b), it in keyed:
            if rows and rows[-1][:2] == [wi, i] and rows[-1][3] == b:
                rows[-1][3] = b + 1
                rows[-1][4].append(it)
            elif rows and rows[-1][:2] == [wi, i] and rows[-1][3] > b:
                continue  # the same unit twice in one batch: write it once
            else:
                rows.append([wi, i, b, b + 1, [it]])
        out: list = []
        for wi, i, b0, b1, items in rows:
            full = b0 == 0 and b1 == self.n_blocks
            last = out[-1] if out else None
            if full and last and last[0] == wi and last[2] == i and last[3] == 0 and last[4] == self.n_blocks:
                out[-1] = (wi, last[1], i + 1, 0, self.n_blocks, last[5] + items)
            else:
                out.append((wi, i, i + 1, b0, b1, items))
        return out

    def plan(self, batch: list) -> list:
        """The regions of ``[(unit, result, wall, node)]``, the units' write counters counted up (once per batch;
        schema 3: by :class:`_Commits`, when the record is made)."""
        out = []
        for wi, i0, i1, b0, b1, items in self._regions(batch):
            if self.schema < 3:
                self.rs._writes[wi, i0:i1, b0:b1] += 1
            out.append((wi, i0, i1, b0, b1, items, self.rs._writes[wi, i0:i1, b0:b1].copy()))
        return out

    async def write(self, regions: list) -> list:
        """Write planned regions: all data (and, schema 1, per-unit fields), then the records (``done``)."""
        a = self.arrays
        data, flags = [], []
        for wi, i0, i1, b0, b1, items, counts in regions:
            rows = i1 - i0
            d0, d1 = b0 * self.block, min(b1 * self.block, self.n_data)
            sel_d = (wi, slice(i0, i1), slice(d0, d1)) if rows > 1 else (wi, i0, slice(d0, d1))
            sel_u = (wi, slice(i0, i1), slice(b0, b1)) if rows > 1 else (wi, i0, slice(b0, b1))
            shape_u = (rows, b1 - b0) if rows > 1 else (b1 - b0,)

            data.append(a[VAR.output].setitem(sel_d, _stacked(items, VAR.output, rows)))
            if VAR.risk in a and VAR.risk in items[0][1]:
                data.append(a[VAR.risk].setitem(sel_d, _stacked(items, VAR.risk, rows)))
            if self.schema >= 3:
                continue
            if self.schema >= 2:
                recs = [json.dumps({"writes": int(n), "wall_time": it[2], "node": it[3], "digest": self._digest(it)},
                                   separators=(",", ":"))
                        for it, n in zip(items, counts.ravel(), strict=True)]
                flags.append((a[VAR.unit], sel_u, np.array(recs, dtype=str).reshape(shape_u)))
                continue
            data.append(a[VAR.unit_wall_time].setitem(sel_u, np.array([it[2] for it in items]).reshape(shape_u)))
            data.append(a[VAR.unit_node].setitem(sel_u, np.array([it[3] for it in items], dtype=str).reshape(shape_u)))
            data.append(a[VAR.unit_writes].setitem(sel_u, counts.reshape(shape_u)))
            flags.append((a[VAR.done], sel_d, np.ones((rows, d1 - d0) if rows > 1 else (d1 - d0,), dtype=bool)))
        await asyncio.gather(*data)
        if self.schema >= 3:  # the data are stored: their records go to the commits
            return [(it[0], it[2], it[3], self._digest(it)) for r in regions for it in r[5]]
        await asyncio.gather(*(arr.setitem(sel, v) for arr, sel, v in flags))  # only once the data are stored
        return [it[0] for r in regions for it in r[5]]


class _Commits:
    """Schema 3: the ``unit`` records, held by the driver and committed in whole chunks.

    :meth:`add` makes a unit's record (its chunks are stored: by a worker, whose receipt carries their
    digests, or by the driver's :class:`_Regions`) and marks its chunk of ``unit`` dirty; :meth:`flush`
    rewrites the dirty chunks whole once :data:`_COMMIT_UNITS` units wait (at most every
    :data:`_COMMIT_INTERVAL_S` seconds) or the oldest has waited :data:`_COMMIT_MAX_S` seconds, with one
    write of a chunk in flight at a time (a chunk that changes meanwhile waits for the next flush): about
    one record PUT per 256 units, and at most 2 s of receipts lost with a killed driver.  A unit is
    complete (:meth:`completed`) once the chunk holding its record is stored.  Records of a chunk that
    did not decode at open are rewritten as empty: those units are not done and are computed again.
    """

    def __init__(self, rs: ResultStore, loop):
        units = rs.all_units()
        recs, _bad = rs._read(VAR.unit, units)
        self.rs, self.loop = rs, loop
        self.arr = rs.array(VAR.unit).async_array
        self.ci = int(rs.array(VAR.unit).chunks[1])
        self.recs = np.array(recs, dtype=object)
        if rs._writes is None:
            rs._writes = np.asarray(rs.unit_fields(units)[0][VAR.unit_writes], dtype=np.int64)
        self.dirty: dict = {}  # (wi, chunk row) -> units added since its last write
        self.fut = None  # the flush in flight: (future, {chunk: units})
        self.last = self.since = 0.0
        self.waiting = 0  # units added since the last flush began
        self._done: list = []
        self.chunk_writes = 0  # record chunks written (one PUT each on object storage)

    def add(self, unit: Unit, wall_time: float, node: str, digest: dict, writer: str = "driver") -> None:
        """The record of ``unit``, whose chunks (``digest``) ``writer`` ("worker" or "driver") stored."""
        wi, i, _sl, b = self.rs.region(unit)
        self.rs._writes[wi, i, b] += 1
        self.recs[wi, i, b] = json.dumps({"writes": int(self.rs._writes[wi, i, b]), "wall_time": float(wall_time),
                                          "node": str(node), "digest": digest, "writer": writer},
                                         separators=(",", ":"))
        if not self.dirty:
            self.since = time.monotonic()
        self.dirty.setdefault((wi, i // self.ci), []).append(unit)
        self.waiting += 1

    def _reap(self, block: bool) -> None:
        if self.fut is not None and (block or self.fut[0].done()):
            fut, chunks = self.fut
            self.fut = None
            fut.result()  # raises the flush's StoreError
            self._done.extend(u for us in chunks.values() for u in us)

    def flush(self, wait: bool = False) -> None:
        """Start a flush of the dirty chunks when the last one is stored and the interval has passed
        (``wait``: now, and wait for it)."""
        self._reap(block=wait)
        if self.fut is not None or not self.dirty:
            return
        waited = time.monotonic() - self.since
        if not wait and waited < _COMMIT_MAX_S and (self.waiting < _COMMIT_UNITS or
                                                   time.monotonic() - self.last < _COMMIT_INTERVAL_S):
            return
        chunks, self.dirty, self.waiting = self.dirty, {}, 0
        writes = []
        for wi, c in chunks:
            sel = (wi, slice(c * self.ci, (c + 1) * self.ci), slice(None))
            writes.append((sel, np.array(self.recs[sel].tolist(), dtype=str)))
        self.last = time.monotonic()
        self.chunk_writes += len(writes)
        self.fut = (asyncio.run_coroutine_threadsafe(self._write(writes), self.loop), chunks)
        if wait:
            self._reap(block=True)

    async def _write(self, writes: list) -> None:
        await _retrying(self.rs.path, f"commit of {len(writes)} unit record chunk(s)",
                        lambda: asyncio.gather(*(self.arr.setitem(sel, v) for sel, v in writes)))

    def completed(self) -> list[Unit]:
        self._reap(block=False)
        out, self._done = self._done, []
        return out

    @property
    def pending(self) -> int:
        return sum(len(us) for us in self.dirty.values()) + \
            (sum(len(us) for us in self.fut[1].values()) if self.fut is not None else 0)


async def _retrying(path: str, what: str, attempt: Callable, on_retry: Callable | None = None):
    """Await ``attempt()`` until it succeeds, retrying storage and transport errors with backoff
    (:data:`_RETRY_DELAYS`; ``on_retry()`` before each retry); then a one-line :class:`StoreError`."""
    for n, delay in enumerate(_RETRY_DELAYS + (None,)):
        try:
            with storage_errors(path, "write store", catch=(OSError,)):
                return await attempt()
        except StoreError as exc:
            if delay is None:
                raise StoreError(f"{exc} (after {n} retries)") from None
            if on_retry is not None:
                on_retry()
            _log.warning("%s failed (%s); retry %d in %.2f s", what, exc, n + 1, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class ChunkTarget:
    """A schema-3 store as a worker sees it: where it is, which store it must find there, its unit grid."""

    path: str
    storage_options: dict | None
    store_id: str  # the store's ``store_id`` attribute: a worker that finds another store there does not write
    widths: tuple
    block: int
    names: tuple  # the per-replica arrays: ("output",) or ("output", "risk")
    client: str = "obstore"  # the workers' client on object storage: "fsspec" when the driver has
    # DISTNTK_OBJECT_CLIENT=fsspec (decided in the driver, so it reaches the actors of any cluster)


_WORKER_ARRAYS: dict = {}  # in a worker process: (path, store_id) -> {name: zarr.Array}, or why it cannot write
_WORKER_RETRY_DELAYS = (0.25, 1.0, 4.0)  # a worker's storage error: tried again after these, then the driver writes


def write_chunks(target: ChunkTarget, items: list) -> list:
    """Store the chunks of units ``items = [(unit, result)]`` (whole chunks of ``output`` and ``risk``, keys
    no other unit has) from a worker, all in flight at once.

    Returns one receipt per unit: ``{name: digest}`` (:func:`chunk_digest`: each binds the chunk's key and
    values), or one line saying why this process cannot write the store: it does not reach the location (a
    local path on another node without a shared filesystem, no credentials), finds another store there, or
    the writes keep failing after :data:`_WORKER_RETRY_DELAYS`.  Then the caller hands those results to the
    driver, which writes them itself: no unit is lost.  Only chunks are written: never ``zarr.json``, never
    ``unit``.
    """
    key = (target.path, target.store_id)
    arrays = _WORKER_ARRAYS.get(key)
    if arrays is None:
        try:
            # opens (writes no metadata) through obstore on object storage where it fits: 3x less CPU per
            # chunk than s3fs (distntk.store.objstore)
            g = open_group(target.path, "r+", target.storage_options, client=target.client)
            with storage_errors(target.path, "open store"):
                found = None if g is None else str(g.attrs.get("store_id", ""))
                arrays = {name: g[name].async_array for name in target.names} if found == target.store_id else (
                    f"no store at {target.path} from this worker" + (
                        " (a local path on a node that does not share it?)"
                        if needs_shared_filesystem(target.path) else "") if g is None else
                    f"the store there has store_id {found[:12] or '(none)'}, not "
                    f"{target.store_id[:12]} (another filesystem at the same path?)")
        except (StoreError, KeyError) as exc:
            arrays = one_line(exc, 200)
        _WORKER_ARRAYS[key] = arrays
    if isinstance(arrays, str):
        return [arrays] * len(items)
    writes, receipts = [], []
    for unit, result in items:
        wi, i, b = target.widths.index(unit.width), unit.init, unit.data_start // target.block
        digest = {}
        for name, ckey in chunk_keys(arrays, wi, i, b).items():
            values = np.asarray(result[name], dtype=np.float64)
            writes.append((arrays[name], (wi, i, slice(unit.data_start, unit.data_stop)), values))
            digest[name] = chunk_digest(ckey, values)
        receipts.append(digest)

    async def all_at_once():
        await asyncio.gather(*(a.setitem(sel, v) for a, sel, v in writes))

    for delay in _WORKER_RETRY_DELAYS + (None,):
        try:
            with storage_errors(target.path, "write store", catch=(OSError,)):
                _zarr_sync(all_at_once())
            return receipts
        except StoreError as exc:
            if delay is None:
                return [f"{one_line(exc, 200)} (after {len(_WORKER_RETRY_DELAYS)} retries)"] * len(items)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _stacked(items: list, key: str, rows: int) -> np.ndarray:
    """The ``key`` results of ``items`` (row-major units of one region) as the region's array."""
    x = np.concatenate([np.asarray(it[1][key]) for it in items], axis=0)
    return x.reshape((rows, x.shape[0] // rows) + x.shape[1:]) if rows > 1 else x


# Backoff between the tries of a batch whose write failed with a storage or transport error (~16 s in all).
_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class UnitWriter:
    """Writes units concurrently, in batches, with bounded memory; see the module docstring.

    ``submit`` stages a unit (never blocks), ``flush`` sends the staged units as one
    batch (blocks only while more than ``max_pending`` units are unwritten, or
    ``batches`` batches are in flight), ``completed`` returns the units whose data
    and records are stored since the last call, ``close`` waits for everything.
    A write that still fails after the retries raises :class:`StoreError` from the
    next call.

    Each batch is one coroutine on zarr's own event loop (the loop that runs every
    zarr I/O), handed over with :func:`asyncio.run_coroutine_threadsafe`: the
    driver's thread returns at once, and the batches in flight interleave their
    requests on that one loop, with no writer threads of our own.  ``batches``
    (default 8 on object storage, 2 on a local disk) bounds the batches in flight.
    """

    def __init__(self, rs: ResultStore, max_pending: int = 1024, batches: int | None = None, concurrency: int = 64):
        self.rs = rs
        if batches is None:  # in flight at once: hide latency on object storage; on a local disk the
            batches = 2 if is_local(rs.path) else 8  # writes are CPU-bound and more only contend for the GIL
        if rs._writer_state is None:
            rs._writer_state = _Regions(rs)
        self._regions = rs._writer_state
        self._commits = rs.commits() if rs.schema >= 3 else None
        self.max_pending = max(1, int(max_pending))
        self.batches = max(1, int(batches))
        self._staged: list = []
        self._inflight: deque = deque()  # (concurrent.futures.Future, n_units)
        self._pending = 0
        self._done: list = []
        self._config = zarr.config.set({"async.concurrency": int(concurrency)})
        self._config.__enter__()
        self._loop = _zarr_sync(_running_loop())  # zarr's I/O loop (its own thread)
        self.retries = 0
        self.peak_pending = 0
        self.stored = 0  # units stored with their records by this writer (schemas 1 and 2)
        self._closed = False

    def __enter__(self) -> "UnitWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(wait=exc_type is None)

    def submit(self, unit: Unit, result: dict, wall_time: float, node: str) -> None:
        self._staged.append((unit, result, float(wall_time), str(node)))

    def commit(self, unit: Unit, wall_time: float, node: str, digest: dict) -> None:
        """Schema 3: record a unit whose chunks a worker stored (``digest``: its receipt's chunk digests)."""
        if self._commits is None:
            raise StoreError(f"{self.rs.path}: store schema {self.rs.schema} keeps one record per unit; only "
                             "schema 3 commits workers' receipts")
        self._commits.add(unit, wall_time, node, digest, writer="worker")

    def flush(self) -> None:
        if self._staged:
            while len(self._inflight) >= self.batches:
                self._reap(block=True)
            batch, self._staged = self._staged, []
            regions = self._regions.plan(batch)
            fut = asyncio.run_coroutine_threadsafe(self._write(regions, len(batch)), self._loop)
            self._inflight.append((fut, len(batch)))
            self._pending += len(batch)
            self.peak_pending = max(self.peak_pending, self._pending)
        while self._pending > self.max_pending:  # backpressure: wait for the oldest batch
            self._reap(block=True)
        self._reap(block=False)
        if self._commits is not None:
            self._commits.flush()

    def completed(self) -> list[Unit]:
        """The units whose data and records are stored since the last call."""
        self._reap(block=False)
        if self._commits is not None:
            self._done.extend(self._commits.completed())
        out, self._done = self._done, []
        return out

    @property
    def record_writes(self) -> int:
        """Schema 3: the ``unit`` chunks written so far (one PUT each on object storage); else the units stored."""
        return self._commits.chunk_writes if self._commits is not None else self.stored

    @property
    def pending(self) -> int:
        """Units submitted (or committed) and not yet stored with their records."""
        return self._pending + len(self._staged) + (self._commits.pending if self._commits is not None else 0)

    def close(self, wait: bool = True) -> None:
        """Write what is staged and wait for every batch (``wait``; else cancel them), then restore zarr's config."""
        if self._closed:
            return
        self._closed = True
        try:
            if wait:
                self.flush()
                while self._inflight:
                    self._reap(block=True)
                if self._commits is not None:
                    self._commits.flush(wait=True)  # the flush in flight, then every dirty chunk
        finally:
            for fut, _ in self._inflight:  # not waited for: cancelled (a unit without its record is not done)
                fut.cancel()
            for fut, _ in self._inflight:
                with contextlib.suppress(BaseException):
                    fut.exception()  # wait until the cancellation (or the end) has happened on the loop
            self._inflight.clear()
            self._config.__exit__(None, None, None)

    def _reap(self, block: bool) -> None:
        while self._inflight and (block or self._inflight[0][0].done()):
            fut, n = self._inflight.popleft()
            self._pending -= n
            stored = fut.result()  # raises the batch's StoreError
            if self._commits is None:
                self._done.extend(stored)
                self.stored += len(stored)
            else:
                for item in stored:
                    self._commits.add(*item)
            block = False

    async def _write(self, regions: list, n: int) -> list:
        def count() -> None:
            self.retries += 1

        return await _retrying(self.rs.path, f"write of {n} units", lambda: self._regions.write(regions), count)


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def open_result_store(path: str | os.PathLike, mode: str = "r+", storage_options: dict | None = None) -> ResultStore:
    """Open an existing distntk store (``mode`` ``"r"`` or ``"r+"``), its attributes checked."""
    return ResultStore(*open_store_group(path, mode, storage_options), _storage_options=storage_options)


def open_or_create(path: str | os.PathLike, spec: Spec, predictions: Callable[[], xr.Dataset],
                   storage_options: dict | None = None,
                   command: str = "", redo_interrupted: bool = False, checked: bool = False) -> ResultStore:
    """Open the store for ``spec`` at ``path``, or create it with ``predictions()`` (called only then).

    ``predictions`` is the caller's (the driver solves the limit: ``spec.experiment.predictions``);
    it is called after the location proved writable.  An existing store must come from the
    same canonical spec; otherwise the error names the keys that differ.  ``redo_interrupted``
    (the driver, holding the store's lease): an interrupted creation
    (:func:`_interrupted_creation`) is removed, with one warning line, and created again.
    ``checked``: the caller's :func:`~distntk.store.locations.check_location` has just found no store
    at ``path`` and probed the location (``distntk run`` does, for every store, before it takes the
    lease), so a new store is created without a second probe.
    """
    if redo_interrupted and _interrupted_creation(path, storage_options):
        with storage_errors(path, "remove the interrupted creation of"):
            fs, root = filesystem(path, storage_options)
            fs.rm(root, recursive=True)
        _log.warning("distntk: warning: %s: its creation was interrupted (a Zarr group without distntk attributes "
                     "and without unit data): removed, created again", path)
    if group_exists(path, storage_options):
        store = open_result_store(path, "r+", storage_options)
        if store.attrs["spec_hash"] != spec.hash:
            keys = spec_diff(store.canonical, spec.canonical)
            raise SpecChanged(f"spec differs from the store's in keys: {', '.join(keys) or '(hash only)'} "
                              f"(store {path})", _fresh_location(str(path), spec, storage_options))
        store.rebuild(spec, predictions)
        return store
    if not checked:
        check_writable(path, storage_options)
    return _create(path, spec, predictions(), storage_options, command, SCHEMA)


def _fresh_location(path: str, spec: Spec, storage_options: dict | None = None) -> str:
    """Where ``spec`` can go instead of ``path``: see :class:`SpecChanged`."""
    base = path.rstrip("/")
    stem, zarr_suffix = (base[:-5], ".zarr") if base.endswith(".zarr") else (base, "")
    for n in (8, 12, len(spec.hash)):
        fresh = f"{stem}-{spec.hash[:n]}{zarr_suffix}"
        with contextlib.suppress(StoreError):
            taken = is_local(fresh) and os.path.lexists(local_path(fresh))
            if not taken and not group_exists(fresh, storage_options):
                return fresh
        with contextlib.suppress(StoreError, KeyError):
            if open_result_store(fresh, "r", storage_options).attrs["spec_hash"] == spec.hash:
                return fresh
    return f"{stem}-{spec.hash}-new{zarr_suffix}"


def _interrupted_creation(path, storage_options=None) -> bool:
    """Whether ``path`` holds what :func:`create_store` leaves when killed before its attributes are written.

    That is: a Zarr group whose ``zarr.json`` has no ``spec_hash``/``spec_canonical``, and under it only
    arrays (``<name>/zarr.json``) of which no per-unit array (results, unit records) has a chunk; the
    chunks of coordinates and predictions (recomputed on creation) may be there.  Anything else (a file
    that is not such, a nested group, a unit's data) makes it not ours to remove: ``False``.
    """
    try:
        fs, root = filesystem(path, storage_options)
        meta = json.loads(fs.cat_file(f"{root}/zarr.json"))
        attrs = meta.get("attributes") or {}
        if meta.get("node_type") != "group" or "spec_hash" in attrs or "spec_canonical" in attrs:
            return False
        files = [f[len(root) + 1:] for f in fs.find(root)]
        arrays = set()
        for rel in files:
            parts = rel.split("/")
            if len(parts) == 2 and parts[1] == "zarr.json":
                if json.loads(fs.cat_file(f"{root}/{rel}")).get("node_type") != "array":
                    return False
                arrays.add(parts[0])
        for rel in files:
            parts = rel.split("/")
            if rel in ("zarr.json", PROBE) or (len(parts) == 2 and parts[1] == "zarr.json"):
                continue
            if len(parts) < 2 or parts[0] not in arrays or parts[0] in PER_UNIT or not parts[1].startswith("c"):
                return False
        return True
    except Exception:  # unreadable, not JSON, not there: not recognisably ours
        return False


def create_store(path: str | os.PathLike, spec: Spec, predictions: xr.Dataset, storage_options: dict | None = None,
                 command: str = "", schema: int = SCHEMA) -> ResultStore:
    """Create and pre-allocate the store of ``spec``, with the ``predictions`` the caller solved.

    ``predictions``: :meth:`Experiment.predictions` of ``spec.experiment`` (the store does no
    science).  An existing store is never overwritten.  Two processes creating one store at
    once are kept apart by the lease the driver takes first (:mod:`distntk.lease`), not here.
    ``schema`` 1 makes the layout of stores written by distntk 0.2 and earlier (for tests of old stores).
    """
    if schema not in (1, 2, 3):
        raise StoreError(f"store schema {schema} is not 1, 2 or 3")
    if group_exists(path, storage_options):
        raise StoreError(f"cannot create store at {path}: a store is already there")
    check_writable(path, storage_options)
    return _create(path, spec, predictions, storage_options, command, schema)


def _create(path, spec: Spec, predictions: xr.Dataset, storage_options: dict | None, command: str,
            schema: int) -> ResultStore:
    """:func:`create_store` at a location just found empty and writable."""
    exp = spec.experiment
    with storage_errors(path, "create store at"):
        g = create_group(path, storage_options)
        _allocate(g, exp, predictions, schema)
        attrs = _attrs(spec, exp, predictions, command)
        values = {n: np.asarray(g[n][...]) for n in prediction_names(g.array_keys())}  # as stored
        g.attrs.update({**attrs, "predictions_digest": predictions_digest(values, attrs)})
        if schema >= 2:
            g.attrs["store_schema"] = schema
        g.attrs["store_id"] = uuid.uuid4().hex  # names this store, not its spec: a worker checks it finds this one
    return ResultStore(str(path), g, _storage_options=storage_options)


def _attrs(spec: Spec, exp: Experiment, pred: xr.Dataset, command: str) -> dict:
    now = _now()
    pa = pred.attrs

    def num(v):
        v = float(v)
        return v if math.isfinite(v) else str(v)

    return {
        "title": f"distntk Monte Carlo: {spec.name}",
        "summary": spec.description or "Finite-N RNN outputs on probe windows with their kernel-limit predictions",
        "source": f"distntk {_version('distntk')} (finite-N RNN, online SGD with {exp.model.gradient} "
                  f"gradients, engine '{exp.engine}'; limit by quadrature, docs/model.md sections 2-5)",
        "history": f"{now} created by: {command or 'distntk'}",
        "Conventions": "CF-1.10",
        "created": now,
        "updated": now,
        "name": spec.name,
        "spec": spec.text,
        "spec_hash": spec.hash,
        "spec_canonical": canonical_json(spec.canonical),
        "seed": int(exp.seed),
        "beta": float(exp.model.beta),
        "alpha": float(exp.model.alpha),
        "T": float(exp.T),
        "L": int(exp.L),
        "block": int(exp.replicas.block),
        "engine": exp.engine,
        "memory_bound": num(pa["memory_bound"]),
        "kernel_error": num(pa["kernel_error"]),
        "kernel_method": str(pa.get("kernel_method", "")),
        "kernel_nodes": int(pa.get("kernel_nodes", 0)),
        "kernel_seconds": num(pa.get("kernel_seconds", float("nan"))),
        "kernel_tol": num(pa.get("kernel_tol", float("nan"))),
        "n_histories": int(pa.get("n_histories", 0)),
        "memory_method": str(pa.get("memory_method", "window")),
        **{k: (num(v) if isinstance(v, float) else v) for k, v in pa.items()
           if k.startswith("memory_") and k != "memory_method" and k != "memory_bound"},
        "distntk_version": _version("distntk"),
        "ray_version": _version("ray"),
        "numpy_version": np.__version__,
        "zarr_version": zarr.__version__,
        "xarray_version": xr.__version__,
    }


def _allocate(g: zarr.Group, exp: Experiment, pred: xr.Dataset, schema: int, only: set | None = None) -> None:
    """Create the store's arrays in ``g`` (``only``: just these names, the others left as they are)."""
    W, I, R = len(exp.replicas.widths), exp.replicas.n_init, exp.replicas.n_data
    nt, P, B = len(exp.times), len(exp.probes), exp.replicas.block
    nb = -(-R // B)

    def arr(name, shape, chunks, dtype, fill, data=None, per_unit=False, dims=None):
        if only is not None and name not in only:
            return None
        # every chunk carries a crc32c checksum (after compression): a damaged chunk fails to decode
        # (ValueError) instead of decoding into wrong numbers; stores made before this still open.
        # Schema 2, per-unit arrays: no compression (float64 results hardly compress, and Zstd is CPU
        # the driver pays per chunk) and chunk keys "c.i.j.k"
        # (one directory per array on a local store, not one new directory per unit).
        kw = {"compressors": [ZstdCodec(level=0, checksum=False), Crc32cCodec()]}
        if per_unit and schema >= 2:
            kw = {"compressors": [Crc32cCodec()], "chunk_key_encoding": {"name": "default", "separator": "."}}
        a = g.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                           dimension_names=dims or dimensions(name), attributes=variable_attrs(name), **kw)
        if data is not None:
            a[...] = data
        return a

    arr(VAR.width, (W,), (W,), "int64", 0, np.asarray(exp.replicas.widths, dtype=np.int64))
    arr(VAR.init, (I,), (I,), "int64", 0, np.arange(I, dtype=np.int64))
    arr(VAR.data, (R,), (R,), "int64", 0, np.arange(R, dtype=np.int64))
    arr(VAR.block, (nb,), (nb,), "int64", 0, np.arange(nb, dtype=np.int64))
    arr(VAR.time, (nt,), (nt,), "float64", 0.0, np.asarray(exp.times, dtype=float))
    arr(VAR.probe, (P,), (P,), str, "", np.asarray(exp.probe_labels(), dtype=str))

    arr(VAR.output, (W, I, R, nt, P), (1, 1, B, nt, P), "float64", np.nan, per_unit=True)
    if exp.record_risk:
        arr(VAR.risk, (W, I, R, nt), (1, 1, B, nt), "float64", np.nan, per_unit=True)
    if schema >= 3:  # records in large chunks, rewritten whole by the driver (the only writer of "unit")
        ci = min(I, max(1, -(-_RECORDS_PER_CHUNK // nb)))
        arr(VAR.unit, (W, I, nb), (1, ci, nb), str, "", per_unit=True)
    elif schema == 2:
        arr(VAR.unit, (W, I, nb), (1, 1, 1), str, "", per_unit=True)
    else:
        arr(VAR.done, (W, I, R), (1, 1, B), "bool", False)
        arr(VAR.unit_wall_time, (W, I, nb), (1, 1, 1), "float64", np.nan)
        arr(VAR.unit_node, (W, I, nb), (1, 1, 1), str, "")
        arr(VAR.unit_writes, (W, I, nb), (1, 1, 1), "int64", 0)

    # a sampled (infinite-past) limit also has the Monte Carlo standard error <name>_se of each prediction
    for name in PROBE_PREDICTIONS:
        for nm in (name, se_name(name)):
            if nm == name or nm in pred:
                arr(nm, (nt, P), (nt, P), "float64", np.nan, pred[nm].values)
    for name in TARGET_PREDICTIONS:
        arr(name, (P,), (P,), "float64", np.nan, pred[name].values)
    for name in RISK_PREDICTIONS:
        for nm in (name, se_name(name)):
            if nm == name or nm in pred:
                arr(nm, (nt,), (nt,), "float64", np.nan, pred[nm].values)
    pw = _probe_windows(exp)
    if pw.dtype.kind == "f":
        arr(VAR.probe_window, pw.shape, pw.shape, "float64", np.nan, pw, dims=VALUE_WINDOW_DIMS)
    else:
        arr(VAR.probe_window, pw.shape, pw.shape, "int64", 0, pw)


def _probe_windows(exp: Experiment) -> np.ndarray:
    """The stored ``probe_window``: int64 state windows ``(P, L)``, or an AR(1)'s float64 values ``(P, L, d)``."""
    if getattr(exp, "source", None) is not None:  # a ContinuousExperiment
        return np.asarray(exp.probes, dtype=np.float64).reshape(len(exp.probes), exp.L, -1)
    return np.asarray(exp.probes, dtype=np.int64)
