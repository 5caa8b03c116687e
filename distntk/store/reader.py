"""Reading a store: :func:`open_store` (an :class:`xarray.Dataset`), :class:`StoreReader` (the read side of
:class:`~distntk.store.writer.ResultStore`: resume plans, scans for damage), the unit records, and the spec a
store was made from (:func:`store_spec`, :func:`store_model`).

Every read goes through :func:`open_store_group`: the location opened by :mod:`distntk.store.locations`,
its attributes checked (:func:`distntk.store.schema.check_attributes`); every array's metadata are checked
against distntk's layout before its values are used (:func:`distntk.store.schema.check_array_meta`).
The arrays are read raw, as distntk wrote them.  Schemas 2 and 3 hold one JSON record per unit in ``unit``;
:func:`open_store` presents the records as the variables ``done`` (width, init, data), ``unit_wall_time``,
``unit_node`` and ``unit_writes`` (width, init, block), as schema 1 holds them (arrays of their own).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr
import zarr
from xarray.backends import BackendArray
from xarray.core import indexing
from zarr.core.sync import sync as _zarr_sync

from .._text import one_line
from ..experiment import Unit, unit_grid
from ..spec import Spec, SpecError, parse_spec, spec_hash
from .locations import StoreError, location, not_found, open_group, storage_errors
from .schema import (
    COORDS,
    DECODE_ERRORS,
    RECORD_FIELDS,
    VAR,
    check_array_meta,
    check_attributes,
    check_coords,
    chunk_keys,
    decode_records,
    digest_problem,
    done_replicas,
    done_units,
    in_layout,
    is_ar1,
    prediction_names,
    predictions_digest,
    required_arrays,
    undefined_predictions,
    variable_attrs,
)

if TYPE_CHECKING:
    from ..chain import MarkovChain
    from ..rnn import RNNConfig

__all__ = ["open_store", "open_store_group", "StoreReader", "store_spec", "store_model", "NOT_FOUND"]

NOT_FOUND = not_found()  # what zarr raises where no group is


def open_store_group(path: str | os.PathLike, mode: str = "r",
                     storage_options: dict | None = None) -> tuple[str, zarr.Group]:
    """``(location, group)`` of the distntk store at ``path`` (``mode`` ``"r"`` or ``"r+"``), its attributes
    checked; a one-line :class:`StoreError` when there is none, or the group is not a distntk store's."""
    path = location(path)
    g = open_group(path, mode, storage_options)
    if g is None:
        raise StoreError(f"no distntk store at {path}")
    if "spec_hash" not in g.attrs or "spec_canonical" not in g.attrs:
        raise StoreError(f"{path} is a Zarr group without distntk attributes (not a distntk store, or its "
                         "creation was interrupted: remove it to start over)")
    check_attributes(path, dict(g.attrs))
    return str(path), g


def open_store(path: str | os.PathLike, storage_options: dict | None = None) -> xr.Dataset:
    """The store at ``path`` as a lazily loaded :class:`xarray.Dataset`.

    The arrays are read raw, as distntk wrote them: their metadata must be distntk's layout (dtype,
    fill value, codecs, dimensions), their attributes are distntk's own (``long_name``, ``units``),
    not what the store says, so no CF attribute (``scale_factor``, ``_FillValue``, time units)
    changes a number; arrays distntk does not write are not in the Dataset.  The unit records are
    presented as ``done``, ``unit_wall_time``, ``unit_node`` and ``unit_writes`` whatever the store's
    schema (docs/reference/store.md).

    Parameters
    ----------
    path : str or os.PathLike
        A local path (``~`` expanded, ``file://`` accepted) or an fsspec URL (``s3://``, ``gs://``,
        ``memory://``).
    storage_options : dict or None, optional
        Options of the fsspec backend of a URL (``endpoint_url``, ``key``, ...); not for a local
        path.  Without them the backend reads its standard environment.

    Returns
    -------
    xarray.Dataset
        The coordinates, ``output``, ``risk``, the predictions and the unit records, loaded on use;
        the attributes are the store's (the spec, its hash, the versions, the history).

    Raises
    ------
    StoreError
        If there is no distntk store at ``path``, it cannot be read, or its metadata or attributes
        are not what distntk writes (one line).
    """
    rs = StoreReader(*open_store_group(path, "r", storage_options), _storage_options=storage_options)
    with storage_errors(path, "read store"):
        arrays = dict(rs.group.arrays())
    coords, data = {}, {}
    for name in sorted(arrays):
        if not in_layout(name) or (name == VAR.unit and rs.schema >= 2):
            continue
        arr = arrays[name]
        check_array_meta(rs.path, name, arr.metadata)
        var = xr.Variable(tuple(arr.metadata.dimension_names), indexing.LazilyIndexedArray(_ZarrField(arr)),
                          variable_attrs(name))
        if name in COORDS:
            with storage_errors(path, "read store"):
                coords[name] = var.load()
        else:
            data[name] = var
    check_coords(rs.path, rs.canonical, {k: v.values for k, v in coords.items()} |
                  ({VAR.probe_window: data[VAR.probe_window].values} if VAR.probe_window in data else {}))
    ds = xr.Dataset(data, coords=coords, attrs=rs.attrs)
    if rs.schema < 2:
        return ds
    records = _Records(rs)  # read when one of the four is first loaded, once for all four
    dims = {VAR.done: (VAR.width, VAR.init, VAR.data)}
    return ds.assign({name: xr.Variable(dims.get(name, (VAR.width, VAR.init, VAR.block)),
                                        indexing.LazilyIndexedArray(_RecordField(records, name)), variable_attrs(name))
                      for name in RECORD_FIELDS})


class _ZarrField(BackendArray):
    """A zarr array as a lazily indexed array (xarray's backend protocol), read raw."""

    def __init__(self, arr: zarr.Array):
        self.arr, self.shape, self.dtype = arr, tuple(arr.shape), arr.metadata.dtype.to_native_dtype()

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC,
                                                  lambda k: np.asarray(self.arr[k]))


class _Records:
    """The ``unit`` records of a schema-2 store, decoded on first use (an undecodable one reads as not done)."""

    def __init__(self, rs: StoreReader):
        self.rs, self._fields = rs, None
        W, I, R = rs.array(VAR.output).shape[:3]
        nb = rs.array(VAR.unit).shape[2]
        self.shapes = {VAR.done: (W, I, R), VAR.unit_wall_time: (W, I, nb), VAR.unit_node: (W, I, nb),
                       VAR.unit_writes: (W, I, nb)}
        self.dtypes = {VAR.done: np.dtype(bool), VAR.unit_wall_time: np.dtype(np.float64),
                       VAR.unit_node: rs.array(VAR.unit).dtype, VAR.unit_writes: np.dtype(np.int64)}

    def field(self, name: str) -> np.ndarray:
        if self._fields is None:
            self._fields = self.rs.unit_fields(self.rs.all_units())[0]
        return self._fields[name]


class _RecordField(BackendArray):
    """One field of the records as a lazily indexed array (xarray's backend protocol)."""

    def __init__(self, records: _Records, name: str):
        self.records, self.name = records, name
        self.shape, self.dtype = records.shapes[name], records.dtypes[name]

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC,
                                                  lambda k: self.records.field(self.name)[k])


def store_spec(ds: xr.Dataset) -> Spec:
    """The :class:`~distntk.spec.Spec` a store was made from, rebuilt from its ``spec`` attribute.

    The experiment it carries recomputes anything the store does not hold (the
    limit, the predictions).  The rebuilt spec must hash to the store's
    ``spec_hash``: a spec that resolves differently now (e.g. other defaults in
    another distntk version) would describe another experiment.  A store is
    data: a ``module:function`` target named in it is never imported (that
    would run code a store brought along), so a store with a code target is
    refused here; :func:`store_model` rebuilds its chain and model all the same.
    """
    a = ds.attrs
    name = one_line(a.get("name") or "store", 80)
    if not a.get("spec") or not a.get("spec_hash"):
        raise StoreError(f"store {name!r} has no spec attributes; expected a store written by distntk run")
    try:
        spec = parse_spec(str(a["spec"]), default_name=name, source=f"spec of store {name!r}", allow_code=False)
    except SpecError as exc:
        raise StoreError(f"the spec stored in {name!r} no longer parses: {one_line(exc)}") from None
    if spec.hash != a["spec_hash"]:
        raise StoreError(f"the spec stored in {name!r} now hashes to {spec.hash[:12]}, not the store's "
                         f"{str(a['spec_hash'])[:12]} (made by distntk {a.get('distntk_version', '?')})")
    return spec


def store_model(ds: xr.Dataset) -> tuple[RNNConfig, MarkovChain, int]:
    """``(RNNConfig, MarkovChain, seed)`` of a store, rebuilt from its canonical spec (data only).

    What :func:`distntk.rnn.memory_contraction` needs: the chain (an AR(1) store's: its 2-state
    Rouwenhorst chain, the ``spec.experiment.chain`` that chose ``L``) and the model,
    never the target, so no code named in the store is imported.  The canonical
    JSON must hash to the store's ``spec_hash``.
    """
    from ..chain import ChainError, markov_chain
    from ..rnn import ModelError, RNNConfig

    a = ds.attrs
    name = one_line(a.get("name") or "store", 80)
    text, want = a.get("spec_canonical"), a.get("spec_hash")
    if not text or not want:
        raise StoreError(f"store {name!r} has no spec attributes; expected a store written by distntk run")
    try:
        canonical = json.loads(str(text))
        if spec_hash(canonical) != want:
            raise StoreError(f"the canonical spec stored in {name!r} does not hash to the store's "
                             f"{str(want)[:12]}")
        if canonical["chain"].get("kind") == "sampler":  # its stand-in chain comes from running its code
            raise StoreError(f"the chain of {name!r} is a sampler (code, chain.sampler), which a store never runs")
        if is_ar1(canonical):  # the experiment's chain: the 2-state Rouwenhorst chain of the AR(1)
            from ..ar1 import ar1, reference_chain

            chain = reference_chain(ar1(canonical["chain"]["phi"], canonical["chain"]["sigma"]), 2)
        else:
            chain = markov_chain(canonical["chain"]["transition"], canonical["chain"]["inputs"])
        cfg = RNNConfig(**canonical["model"])
        seed = int(canonical["seed"])
    except StoreError:
        raise
    except (ValueError, KeyError, TypeError, ChainError, ModelError) as exc:
        raise StoreError(f"the canonical spec stored in {name!r} cannot be read: {one_line(exc)}") from None
    return cfg, chain, seed


@dataclass(eq=False)
class StoreReader:
    """A distntk store opened, its read side: arrays checked on first use, unit records, resume plans, scans.

    :class:`~distntk.store.writer.ResultStore` (what :func:`~distntk.store.open_result_store` and
    :func:`~distntk.store.open_or_create` return) adds the writes.
    """

    path: str
    group: zarr.Group
    _arrays: dict = field(default_factory=dict, repr=False)
    _writes: np.ndarray | None = field(default=None, repr=False)  # the write counters, once read (the writer's)
    _widths: list | None = field(default=None, repr=False)
    _storage_options: dict | None = field(default=None, repr=False)
    _data_rebuilt: bool = field(default=False, repr=False)  # an empty output/risk recreated: check every unit

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def canonical(self) -> dict:
        return json.loads(self.group.attrs["spec_canonical"])

    def array(self, name: str) -> zarr.Array:
        """Array ``name``, its metadata checked against distntk's layout (once per opened store)."""
        if name not in self._arrays:
            arr = self.group[name]
            check_array_meta(self.path, name, arr.metadata)
            self._arrays[name] = arr
        return self._arrays[name]

    @property
    def widths(self) -> list[int]:
        if self._widths is None:  # a coordinate, fixed at creation: read once, not once per unit
            with storage_errors(self.path, "read store"):
                widths = self.array("width")[:]
            check_coords(self.path, self.canonical, {"width": widths})
            self._widths = [int(w) for w in widths]
        return list(self._widths)

    @property
    def block(self) -> int:
        return int(self.group.attrs["block"])

    @property
    def schema(self) -> int:
        """The store's layout: 2 (one ``unit`` record per unit), or 1 for stores made by distntk 0.2 and earlier."""
        return int(self.group.attrs.get("store_schema", 1))

    def region(self, unit: Unit):
        """``(width index, init, data slice, block index)`` of ``unit`` in this store's arrays."""
        try:
            wi = self.widths.index(unit.width)
        except ValueError:
            raise StoreError(f"{self.path}: width {unit.width} is not in the store's widths {self.widths}") from None
        return wi, unit.init, slice(unit.data_start, unit.data_stop), unit.data_start // self.block

    def done_mask(self) -> np.ndarray:
        """``done`` as a NumPy array ``(width, init, data)``."""
        if self.schema >= 2:
            return self.unit_fields(self.all_units())[0][VAR.done]
        with storage_errors(self.path, "read store"):
            return np.asarray(self.array(VAR.done)[:], dtype=bool)

    def pending(self, units: Iterable[Unit], check: bool = False) -> list[Unit]:
        """The units among ``units`` to compute: those without a (readable) record; with ``check``, also
        those whose chunks are damaged (:meth:`scan`: undecodable, not finite, not matching their digests).

        Without ``check`` only the records are read (schema 3: one read per 1,024 units), so a resume of a
        large store starts in seconds; ``check`` reads every done unit's chunks too, and a damaged unit is
        recomputed from its seeds: ``distntk run --check`` repairs a store bit for bit.
        """
        units = list(units)
        if check or self._data_rebuilt:  # a recreated data array holds nothing its records claim
            arrays, damaged = self.scan(units)
        else:
            damaged = {}
            if self.schema >= 2:
                fields = self.unit_fields(units)[0]
                arrays = {name: fields[name] for name in (VAR.done, VAR.unit_writes)}
            else:
                arrays = {name: self._read(name, units)[0] for name in (VAR.done, VAR.unit_writes)}
        if self._writes is None:  # the write counters as read chunk-safe: a damaged counter chunk restarts at 0
            self._writes = np.asarray(arrays[VAR.unit_writes], dtype=np.int64)
        done = done_units(arrays[VAR.done], self.block)
        out = []
        for u in units:
            wi, i, _, b = self.region(u)
            if not done[wi, i, b] or u in damaged:
                out.append(u)
        return out

    def _read(self, name: str, units, only: list | None = None) -> tuple[np.ndarray, set]:
        """Array ``name`` read whole, or unit by unit when a chunk does not decode; ``(values, bad units)``.

        ``only``: read just these units' chunks (all in flight at once), the rest left at the fill value:
        nothing at all for a new store, whose units have no record yet."""
        a = self.array(name)
        with storage_errors(self.path, "read store"):
            if only is not None:
                out = np.full(a.shape, a.fill_value, dtype=a.dtype)
                regions = [self.region(u)[:3] for u in only]
                try:
                    got = _zarr_sync(_gather_reads(a.async_array, regions))
                except DECODE_ERRORS:
                    return self._read(name, units)
                for region, values in zip(regions, got, strict=True):
                    out[region] = values
                return out, set()
            try:
                return np.asarray(a[...]), set()
            except DECODE_ERRORS:
                pass
            out = np.full(a.shape, a.fill_value, dtype=a.dtype)
            bad = set()
            for u in units:
                wi, i, sl, b = self.region(u)
                region = (wi, i, b) if name.startswith(VAR.unit) else (wi, i, sl)  # per unit, or per replica
                try:
                    out[region] = a[region]
                except DECODE_ERRORS:
                    bad.add(u)
            return out, bad

    def scan(self, units: Iterable[Unit] | None = None) -> tuple[dict, dict]:
        """Per-replica and per-unit arrays read chunk by chunk where needed, and the damaged units.

        Returns ``(arrays, damaged)``: ``arrays`` maps ``output``, ``done``,
        ``unit_writes`` (and ``risk``) to NumPy arrays, undecodable chunks
        filled with their fill value; ``damaged`` maps each unit marked done
        (or whose ``done`` chunk does not decode) to what is wrong with it: a
        chunk that does not decode (checksum), non-finite values (a missing
        chunk reads as NaN) or a write count below 1.
        """
        units = list(self.all_units() if units is None else units)
        names = [VAR.output] + ([VAR.done, VAR.unit_writes] if self.schema < 2 else []) + \
            ([VAR.risk] if VAR.risk in self.group else [])
        arrays, bad = {}, {}
        digests = only = None
        if self.schema >= 2:
            fields, bad = self.unit_fields(units)
            arrays.update({name: fields[name] for name in (VAR.done, VAR.unit_writes)})
            digests = fields["unit_digest"]
            recorded = [u for u in units if fields[VAR.unit_writes][self.region(u)[0], u.init, self.region(u)[3]]]
            if len(recorded) < len(units):  # the chunks of units with a record only (none for a new store)
                only = recorded
        for name in names:
            arrays[name], unreadable = self._read(name, units, only)
            for u in unreadable:
                bad.setdefault(u, f"{name} chunk does not decode (checksum mismatch or corrupt bytes)")
        done = done_units(arrays[VAR.done], self.block)
        writes = arrays[VAR.unit_writes]
        for u in units:
            wi, i, sl, b = self.region(u)
            if u in bad or not done[wi, i, b]:
                continue
            if not np.isfinite(arrays[VAR.output][wi, i, sl]).all():
                bad[u] = "marked done but output has non-finite values (a missing chunk?)"
            elif VAR.risk in arrays and not np.isfinite(arrays[VAR.risk][wi, i, sl]).all():
                bad[u] = "marked done but risk has non-finite values (a missing chunk?)"
            elif writes[wi, i, b] < 1:
                bad[u] = f"marked done but unit_writes is {int(writes[wi, i, b])}"
            elif digests is not None and (why := digest_problem(digests[wi, i, b], {
                    name: (key, arrays[name][wi, i, sl]) for name, key in chunk_keys(arrays, wi, i, b).items()})):
                bad[u] = why
        return arrays, {u: bad[u] for u in units if u in bad}

    def all_units(self) -> list[Unit]:
        """Every work unit of the store, in store order."""
        shape = self.array(VAR.output).shape
        return unit_grid(self.widths, shape[1], shape[2], self.block)

    def unit_fields(self, units: list) -> tuple[dict, dict]:
        """Schema 2: the ``unit`` records of ``units`` as arrays, and the units whose record is unreadable.

        Returns ``({"done": (W, I, R) bool, "unit_wall_time", "unit_node", "unit_writes", "unit_digest":
        (W, I, block)}, {unit: why})`` (:func:`~distntk.store.schema.decode_records`); a unit with an
        unreadable record counts as not done.
        """
        recs, unreadable = self._read(VAR.unit, units)
        fields, unparsable = decode_records(recs, [(wi, i, b) for wi, i, _, b in map(self.region, units)])
        bad = {u: "unit chunk does not decode (checksum mismatch or corrupt bytes)" for u in unreadable}
        for u in units:  # a record in a chunk that does not decode reads as none
            wi, i, _, b = self.region(u)
            if (wi, i, b) in unparsable:
                bad.setdefault(u, unparsable[wi, i, b])
        fields[VAR.done] = done_replicas(fields[VAR.done], self.block, self.array(VAR.output).shape[2])
        fields[VAR.unit_node] = fields[VAR.unit_node].astype(recs.dtype)
        return fields, bad

    def missing_arrays(self) -> list[str]:
        """The arrays the store's canonical spec implies that are not in the store (a lost array is damage)."""
        names = set(self.group.array_keys())
        return [n for n in required_arrays(self.canonical, self.schema) if n not in names]

    def lost_predictions(self) -> list[str]:
        """Prediction arrays present but unreadable or not finite (a damaged or deleted chunk); all of them when
        they (or the solver's attributes) do not match the store's ``predictions_digest``."""
        lost, values = [], {}
        names = prediction_names(self.group.array_keys())
        undefined = undefined_predictions(self.canonical)
        for name in names:
            arr = self.array(name)
            try:
                values[name] = np.asarray(arr[...])
                v = values[name].astype(float)
                ok = np.isnan(v).all() if name in undefined else np.isfinite(v).all()
            except DECODE_ERRORS:
                ok = False
            if not ok and name in required_arrays(self.canonical, self.schema):
                lost.append(name)
        want = self.attrs.get("predictions_digest")
        if not lost and want and len(values) == len(names) and predictions_digest(values, self.attrs) != want:
            return names
        return lost


async def _gather_reads(arr, regions: list) -> list:
    return await asyncio.gather(*(arr.getitem(r) for r in regions))

