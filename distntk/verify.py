"""Integrity of a result store: damaged units, outlier flags, predictions; ``distntk verify``.

A unit marked ``done`` is *damaged* when one of its chunks does not decode
(every chunk carries a crc32c checksum, :mod:`distntk.store.writer`; a
store made before that fails Zstd decoding instead), when its outputs or risk
are not finite (a deleted chunk reads as its NaN fill value), or when its
``unit_writes`` is below 1.  :meth:`distntk.store.ResultStore.scan` finds them;
:meth:`~distntk.store.ResultStore.pending` hands them back to ``distntk run``,
which recomputes them from their seeds, bit for bit.

An *outlier flag* marks a done unit whose mean lies far outside the spread the
model expects among the units of its width (docs/model.md#outliers).  For width
``N`` and each (time, probe) cell, with ``m_u`` the mean of unit ``u``'s ``n_u``
replicas (one initialisation, a block of data sequences)::

    z_u = |m_u - median_u m_u| / s,
    s^2 = max( N^{1-2 beta} c_init + vbar / n_u ,  (1.4826 MAD_u m_u)^2 )

``N^{1-2 beta} c_init`` is the predicted between-init variance of a unit mean
(``c_init`` the stored ``var_init_coef``, beta from the hashed canonical spec),
``vbar`` the median over the width's units of the within-unit sample variance
of the replicas (the data noise at a fixed initialisation, robust to a few wild
units), and ``1.4826 MAD`` the robust standard deviation of the unit means
themselves, a floor when the prediction is smaller than what the store shows.
A unit is flagged when ``z_u >`` :data:`OUTLIER_Z` ``= 10`` in any cell, among
at least :data:`OUTLIER_MIN_UNITS` ``= 8`` units (cells with ``s = 0`` are
skipped).  Units of one initialisation share its offset: near beta = 1/2 the
between-init spread dominates and a correct unit whose initialisation has a
large offset lies many MADs from the median while well inside the predicted
spread; the predicted term keeps it unflagged.  A flag is a note, not damage:
the unit stays done, stays in every estimate, and ``distntk verify`` prints it
as a flag with exit 0.  Damage is what the checks above find (checksums,
finite values, write counts); the false-flag rate on clean stores is measured
by ``bench/bench_outliers.py``.

Predictions (``h``, ``nvar_poisson``, ...) must be present and finite, and the
canonical spec in the store's attributes must hash to its ``spec_hash`` (the
catalog's columns and a sweep's resume rely on that pair).

Many stores at once (:func:`open_checked_many`, what a catalog reads): the same
checks on the arrays a summary needs, each array read whole in one call through
zarr's asynchronous API, several stores at once.  Each array's metadata document is
read from its own store; a document byte-identical to one already parsed reuses zarr's
parsed metadata.  Local stores are read through :func:`distntk.store.local_read_store` (files read in
the coroutine, not in a thread) and small Zstd chunks decoded in the coroutine
(:class:`_ZstdInline`): for the small files of a catalog the thread hand-offs cost more
than the reads.  A store with a chunk that does not decode goes through the
unit-by-unit path of :func:`open_checked`, which names the units.  The per-unit bookkeeping is read
only for the write counter (schema 1: ``unit_writes``; schema 2: the ``unit`` records, which also give
``done``), through :func:`_from_records` (:func:`distntk.store.decode_records`) and :func:`_write_counts`.
Which units are done is :func:`distntk.store.done_units`'s answer, here as everywhere.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync as _zarr_sync
from zarr.registry import register_codec

from ._text import one_line
from .experiment import Unit, unit_grid
from .store import (
    DECODE_ERRORS,
    PER_REPLICA,
    PROBE_PREDICTIONS,
    RISK_PREDICTIONS,
    SE_NAMES,
    TARGET_PREDICTIONS,
    VAR,
    StoreError,
    check_array_meta,
    check_attributes,
    check_coords,
    chunk_keys,
    decode_records,
    digest_problem,
    done_replicas,
    done_units,
    is_url,
    location,
    open_group_async,
    open_result_store,
    open_store,
    prediction_names,
    predictions_digest,
    storage_errors,
    undefined_predictions,
    variable_attrs,
)

__all__ = ["verify", "Verification", "open_checked", "open_checked_many", "store_attrs_many", "outliers",
           "init_variance", "damage_warning", "flag_note",
           "OUTLIER_Z", "OUTLIER_MIN_UNITS",
           "PREDICTIONS"]

OUTLIER_Z = 10.0
OUTLIER_MIN_UNITS = 8
_MAD_SCALE = 1.4826
PREDICTIONS = PROBE_PREDICTIONS + TARGET_PREDICTIONS + (VAR.probe_window,)


def _unit_text(u: Unit) -> str:
    return f"width {u.width}, init {u.init}, data {u.data_start}-{u.data_stop - 1}"


def outliers(output: np.ndarray, done: np.ndarray, widths: list[int], block: int, init_var: np.ndarray,
             skip: Iterable[Unit] = ()) -> dict[Unit, str]:
    """Done units flagged as outliers among their width's units (module docstring): flags, not damage.

    ``output (width, init, data, time, probe)``, ``done (width, init, data)``;
    ``init_var (width, time, probe)``: the predicted between-init variance of a
    unit mean, ``N^{1-2 beta} var_init_coef`` (:func:`init_variance`);
    ``skip``: units left out of the comparison (the damaged ones).
    """
    W, I, R = done.shape
    finished = done_units(done, block)
    found = {}
    for wi, N in enumerate(widths):
        units = [u for u in _grid(N, I, R, block) if u not in skip and finished[wi, u.init, u.data_start // block]]
        if len(units) < OUTLIER_MIN_UNITS:
            continue
        z, m, med = _unit_z(output[wi], units, init_var[wi])
        for k, u in enumerate(units):
            if z[k].max() > OUTLIER_Z:
                t, p = np.unravel_index(int(np.argmax(z[k])), z[k].shape)
                found[u] = (f"outlier: unit mean {float(m[k, t, p]):.4g} is {float(z[k, t, p]):.1f} expected "
                            f"standard deviations from the median {float(med[t, p]):.4g} of {len(units)} units "
                            f"(time index {t}, probe index {p}; threshold {OUTLIER_Z:g}; between-init spread "
                            "included; kept in every estimate)")
    return found


def _unit_z(output_w: np.ndarray, units: list[Unit], init_var_w: np.ndarray):
    """``(z, m, median)`` of the module docstring for ``units`` of one width: ``z``, ``m`` ``(unit, time, probe)``.

    ``output_w (init, data, time, probe)``; ``init_var_w (time, probe)``.
    """
    ys = [output_w[u.init, u.data_start:u.data_stop] for u in units]
    m = np.stack([y.mean(axis=0) for y in ys])
    med = np.median(m, axis=0)
    mad = _MAD_SCALE * np.median(np.abs(m - med), axis=0)
    noise = [y.var(axis=0, ddof=1) for y in ys if len(y) > 1]  # a unit of one replica shows no data noise
    vbar = np.median(np.stack(noise), axis=0) if noise else 0.0
    n = np.array([len(y) for y in ys], dtype=float)[:, None, None]
    scale = np.sqrt(np.maximum(np.maximum(init_var_w + vbar / n, mad ** 2), _others_var(m, units)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(scale > 0, np.abs(m - med) / np.where(scale > 0, scale, 1.0), 0.0)
    return z, m, med


def _others_var(m: np.ndarray, units: list[Unit]) -> np.ndarray:
    """``(unit, time, probe)``: the sample variance of the unit means of the *other* initialisations.

    A unit's own initialisation is left out, so neither the unit nor the offset it shares with its
    siblings widens its own scale; with fewer than 3 such means the term is 0.
    """
    inits = np.array([u.init for u in units])
    out = np.zeros_like(m)
    for i in np.unique(inits):
        others = m[inits != i]
        if len(others) >= 3:
            out[inits == i] = others.var(axis=0, ddof=1)
    return out


def init_variance(attrs: dict, var_init_coef: np.ndarray, widths: list[int]) -> np.ndarray:
    """``(width, time, probe)``: the predicted between-init variance ``N^{1-2 beta} var_init_coef``.

    beta comes from the store's canonical spec (hashed, :func:`distntk.store.check_attributes`), not from the
    ``beta`` attribute beside it.
    """
    beta = float(json.loads(attrs["spec_canonical"])["model"]["beta"])
    coef = np.clip(np.asarray(var_init_coef, dtype=float), 0.0, None)
    return np.stack([float(N) ** (1.0 - 2.0 * beta) * coef for N in widths])


def _grid(N, I, R, block):
    return unit_grid([N], I, R, block)


def _prediction_problems(values: dict, undefined: tuple = ()) -> list[str]:
    """Missing, undecodable or non-finite predictions; ``values``: name -> array, exception, or None if absent;
    ``undefined``: names that are NaN by definition (an AR(1) store's ``pi_probe``), a problem when not NaN."""
    preds = []
    for name, v in values.items():
        if v is None:
            preds.append(f"predictions: {name!r} is missing")
        elif isinstance(v, Exception):
            preds.append(f"predictions: {name!r} does not decode ({one_line(v, 80)})")
        elif name in undefined:
            if not np.isnan(np.asarray(v, dtype=float)).all():
                preds.append(f"predictions: {name!r} has values where the store's spec defines none (edited?)")
        elif v.dtype.kind == "f" and not np.isfinite(v).all():
            preds.append(f"predictions: {name!r} has non-finite values (a missing chunk?)")
    return preds


def _problems(path, storage_options=None):
    """``(store, arrays, damaged units {Unit: why}, flagged units {Unit: why}, prediction problems [str])``."""
    rs = open_result_store(path, mode="r", storage_options=storage_options)
    missing = [n for n in rs.missing_arrays() if n not in PREDICTIONS + RISK_PREDICTIONS]
    _refuse_missing(rs.path, [n for n in missing if n != VAR.risk])
    arrays, damaged = rs.scan()
    if missing:  # the risk array: every done unit lost its risk
        lost = "array 'risk' is missing (the spec records the risk)"
        finished = done_units(arrays[VAR.done], rs.block)
        regions = ((u, rs.region(u)) for u in rs.all_units())
        damaged = {u: lost for u, (wi, i, _, b) in regions if finished[wi, i, b]} | dict(damaged)
    names = PREDICTIONS + (RISK_PREDICTIONS if _records_risk(rs.canonical) else ())
    present = prediction_names(rs.group.array_keys())
    values = {}
    for name in dict.fromkeys(names + tuple(present)):
        if name not in rs.group:
            values[name] = None
            continue
        arr = rs.array(name)  # its metadata checked: an edited layout is a StoreError, not a decode error
        try:
            values[name] = np.asarray(arr[...])
        except DECODE_ERRORS as exc:
            values[name] = exc
    preds = _prediction_problems({n: values[n] for n in names}, undefined_predictions(rs.canonical)) or \
        _predictions_digest_problem(rs.attrs, values)
    flags = {} if preds else _flags(arrays[VAR.output], arrays[VAR.done], rs.widths, rs.block, rs.attrs,
                                    values[VAR.var_init_coef], damaged)
    return rs, arrays, dict(damaged), flags, preds


def _predictions_digest_problem(attrs: dict, values: dict) -> list[str]:
    """``[line]`` when the predictions present (``values``) or the solver's attributes do not match the store's
    ``predictions_digest`` (a store made before the digest has none: not checked)."""
    want = attrs.get("predictions_digest")
    got = {n: v for n, v in values.items() if v is not None and not isinstance(v, Exception)}
    if want and predictions_digest(got, attrs) != want:
        return ["predictions: the predictions or the limit solver's attributes do not match the digest written "
                "when the store was created (edited?)"]
    return []


def _records_risk(canonical: dict) -> bool:
    return bool(canonical.get("training", {}).get("record_risk", True))


def _refuse_missing(path, missing: list) -> None:
    """Arrays without which no unit can be judged (coordinates, outputs, records): one-line damage."""
    if missing:
        raise StoreError(f"{path}: array(s) {', '.join(map(repr, missing))} missing (deleted?); rerun distntk run "
                         "with the same spec and --store to rebuild them and recompute what they held")


def _flags(output, done, widths, block, attrs, var_init_coef, damaged) -> dict:
    """:func:`outliers` with the predicted between-init variance of the store, in store order."""
    found = outliers(output, done.astype(bool), widths, block, init_variance(attrs, var_init_coef, widths),
                     skip=damaged)
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: ``problems`` (damage: ``distntk verify`` exits 1) and ``flags`` (notes).

    ``problems``: damaged units as ``width N, init i, data a-b: what``, in store
    order, then missing or damaged predictions.  ``flags``: outlier flags, same
    form; flagged units are kept in every estimate (module docstring).
    """

    problems: tuple[str, ...]
    flags: tuple[str, ...]


def verify(path: str | os.PathLike, storage_options: dict | None = None) -> Verification:
    """Everything wrong with the store at ``path`` (``problems``), and its outlier flags, one line each."""
    _, _, bad, flags, preds = _problems(path, storage_options)
    return Verification(tuple(f"{_unit_text(u)}: {why}" for u, why in sorted(bad.items())) + tuple(preds),
                        tuple(f"{_unit_text(u)}: {why}" for u, why in flags.items()))


def _named(units) -> str:
    units = sorted(units)
    return "; ".join(_unit_text(u) for u in units[:5]) + (f"; and {len(units) - 5} more" if len(units) > 5 else "")


def damage_warning(bad: dict) -> str:
    """One line naming the damaged units (the first few, then a count)."""
    return one_line(f"{len(bad)} damaged unit(s) left out (run `distntk verify` for details, `distntk run "
                    f"--check` to recompute them): {_named(bad)}", 600)


def flag_note(flags: dict) -> str:
    """One line naming the units flagged as outliers (kept; not damage)."""
    return one_line(f"{len(flags)} unit(s) flagged as outliers and kept in every estimate (far from their width's "
                    f"other units even allowing for the predicted between-init spread; `distntk verify` says "
                    f"how far): {_named(flags)}", 600)


def open_checked(path: str | os.PathLike, storage_options: dict | None = None) -> tuple[xr.Dataset, dict]:
    """The store as an in-memory Dataset with its damaged units left out (not done).

    Returns ``(ds, bad)``, ``bad`` mapping each left-out unit to the reason;
    when there are any, ``ds.attrs["distntk_left_out"]`` holds :func:`damage_warning`.
    Units flagged as outliers stay in; ``ds.attrs["distntk_flagged"]`` holds
    :func:`flag_note` when there are any.
    Missing or damaged predictions are a :class:`~distntk.store.StoreError`
    (one line): without them there is nothing to compare with.
    """
    rs, arrays, bad, flags, preds = _problems(path, storage_options)
    if preds:
        raise StoreError(f"{path} lost its predictions: {preds[0].removeprefix('predictions: ')}; the store "
                         "cannot be compared with the limit (recreate it with distntk run)")
    ds = open_store(path, storage_options)
    widths = rs.widths
    replaced = {VAR.done: arrays[VAR.done].astype(bool), VAR.unit_writes: arrays[VAR.unit_writes]}
    for name in PER_REPLICA:
        if name in arrays:
            replaced[name] = arrays[name].copy()
    _leave_out(replaced, bad, widths)
    out = {}
    for name, var in ds.data_vars.items():
        if name in replaced:
            out[name] = (var.dims, replaced[name], var.attrs)
        else:
            try:
                out[name] = var.load()
            except (ValueError, RuntimeError) as exc:
                raise StoreError(f"{path}: variable {name!r} does not decode ({one_line(exc, 80)})") from None
    attrs = dict(ds.attrs)
    if bad:
        attrs["distntk_left_out"] = damage_warning(bad)
    if flags:
        attrs["distntk_flagged"] = flag_note(flags)
    loaded = xr.Dataset(out, coords={k: c.load() for k, c in ds.coords.items()}, attrs=attrs)
    return loaded, bad


# --------------------------------------------------------------------------- many stores at once

_COORDS = (VAR.width, VAR.init, VAR.data, VAR.time, VAR.probe)
_PER_REPLICA = PER_REPLICA + (VAR.done,)
# stores whose arrays are in flight at once: on local disk more only adds event-loop overhead (measured:
# CPU per store grows from 1 to 32 stores in flight); on object storage latency, not CPU, is the cost
_CONCURRENT_STORES = {"local": 4, "url": 32}
_BATCH = 256  # stores read before they are checked (bounds the memory of a large catalog)
# the per-unit bookkeeping and its coordinate: checked (the write counter), not part of a summary's Dataset
_NOT_SUMMARISED = (VAR.block, VAR.unit_wall_time, VAR.unit_node, VAR.unit_writes, VAR.unit)
_CHUNKS_PER_BATCH = 64  # chunks zarr decodes per batch: fewer tasks per chunk than its default of 1


def _leave_out(replaced: dict, bad: dict, widths: list) -> None:
    """Mark the ``bad`` units in ``replaced`` as left out: not done, and NaN like a unit never written."""
    for u in bad:
        where = (widths.index(u.width), u.init, slice(u.data_start, u.data_stop))
        replaced[VAR.done][where] = False
        for name in PER_REPLICA:
            if name in replaced:
                replaced[name][where] = np.nan


def _bookkeeping_names() -> tuple[str, ...]:
    """The per-unit bookkeeping arrays the checks read: the write counter (schema 1) or the ``unit`` records
    (schema 2, which also hold ``done``); a store has one of the two (see :func:`_write_counts`)."""
    return (VAR.unit_writes, VAR.unit)


def _from_records(got: dict, attrs: dict) -> bool:
    """Schema 2: ``done`` and ``unit_writes`` decoded from the ``unit`` records into ``got`` (as if read);
    ``False`` when a record chunk does not decode or a record does not parse (then the store is read unit by
    unit, which names those units)."""
    meta, recs = got.get(VAR.unit, (None, None))
    if recs is None:
        return True
    out = got.get(VAR.output, (None, None))[1]
    if isinstance(recs, Exception) or out is None or isinstance(out, Exception):
        return False
    fields, unparsable = decode_records(recs)
    if unparsable:
        return False
    done = done_replicas(fields[VAR.done], int(attrs["block"]), out.shape[2])
    got[VAR.done] = (SimpleNamespace(dimension_names=(VAR.width, VAR.init, VAR.data),
                                     attributes=variable_attrs(VAR.done)), done)
    got[VAR.unit_writes] = (meta, fields[VAR.unit_writes])
    got["unit_digest"] = (None, fields["unit_digest"])
    return True


def _write_counts(values: dict) -> np.ndarray:
    """The per-unit write counters ``(width, init, block)`` from the arrays read.

    The one place the fast path knows where the counters live, so a change of the
    bookkeeping layout touches this function and :func:`_bookkeeping_names` only.
    """
    return np.asarray(values[VAR.unit_writes], dtype=np.int64)


def _unit_damage(values: dict, units: list, widths: list, block: int) -> dict:
    """Done units whose data are not finite, whose write count is below 1 or whose chunks do not match their
    record's digests (as ``ResultStore.scan`` judges)."""
    output, risk = values[VAR.output], values.get(VAR.risk)
    done = done_units(values[VAR.done], block)
    writes = _write_counts(values)
    digests = values.get("unit_digest")
    arrays = [n for n in PER_REPLICA if values.get(n) is not None]
    bad = {}
    for u in units:
        wi, sl = widths.index(u.width), slice(u.data_start, u.data_stop)
        if not done[wi, u.init, u.data_start // block]:
            continue
        if not np.isfinite(output[wi, u.init, sl]).all():
            bad[u] = "marked done but output has non-finite values (a missing chunk?)"
        elif risk is not None and not np.isfinite(risk[wi, u.init, sl]).all():
            bad[u] = "marked done but risk has non-finite values (a missing chunk?)"
        elif writes[wi, u.init, u.data_start // block] < 1:
            bad[u] = f"marked done but unit_writes is {int(writes[wi, u.init, u.data_start // block])}"
        elif digests is not None and (why := digest_problem(digests[wi, u.init, u.data_start // block], {
                name: (key, values[name][wi, u.init, sl])
                for name, key in chunk_keys(arrays, wi, u.init, u.data_start // block).items()})):
            bad[u] = why
    return bad


class _ZstdInline(ZstdCodec):
    """zarr's Zstd codec, decoding a small chunk in the calling coroutine.

    ``ZstdCodec`` hands every decode to a thread (``asyncio.to_thread``); for the small chunks
    of a catalog's stores the hand-off costs more than the decode.  Chunks above
    :data:`_INLINE_BYTES` still go to a thread.  Selected through zarr's codec configuration
    (``codecs.zstd``) while :func:`open_checked_many` parses metadata; everywhere else zarr
    uses its own class.
    """

    async def _decode_single(self, chunk_bytes, chunk_spec):
        if len(chunk_bytes) <= _INLINE_BYTES:
            return self._decode_sync(chunk_bytes, chunk_spec)
        return await super()._decode_single(chunk_bytes, chunk_spec)


_INLINE_BYTES = 1 << 16
register_codec("zstd", _ZstdInline, qualname=f"{__name__}._ZstdInline")


async def _open_group(path: str, storage_options: dict | None, local_reads: bool = False):
    """``(group, attrs)`` of the distntk store at ``path`` (zarr's asynchronous API; errors as open_result_store).

    ``local_reads``: a local path is read through :func:`distntk.store.local_read_store`.
    """
    g = await open_group_async(path, storage_options, local_reads=local_reads)
    if g is None:
        raise StoreError(f"no distntk store at {path}")
    attrs = dict(g.attrs)
    if "spec_hash" not in attrs or "spec_canonical" not in attrs:
        raise StoreError(f"{path} is a Zarr group without distntk attributes (not a distntk store, or its "
                         "creation was interrupted: remove it to start over)")
    return g, attrs


async def _read_array(path: str, g, name: str, parsed: dict):
    """``(metadata, values | decode error)`` of array ``name`` of group ``g``, or ``(None, None)`` if absent.

    The array's own ``zarr.json`` is read every time; ``parsed`` maps the exact bytes of a
    metadata document to zarr's parsed :class:`ArrayV3Metadata`, so identical documents (the
    same array in the stores of a sweep) are parsed once.  Equal bytes are equal metadata:
    nothing a store says is taken from another store.
    """
    where = g.store_path / name
    buf = await (where / "zarr.json").get(prototype=default_buffer_prototype())
    if buf is None:
        return None, None
    raw = buf.to_bytes()
    meta = parsed.get(raw)
    if meta is None:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("node_type") != "array":
                raise ValueError("not the metadata of an array")
            meta = ArrayV3Metadata.from_dict(doc)
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"{path}: the metadata of {name!r} do not parse ({one_line(exc, 80)})") from None
        parsed[raw] = meta
    check_array_meta(path, name, meta)
    try:
        return meta, np.asarray(await zarr.AsyncArray(meta, store_path=where).getitem(...))
    except DECODE_ERRORS as exc:
        return meta, exc


async def _read_store(path: str, storage_options: dict | None, parsed: dict | None = None):
    """``(group attrs, {name: (metadata, values | decode error | None if absent)})``.

    On object storage all reads of the store are in flight at once (latency is the cost);
    on local disk they run one after another (a local read does not wait, and tasks only
    add event-loop work), through :func:`distntk.store.local_read_store`.
    """
    parsed = {} if parsed is None else parsed
    local = not is_url(path)
    g, attrs = await _open_group(path, storage_options, local_reads=local)
    names = _COORDS + _PER_REPLICA + _bookkeeping_names() + PREDICTIONS + RISK_PREDICTIONS + SE_NAMES
    with storage_errors(path, "read store"):  # a transport error, or metadata that do not parse: this store only
        if local:
            got = [await _read_array(path, g, n, parsed) for n in names]
        else:
            got = await asyncio.gather(*(_read_array(path, g, n, parsed) for n in names))
    return attrs, dict(zip(names, got, strict=True))


async def _each(paths: list, read, storage_options: dict | None) -> list:
    """``read(path, storage_options)`` for every path, a few at once; a StoreError is returned, not raised."""
    gate = asyncio.Semaphore(_CONCURRENT_STORES["url" if any(is_url(p) for p in paths) else "local"])

    async def one(path):
        async with gate:
            try:
                return await read(path, storage_options)
            except StoreError as exc:
                return exc

    return await asyncio.gather(*(one(p) for p in paths))


async def _attrs_checked(path: str, storage_options: dict | None) -> dict:
    attrs = (await _open_group(path, storage_options, local_reads=True))[1]
    check_attributes(path, attrs)
    return attrs


def store_attrs_many(paths: Iterable[str | os.PathLike],
                     storage_options: dict | None = None) -> list[dict | StoreError]:
    """The attributes of each distntk store of ``paths`` (one small read each, all at once), or its StoreError.

    The spec hash is checked: a store whose canonical spec does not hash to its
    ``spec_hash`` is a StoreError, so its spec keys are never trusted.
    """
    return _zarr_sync(_each([location(p) for p in paths], _attrs_checked, storage_options))


def _checked_from(path: str, attrs: dict, got: dict) -> tuple[xr.Dataset, dict] | None:
    """:func:`open_checked` on arrays already read; ``None`` when a per-unit chunk does not decode."""
    if not _from_records(got, attrs):
        return None  # read unit by unit (ResultStore.scan): the units whose records are unreadable are named
    values = {n: v for n, (_, v) in got.items()}
    for name in (VAR.output, VAR.done, VAR.unit_writes):
        if values.get(name) is None:
            raise StoreError(f"{path}: the store has no array {name!r}; expected a store written by distntk run")
    if any(isinstance(values[n], Exception) for n in PER_REPLICA + (VAR.done, VAR.unit_writes)):
        return None  # read unit by unit (ResultStore.scan): the units of the chunks that do not decode are named
    for name in _COORDS:
        if values[name] is None or isinstance(values[name], Exception):
            why = "is missing" if values[name] is None else f"does not decode ({one_line(values[name], 80)})"
            raise StoreError(f"{path}: variable {name!r} {why}")
    canonical = check_attributes(path, attrs)
    check_coords(path, canonical, {n: values[n] for n in _COORDS + (VAR.probe_window,)})
    has_risk = _records_risk(canonical)
    _refuse_missing(path, [VAR.risk] if has_risk and values[VAR.risk] is None else [])
    preds = _prediction_problems({n: values[n] for n in PREDICTIONS + (RISK_PREDICTIONS if has_risk else ())},
                                 undefined_predictions(canonical)) or \
        _predictions_digest_problem(attrs, {n: values[n] for n in prediction_names(values)})
    if preds:
        raise StoreError(f"{path} lost its predictions: {preds[0].removeprefix('predictions: ')}; the store "
                         "cannot be compared with the limit (recreate it with distntk run)")
    widths = [int(w) for w in values[VAR.width]]
    block = int(attrs["block"])
    done = values[VAR.done].astype(bool)
    units = unit_grid(widths, done.shape[1], done.shape[2], block)
    bad = _unit_damage(values, units, widths, block)
    bad = {u: bad[u] for u in units if u in bad}  # store order, as scan gives it
    flags = _flags(values[VAR.output], done, widths, block, attrs, values[VAR.var_init_coef], bad)
    replaced = {VAR.done: done.copy()}
    for name in PER_REPLICA:
        if has_risk or name == VAR.output:
            replaced[name] = values[name].copy()
    _leave_out(replaced, bad, widths)
    data, coords = {}, {}
    for name, (meta, v) in got.items():
        if v is None or name in _bookkeeping_names() or name in (VAR.unit_writes, "unit_digest"):
            continue
        var = xr.Variable(tuple(meta.dimension_names), replaced.get(name, v), variable_attrs(name))
        (coords if name in _COORDS else data)[name] = var
    out_attrs = dict(attrs)
    if bad:
        out_attrs["distntk_left_out"] = damage_warning(bad)
    if flags:
        out_attrs["distntk_flagged"] = flag_note(flags)
    return xr.Dataset(data, coords=coords, attrs=out_attrs), bad


def _reading():
    """zarr's configuration while :func:`open_checked_many` reads: chunks decoded in batches, small Zstd
    chunks in the coroutine (:class:`_ZstdInline`)."""
    return zarr.config.set({"codec_pipeline.batch_size": _CHUNKS_PER_BATCH, "codecs.zstd": f"{__name__}._ZstdInline"})


def open_checked_many(paths: Iterable[str | os.PathLike],
                      storage_options: dict | None = None) -> list[tuple[xr.Dataset, dict] | StoreError]:
    """:func:`open_checked` for many stores at once: ``(ds, bad)``, or the :class:`StoreError` of each.

    The same checks (distntk attributes, spec hash, chunk checksums, non-finite
    values, write counts, outliers, predictions) on the arrays a summary needs:
    coordinates, ``output``, ``risk``, ``done`` and the predictions, with the
    write counter for the checks; the bookkeeping arrays are not in ``ds``.
    Every array of several stores (4 on local disk, 32 on object storage) is read at once by zarr's
    asynchronous API,
    each array whole in one call.  A store with a chunk that does not decode
    is read again unit by unit (:func:`open_checked`), so its damaged units are
    named exactly as ``distntk verify`` names them.
    """
    paths = [location(p) for p in paths]
    out = []
    for k in range(0, len(paths), _BATCH):
        part = paths[k:k + _BATCH]
        parsed = {}  # metadata documents parsed in this batch, by their bytes (_read_array)
        with _reading():
            raws = _zarr_sync(_each(part, functools.partial(_read_store, parsed=parsed), storage_options))
        for path, raw in zip(part, raws, strict=True):
            try:
                if isinstance(raw, StoreError):
                    raise raw
                res = _checked_from(path, *raw)
                if res is None:  # the same variables as the whole-array path
                    ds, bad = open_checked(path, storage_options)
                    res = ds.drop_vars(_NOT_SUMMARISED, errors="ignore"), bad
                out.append(res)
            except StoreError as exc:
                out.append(exc)
    return out
