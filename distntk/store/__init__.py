"""Result stores: one Zarr v3 group per experiment, pre-allocated, written unit by unit.

Layout (documented in docs/reference/store.md), store schema 3::

    dims    width (W), init (I), data (R = n_data), time (n_t), probe (P), lag (L),
            block (ceil(R / block))
    coords  width, init, data, block (int64), time (float64), probe (str window label)
    output  (width, init, data, time, probe) float64   NaN until written
    risk    (width, init, data, time)        float64   when the spec records the risk
    unit    (width, init, block)             str       the unit's record, "" until done
    h, nvar_poisson, nvar_iid, var_init_coef (time, probe); f, pi_probe (probe);
    probe_window (probe, lag); risk_h, nvar_risk_poisson, nvar_risk_iid, var_risk_init_coef (time)

An AR(1) store (``[chain] kind = "ar1"``, docs/model.md#ar1) differs in its probes only: ``probe`` holds
the value-window labels of :func:`distntk.ar1.probe_labels`, ``probe_window`` is float64
``(probe, lag, input)`` (the windows' input values, NaN fill), ``pi_probe`` is NaN (a density point has no
probability), and every prediction has its Monte Carlo standard error ``<name>_se``, as a sampled limit's.

A work unit ``(width, init, data block)`` is exactly one chunk of every per-replica
array (chunks ``(1, 1, block, ...)``), so a unit's writes never touch another
unit's chunks and a unit rewritten after a crash replaces whole chunks.  Its
record is one element of ``unit``, whose chunks ``(1, c, n_blocks)`` hold at
least 1,024 records (or every record of a width), written only by the driver
(:mod:`distntk.store.writer`), each chunk rewritten whole.  The record is the JSON object
``{"writes": n, "wall_time": s, "node": id, "digest": {"output": d, "risk": d},
"writer": "worker" | "driver"}``, written after the unit's data are stored: a
unit is done iff its record is there and its chunks match its digests.  Each
digest (:func:`~distntk.store.schema.chunk_digest`) binds one chunk's key and values, so a chunk that
is not the unit's own (another unit's valid chunk copied to its key, a chunk
deleted under an edited ``fill_value``, values edited and re-checksummed) no
longer matches its record; records written before digests existed carry none,
and their chunks are checked by checksum and finiteness only.  :func:`~distntk.store.reader.open_store`
presents the records as the variables ``done`` (width, init, data),
``unit_wall_time``, ``unit_node`` and ``unit_writes`` (width, init, block).

Schema 2 (distntk 0.3 to 0.5) has one record per ``unit`` chunk ``(1, 1, 1)``, written by the
driver right after the unit's data, and no ``writer`` field.
Schema 1 (stores without the ``store_schema`` attribute, made by distntk 0.2 and earlier)
has those four as arrays of their own (``done`` chunks ``(1, 1, block)``, the
others ``(1, 1, 1)``): six objects per unit, ``done`` written last.  Such stores
open, verify and resume as before: reads and writes follow the layout a store has.

The package, one module per concern:

* :mod:`distntk.store.locations`: a location string becomes a Zarr group or an fsspec filesystem; local or
  remote, its protocol, whether several nodes need a shared filesystem; storage errors in one line; a new
  store's location checked (once).
* :mod:`distntk.store.schema`: the table of variable names (``VAR``), the layout and the checks on every
  read (metadata, attributes, coordinates), digests, the unit records and which units are done.
* :mod:`distntk.store.reader`: :func:`open_store`, the read side of a store (records, resume plans, scans)
  and the spec a store was made from.
* :mod:`distntk.store.writer`: creating a store, the workers' chunks, the driver's :class:`UnitWriter` and
  the record commits.
* :mod:`distntk.store.objstore`: the workers' client on object storage, obstore where it fits (its names
  are not re-exported: only the location layer and the writer use them).

Every public name of the first four is importable from ``distntk.store`` (``from distntk.store import
open_store``); the submodules are imported on first use, so ``distntk.store.locations`` and
``distntk.store.schema`` load no storage library.
"""

from __future__ import annotations

import importlib as _importlib

# public name -> the submodule that defines it (each submodule's __all__; tests/test_layering.py holds them equal)
_EXPORTS = {
    "locations": ("PROBE", "StoreError", "ZARR_FORMAT", "check_location", "check_storage_options",
                  "check_writable", "create_group", "filesystem", "group_exists", "is_local", "is_url",
                  "join_location", "local_path", "local_read_store", "location", "needs_shared_filesystem",
                  "not_found", "open_group", "open_group_async", "probe_write", "protocol", "storage_errors",
                  "url_path", "zarr_group"),
    "schema": ("COORDS", "DECODE_ERRORS", "PER_REPLICA", "PER_UNIT", "PREDICTION_NAMES", "PROBE_PREDICTIONS",
               "RECORD_FIELDS", "RISK_PREDICTIONS", "SCHEMA", "SE_NAMES", "StoreVariables", "TARGET_PREDICTIONS",
               "VALUE_WINDOW_DIMS", "VAR", "check_array_meta", "check_attributes", "check_coords", "chunk_digest",
               "chunk_keys", "decode_records", "digest_problem", "dimensions", "done_replicas", "done_units",
               "in_layout", "is_ar1", "prediction_names", "predictions_digest", "required_arrays", "se_name",
               "solver_attrs", "undefined_predictions", "variable_attrs"),
    "reader": ("NOT_FOUND", "StoreReader", "open_store", "open_store_group", "store_model", "store_spec"),
    "writer": ("ChunkTarget", "ResultStore", "SpecChanged", "UnitWriter", "create_store", "open_or_create",
               "open_result_store", "write_chunks"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
