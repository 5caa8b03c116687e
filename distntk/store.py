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
(:class:`_Commits`), each chunk rewritten whole.  The record is the JSON object
``{"writes": n, "wall_time": s, "node": id, "digest": {"output": d, "risk": d},
"writer": "worker" | "driver"}``, written after the unit's data are stored: a
unit is done iff its record is there and its chunks match its digests.  Each
digest (:func:`chunk_digest`) binds one chunk's key and values, so a chunk that
is not the unit's own (another unit's valid chunk copied to its key, a chunk
deleted under an edited ``fill_value``, values edited and re-checksummed) no
longer matches its record; records written before digests existed carry none,
and their chunks are checked by checksum and finiteness only.  :func:`open_store`
presents the records as the variables ``done`` (width, init, data),
``unit_wall_time``, ``unit_node`` and ``unit_writes`` (width, init, block).

Schema 2 (distntk 0.3 to 0.5) has one record per ``unit`` chunk ``(1, 1, 1)``, written by the
driver right after the unit's data, and no ``writer`` field.
Schema 1 (stores without the ``store_schema`` attribute, made by distntk 0.2 and earlier)
has those four as arrays of their own (``done`` chunks ``(1, 1, block)``, the
others ``(1, 1, 1)``): six objects per unit, ``done`` written last.  Such stores
open, verify and resume as before: reads and writes follow the layout a store has.

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

Locations are local paths or fsspec URLs (``memory://``, ``s3://``, ``gs://``);
every open goes through :func:`_zarr_group`, which hands the string and the
``storage_options`` to zarr (``LocalStore`` for paths, ``FsspecStore`` for URLs).
Without ``storage_options`` the backend configures itself from the standard
environment (for s3fs, botocore's ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

On object storage each chunk and each ``zarr.json`` is one object, written by
one PUT.  A unit's selection covers its chunks exactly (the short last block is
the whole edge chunk), so zarr writes them without reading them first: no
read-modify-write, and two units never share an object.  The driver is the only
writer of metadata and records (workers write only their units' chunks), so the group
``zarr.json`` that :meth:`ResultStore.log` rewrites has no concurrent writer either.  Metadata are
not consolidated (that is not part of Zarr v3): every reader sees the
``zarr.json`` files themselves, so nothing goes stale across a resume.

Whatever a filesystem raises (``OSError``, a missing backend package, a
transport error such as botocore's ``EndpointConnectionError``) becomes a
one-line :class:`StoreError`; creating a store first writes and removes a probe
object, so an unwritable location fails before the limit is solved.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import DistntkError

if TYPE_CHECKING:
    from .chain import MarkovChain
    from .rnn import RNNConfig

import asyncio
import contextlib
import datetime as _dt
import hashlib
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
from xarray.backends import BackendArray
from xarray.core import indexing
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.sync import sync as _zarr_sync

from ._location import location
from ._text import one_line
from .experiment import Experiment, Unit, unit_grid
from .spec import Spec, SpecError, canonical_json, names_code, parse_spec, spec_diff, spec_hash

__all__ = ["SCHEMA", "StoreError", "ResultStore", "UnitWriter", "ChunkTarget", "write_chunks",
           "open_store", "open_result_store", "create_store",
           "open_or_create", "check_location", "check_writable", "store_spec", "store_model", "location",
           "chunk_digest", "check_attributes", "predictions_digest", "prediction_names", "SpecChanged", "is_ar1",
           "undefined_predictions"]

_ZARR_FORMAT = 3
SCHEMA = 3  # the layout new stores get (attribute ``store_schema``; absent means 1)
_RECORDS_PER_CHUNK = 1024  # schema 3: at least this many unit records per ``unit`` chunk (or all of a width)
_COMMIT_INTERVAL_S = 0.25  # schema 3: the records are committed at most this often while a run goes on,
_COMMIT_UNITS = 256  # once this many units wait for their record,
_COMMIT_MAX_S = 2.0  # or once the oldest has waited this long (a driver killed loses at most that)
_log = logging.getLogger("distntk.store")


class StoreError(DistntkError, RuntimeError):
    """A store that cannot be opened, created or written; one-line message."""


def chunk_digest(key: str, values: np.ndarray) -> str:
    """The digest that binds a chunk's ``key`` (``"output/0.1.2.0.0"``: array, chunk coordinates) and its values.

    BLAKE2b (128 bits) of the key, the dtype, the shape and the C-order bytes of the
    decoded values: equal for the bytes a writer hands zarr and for what a reader gets
    back, whatever the codecs; different for the same values at another key.  It
    detects accidents and naive edits, not an adversary who rewrites the record too
    (the record is no secret).
    """
    v = np.ascontiguousarray(values)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{key}|{v.dtype.str}|{v.shape}|".encode())
    h.update(v.data)
    return h.hexdigest()


def chunk_keys(names, wi: int, i: int, b: int) -> dict:
    """``{name: key}`` of the chunks of unit ``(wi, i, b)`` in the per-replica arrays ``names`` (``output``,
    ``risk``): the array's name and the chunk's grid coordinates, ``"output/0.1.2.0.0"``, whatever the store's
    chunk key encoding."""
    ndim = {"output": 5, "risk": 4}
    return {name: f"{name}/" + ".".join(map(str, (wi, i, b) + (0,) * (ndim[name] - 3)))
            for name in ("output", "risk") if name in names}


def digest_problem(digest: dict | None, chunks: dict) -> str | None:
    """Why the chunks ``{name: (key, values)}`` of a done unit do not match its record's ``digest``, or None.

    A record without digests (a store made before digests existed) is not checked here.
    """
    if not digest:
        return None
    for name, (key, values) in chunks.items():
        want = digest.get(name) if isinstance(digest, dict) else None
        if want is None or chunk_digest(key, values) != want:
            return (f"{name} chunk does not match the digest in the unit's record (another unit's chunk at "
                    "this key, or changed values)")
    return None


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


def _is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def protocol(path) -> str:
    return str(path).split("://", 1)[0].lower() if "://" in str(path) else "file"


# fsspec protocol -> (the package that implements it, the distntk extra that installs it)
_BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
# Top-level packages whose exceptions fsspec backends let through unwrapped (e.g. botocore's
# EndpointConnectionError for an unreachable endpoint, google.auth's errors for missing credentials).
_TRANSPORT_PACKAGES = {"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "fsspec", "requests",
                       "urllib3"}
_PROBE = ".distntk-write-test"
_S3_CONNECTIONS = 128  # default botocore pool size for s3:// stores (a --storage-option config_kwargs overrides it)


@contextlib.contextmanager
def storage_errors(path, action: str, catch: tuple = (OSError, ValueError)):
    """Turn what the filesystem raises while we ``action`` (``"open store"``, ...) into a one-line StoreError.

    ``catch``: the built-in exceptions that count as storage errors here (zarr reports a node
    that is missing or in the way as ``ValueError``; a data write leaves ``ValueError`` alone).
    """
    try:
        yield
    except StoreError:
        raise
    except ImportError as exc:
        proto = protocol(path)
        if proto not in _BACKENDS:
            raise StoreError(f"cannot {action} {path}: {one_line(exc)}") from None
        package, extra = _BACKENDS[proto]
        raise StoreError(f"{proto}:// stores need {package}, which is not installed: "
                         f"pip install 'distntk[{extra}]'") from None
    except PermissionError as exc:  # S3's AccessDenied/Forbidden, a read-only mount: whose rights to change
        raise StoreError(f"cannot {action} {path}: access denied ({one_line(exc)}): the credentials this "
                         "process uses may not do that") from None
    except catch as exc:
        raise StoreError(f"cannot {action} {path}: {one_line(exc)}") from None
    except TypeError as exc:  # a --storage-option the backend does not take (s3fs passes them on to its session)
        if "unexpected keyword argument" not in str(exc):
            raise
        raise StoreError(f"cannot {action} {path}: a storage option is not one the {protocol(path)}:// backend "
                         f"takes: {one_line(exc)}") from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in _TRANSPORT_PACKAGES:
            raise
        raise StoreError(f"cannot {action} {path}: {type(exc).__name__}: {one_line(exc)}") from None


def _zarr_group(path, mode: str, storage_options: dict | None = None) -> zarr.Group:
    """The one place a store location becomes a Zarr group (paths and fsspec URLs alike)."""
    kwargs = {"zarr_format": _ZARR_FORMAT, "use_consolidated": False}
    if storage_options:
        if "://" not in str(path):
            raise StoreError(f"storage options apply to fsspec URLs (s3://, gs://, memory://), not to the local "
                             f"path {path}")
        kwargs["storage_options"] = storage_options
    if protocol(path) in ("s3", "s3a"):
        # botocore's pool holds 10 connections by default: that, not the cluster, would cap the writes in flight
        opts = dict(storage_options or {})
        opts["config_kwargs"] = {"max_pool_connections": _S3_CONNECTIONS, **(opts.get("config_kwargs") or {})}
        kwargs["storage_options"] = opts
    return zarr.open_group(str(path), mode=mode, **kwargs)


NOT_FOUND = (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError)


def _exists(path, storage_options=None) -> bool:
    with storage_errors(path, "open store"):
        try:
            _zarr_group(path, "r", storage_options)
            return True
        except NOT_FOUND:
            return False


def _probe_write(path, storage_options=None) -> None:
    """Write and remove a small object where the store goes: fail before the limit is solved, not after."""
    with storage_errors(path, "create store at"):
        if "://" not in str(path):
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, _PROBE)
            with open(probe, "wb"):
                pass
            os.remove(probe)
            return
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
        probe = f"{root.rstrip('/')}/{_PROBE}"
        fs.pipe_file(probe, b"")
        with contextlib.suppress(OSError):  # a write-only identity may not delete; the probe is harmless
            fs.rm_file(probe)


# --------------------------------------------------------------------------- the layout, checked on every read
# A store's own metadata never redefine its numbers: every array's dtype, fill value and codecs must be those
# distntk writes (an edited fill_value would turn a deleted chunk into data, a scale/offset codec or a CF
# attribute would rescale it); the coordinates must be the canonical spec's; the attributes derived from the
# spec must equal it.  A mismatch is one-line damage (StoreError), named, never summarised.

_PREDICTION_NAMES = ("h", "nvar_poisson", "nvar_iid", "var_init_coef", "f", "pi_probe", "risk_h",
                     "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef")
_LAYOUT = {  # name -> (dtype kind, fill value); a prediction's "<name>_se" is laid out as the prediction
    **{n: ("f", "nan") for n in ("output", "risk", "unit_wall_time") + _PREDICTION_NAMES},
    "time": ("f", 0.0),
    **{n: ("i", 0) for n in ("width", "init", "data", "block", "probe_window", "unit_writes")},
    **{n: ("T", "") for n in ("probe", "unit", "unit_node")},
    "done": ("b", False),
}
_DIMS = {**{n: (n,) for n in ("width", "init", "data", "block", "time", "probe")},
         "output": ("width", "init", "data", "time", "probe"), "risk": ("width", "init", "data", "time"),
         **{n: ("width", "init", "block") for n in ("unit", "unit_wall_time", "unit_node", "unit_writes")},
         "done": ("width", "init", "data"), "probe_window": ("probe", "lag"), "f": ("probe",), "pi_probe": ("probe",),
         **{n: ("time", "probe") for n in ("h", "nvar_poisson", "nvar_iid", "var_init_coef")},
         **{n: ("time",) for n in ("risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef")}}
_VALUE_WINDOWS = (("f", "nan"), ("probe", "lag", "input"))  # an AR(1) store's probe_window: (layout, dims)
_CODECS = {"bytes", "zstd", "crc32c", "vlen-utf8"}  # what distntk writes; anything else could change values
_DERIVED = {"seed": ("seed",), "engine": ("engine",), "beta": ("model", "beta"), "alpha": ("model", "alpha"),
            "T": ("training", "T"), "L": ("training", "L"), "block": ("replicas", "block")}


def _edited(path, what: str) -> StoreError:
    return StoreError(f"{path}: {what} (edited metadata; recreate the store)")


def _required_arrays(canonical: dict, schema: int) -> list[str]:
    """The arrays a store of ``canonical`` must hold (a sampled limit's ``*_se`` are not required)."""
    risk = bool(canonical.get("training", {}).get("record_risk", True))
    names = ["width", "init", "data", "block", "time", "probe", "output"] + (["risk"] if risk else [])
    names += ["unit"] if schema >= 2 else ["done", "unit_wall_time", "unit_node", "unit_writes"]
    names += ["h", "nvar_poisson", "nvar_iid", "var_init_coef", "f", "pi_probe", "probe_window"]
    return names + (["risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef"] if risk else [])


def check_array_meta(path, name: str, meta) -> None:
    """Array ``name``'s metadata (zarr's ``ArrayV3Metadata``) must be what distntk writes (dtype, fill, codecs).

    ``probe_window`` has two layouts: state windows (int64, finite chains) and value windows (float64, AR(1));
    which one a store must have is its canonical spec's, checked by :func:`check_coords`."""
    want = _LAYOUT.get(name[:-3] if name.endswith("_se") else name)
    if want is None:
        return
    kind, fill = want
    dims = _DIMS.get(name[:-3] if name.endswith("_se") else name)
    try:
        native = meta.dtype.to_native_dtype()
        if name == "probe_window" and native.kind == "f":
            (kind, fill), dims = _VALUE_WINDOWS
        got_kind = "T" if native.kind in "TUO" else native.kind
        codecs = [c.to_dict()["name"] for c in meta.codecs]
        got_fill = meta.fill_value
        same_fill = (np.isnan(float(got_fill)) if fill == "nan" else
                     (str(got_fill) == fill if kind == "T" else got_fill == fill))
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise _edited(path, f"array {name!r} has metadata distntk does not read ({one_line(exc, 80)})") from None
    if got_kind != kind:
        raise _edited(path, f"array {name!r} has dtype {native}, not the dtype distntk writes")
    if not same_fill:
        shown = str(got_fill) if kind == "T" else repr(got_fill.item() if hasattr(got_fill, "item") else got_fill)
        raise _edited(path, f"array {name!r} has fill_value {shown}, distntk writes "
                            f"{'NaN' if fill == 'nan' else repr(fill)}")
    if dims is not None and tuple(meta.dimension_names or ()) != dims:
        raise _edited(path, f"array {name!r} has dimensions {meta.dimension_names}, distntk writes {dims}")
    if set(codecs) - _CODECS:
        raise _edited(path, f"array {name!r} has codecs {codecs}; distntk writes only {sorted(_CODECS)}")


def check_attributes(path, attrs: dict) -> dict:
    """The store's canonical spec (a dict), after checking that it hashes to ``spec_hash`` and that the
    attributes derived from it (``beta``, ``block``, ...) and the ``store_schema`` are what it says.

    The catalog's columns, the estimator's beta and a resume's work units all come from these.
    """
    try:
        canonical = json.loads(attrs["spec_canonical"])
        ok = isinstance(canonical, dict) and spec_hash(canonical) == attrs["spec_hash"]
    except (ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise StoreError(f"{path}: the canonical spec in its attributes does not hash to its spec_hash "
                         f"{str(attrs.get('spec_hash', ''))[:12]} (damaged or edited attributes; recreate the "
                         "store with distntk run)")
    for attr, keys in _DERIVED.items():
        want = canonical
        for k in keys:
            want = want.get(k) if isinstance(want, dict) else None
        got = attrs.get(attr)
        if want is not None and not (type(got) is not bool and got == want):
            raise _edited(path, f"attribute {attr!r} is {one_line(repr(got), 40)}, its canonical spec says {want!r}")
    _check_spec_text(path, attrs, canonical)
    if attrs.get("store_schema", 1) not in (1, 2, 3) or type(attrs.get("store_schema", 1)) is not int:
        raise _edited(path, f"attribute 'store_schema' is {one_line(repr(attrs.get('store_schema')), 40)}; this "
                            "distntk reads store schemas 1, 2 and 3")
    return canonical


SE_NAMES = tuple(f"{n}_se" for n in ("h", "nvar_poisson", "nvar_iid", "var_init_coef", "risk_h",
                                        "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef"))


def _solver_attrs(attrs: dict) -> dict:
    """The attributes the limit solver wrote (bounds, errors, the sampled limit's figures): data, not spec."""
    return {k: v for k, v in attrs.items() if k.startswith(("memory_", "kernel_")) or k == "n_histories"}


def predictions_digest(values: dict, attrs: dict) -> str:
    """The digest of a store's predictions: every prediction array present (``values``: name -> array, the
    ``*_se`` included) and the solver's attributes, bound to their names.  Written at creation
    (``predictions_digest``), checked on every read that judges a store; ``kernel_seconds`` is left out
    (a timing, not a number any verdict uses)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(values):
        v = np.asarray(values[name])
        v = np.ascontiguousarray(v, dtype=np.int64 if name == "probe_window" and v.dtype.kind != "f" else np.float64)
        h.update(f"{name}|{v.shape}|".encode())
        h.update(v.data)
    solver = {k: v for k, v in _solver_attrs(attrs).items() if k != "kernel_seconds"}
    h.update(json.dumps(solver, sort_keys=True, default=str).encode())
    return h.hexdigest()


def prediction_names(names) -> list[str]:
    """The prediction arrays among ``names`` (array names of a store), in a fixed order."""
    return sorted(n for n in names if n in _PREDICTION_NAMES + SE_NAMES + ("probe_window",))


def _check_spec_text(path, attrs: dict, canonical: dict) -> None:
    """The ``spec`` text (what ``distntk report`` rebuilds the experiment from) must be the hashed spec.

    A ``module:function`` target is not imported to check it (a store is data): its text is
    then only checked when a report rebuilds the spec (:func:`store_spec`, with ``--allow-code`` absent: refused).
    """
    if names_code(canonical):  # a code target or a sampler: never imported here
        return
    try:
        ok = parse_spec(str(attrs.get("spec", "")), source="the store's spec").hash == attrs["spec_hash"]
    except SpecError:
        ok = False
    if not ok:
        raise _edited(path, "attribute 'spec' (the spec's text) is not the spec its spec_hash names")


def is_ar1(canonical: dict) -> bool:
    """Whether ``canonical`` is the spec of a continuous-state store (``[chain] kind = "ar1"`` or ``"sampler"``,
    docs/model.md#ar1): value-window probes, no ``pi_probe``."""
    return isinstance(canonical.get("chain"), dict) and canonical["chain"].get("kind") in ("ar1", "sampler")


def undefined_predictions(canonical: dict) -> tuple[str, ...]:
    """The predictions that are NaN by definition in a store of ``canonical`` (never damage): an AR(1)
    store's ``pi_probe`` (a probe is a point of a density; it has no probability)."""
    return ("pi_probe",) if is_ar1(canonical) else ()


def _canonical_windows(canonical: dict):
    """``(probe labels, probe_window)`` of the canonical spec, or ``(None, None)`` when it names no windows."""
    windows = (canonical.get("probes") or {}).get("windows")
    if not windows:
        return None, None
    if not is_ar1(canonical):
        return ["".join(str(int(s)) for s in z) for z in windows], windows
    from .ar1 import probe_labels

    try:
        c = canonical["chain"]
        d = c["dim"] if c["kind"] == "sampler" else len(c["phi"])
        values = np.asarray(windows, dtype=float).reshape(len(windows), -1, d)
    except (KeyError, TypeError, ValueError):
        return None, None  # not a spec distntk writes: the hash check has refused it already
    return probe_labels(values), values


def check_coords(path, canonical: dict, values: dict) -> None:
    """The coordinates (``values``: name -> array, those present) must be the canonical spec's; ``probe_window``
    holds integer state windows, or an AR(1) store's float value windows."""
    rep, tr = canonical.get("replicas", {}), canonical.get("training", {})
    labels, windows = _canonical_windows(canonical)
    want = {"width": rep.get("widths"), "init": range(rep.get("n_init", 0)), "data": range(rep.get("n_data", 0)),
            "time": tr.get("times"),
            "block": range(-(-rep.get("n_data", 0) // rep.get("block", 1))) if rep.get("block") else None,
            "probe": labels, "probe_window": windows}
    for name, v in values.items():
        w = want.get(name)
        if w is None or v is None or isinstance(v, Exception):
            continue
        got = np.asarray(v)
        if name == "probe_window" and got.dtype.kind != ("f" if is_ar1(canonical) else "i"):
            raise _edited(path, f"coordinate 'probe_window' has dtype {got.dtype}, not the "
                                f"{'float64 value windows of an AR(1)' if is_ar1(canonical) else 'int64 state windows'}"
                                " store")
        w = np.asarray(list(w) if isinstance(w, range) else w, dtype=got.dtype if got.dtype.kind != "T" else str)
        if got.shape != w.shape or not (got == w).all():
            raise _edited(path, f"coordinate {name!r} is not the canonical spec's ({one_line(repr(got.tolist()), 60)})")



def open_store(path: str | os.PathLike, storage_options: dict | None = None) -> xr.Dataset:
    """The store at ``path`` as a lazily loaded :class:`xarray.Dataset`.

    ``storage_options`` go to the fsspec backend of a URL (``endpoint_url``, ``key``, ...);
    without them the backend reads its standard environment.  The arrays are read raw, as
    distntk wrote them: their metadata must be distntk's layout (dtype, fill value, codecs,
    dimensions), their attributes are distntk's own (``long_name``, ``units``), not what the
    store says, so no CF attribute (``scale_factor``, ``_FillValue``, time units) changes a
    number; arrays distntk does not write are not in the Dataset.
    """
    rs = open_result_store(path, mode="r", storage_options=storage_options)
    with storage_errors(path, "read store"):
        arrays = dict(rs.group.arrays())
    coords, data = {}, {}
    for name in sorted(arrays):
        if not _in_layout(name) or (name == "unit" and rs.schema >= 2):
            continue
        arr = arrays[name]
        check_array_meta(rs.path, name, arr.metadata)
        var = xr.Variable(tuple(arr.metadata.dimension_names), indexing.LazilyIndexedArray(_ZarrField(arr)),
                          variable_attrs(name))
        if name in _COORD_NAMES:
            with storage_errors(path, "read store"):
                coords[name] = var.load()
        else:
            data[name] = var
    check_coords(rs.path, rs.canonical, {k: v.values for k, v in coords.items()} |
                  ({"probe_window": data["probe_window"].values} if "probe_window" in data else {}))
    ds = xr.Dataset(data, coords=coords, attrs=rs.attrs)
    if rs.schema < 2:
        return ds
    records = _Records(rs)  # read when one of the four is first loaded, once for all four
    dims = {"done": ("width", "init", "data")}
    return ds.assign({name: xr.Variable(dims.get(name, ("width", "init", "block")),
                                        indexing.LazilyIndexedArray(_RecordField(records, name)), variable_attrs(name))
                      for name in ("done", "unit_wall_time", "unit_node", "unit_writes")})


_COORD_NAMES = ("width", "init", "data", "block", "time", "probe")


def _in_layout(name: str) -> bool:
    return (name[:-3] if name.endswith("_se") else name) in _LAYOUT


class _ZarrField(BackendArray):
    """A zarr array as a lazily indexed array (xarray's backend protocol), read raw."""

    def __init__(self, arr: zarr.Array):
        self.arr, self.shape, self.dtype = arr, tuple(arr.shape), arr.metadata.dtype.to_native_dtype()

    def __getitem__(self, key):
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC,
                                                  lambda k: np.asarray(self.arr[k]))


class _Records:
    """The ``unit`` records of a schema-2 store, decoded on first use (an undecodable one reads as not done)."""

    def __init__(self, rs: ResultStore):
        self.rs, self._fields = rs, None
        W, I, R = rs._array("output").shape[:3]
        nb = rs._array("unit").shape[2]
        self.shapes = {"done": (W, I, R), "unit_wall_time": (W, I, nb), "unit_node": (W, I, nb),
                       "unit_writes": (W, I, nb)}
        self.dtypes = {"done": np.dtype(bool), "unit_wall_time": np.dtype(np.float64),
                       "unit_node": rs._array("unit").dtype, "unit_writes": np.dtype(np.int64)}

    def field(self, name: str) -> np.ndarray:
        if self._fields is None:
            self._fields = self.rs._unit_fields(self.rs._all_units())[0]
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
    from .chain import ChainError, markov_chain
    from .rnn import ModelError, RNNConfig

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
            from .ar1 import ar1, reference_chain

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


# Errors a damaged chunk raises when decoded: a crc32c mismatch (ValueError), a broken Zstd frame
# (RuntimeError, old stores without checksums).  Transport errors are neither and are not caught.
DECODE_ERRORS = (ValueError, RuntimeError)


@dataclass(eq=False)
class ResultStore:
    """A distntk store opened for reading or writing. Open it with the functions below."""

    path: str
    group: zarr.Group
    _arrays: dict = field(default_factory=dict, repr=False)
    _writes: np.ndarray | None = field(default=None, repr=False)
    _widths: list | None = field(default=None, repr=False)
    _writer_state: "_Regions | None" = field(default=None, repr=False)
    _commits: "_Commits | None" = field(default=None, repr=False)
    _storage_options: dict | None = field(default=None, repr=False)
    _data_rebuilt: bool = field(default=False, repr=False)  # an empty output/risk recreated: check every unit

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def canonical(self) -> dict:
        return json.loads(self.group.attrs["spec_canonical"])

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            arr = self.group[name]
            check_array_meta(self.path, name, arr.metadata)
            self._arrays[name] = arr
        return self._arrays[name]

    @property
    def widths(self) -> list[int]:
        if self._widths is None:  # a coordinate, fixed at creation: read once, not once per unit
            with storage_errors(self.path, "read store"):
                widths = self._array("width")[:]
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

    def _region(self, unit: Unit):
        try:
            wi = self.widths.index(unit.width)
        except ValueError:
            raise StoreError(f"{self.path}: width {unit.width} is not in the store's widths {self.widths}") from None
        return wi, unit.init, slice(unit.data_start, unit.data_stop), unit.data_start // self.block

    def done_mask(self) -> np.ndarray:
        """``done`` as a NumPy array ``(width, init, data)``."""
        if self.schema >= 2:
            return self._unit_fields(self._all_units())[0]["done"]
        with storage_errors(self.path, "read store"):
            return np.asarray(self._array("done")[:], dtype=bool)

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
                fields = self._unit_fields(units)[0]
                arrays = {"done": fields["done"], "unit_writes": fields["unit_writes"]}
            else:
                arrays = {name: self._read(name, units)[0] for name in ("done", "unit_writes")}
        if self._writes is None:  # the write counters as read chunk-safe: a damaged counter chunk restarts at 0
            self._writes = np.asarray(arrays["unit_writes"], dtype=np.int64)
        done = arrays["done"]
        out = []
        for u in units:
            wi, i, sl, _ = self._region(u)
            if not done[wi, i, sl].all() or u in damaged:
                out.append(u)
        return out

    def _read(self, name: str, units, only: list | None = None) -> tuple[np.ndarray, set]:
        """Array ``name`` read whole, or unit by unit when a chunk does not decode; ``(values, bad units)``.

        ``only``: read just these units' chunks (all in flight at once), the rest left at the fill value:
        nothing at all for a new store, whose units have no record yet."""
        a = self._array(name)
        with storage_errors(self.path, "read store"):
            if only is not None:
                out = np.full(a.shape, a.fill_value, dtype=a.dtype)
                regions = [self._region(u)[:3] for u in only]
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
                wi, i, sl, b = self._region(u)
                region = (wi, i, b) if name.startswith("unit") else (wi, i, sl)
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
        units = list(self._all_units() if units is None else units)
        names = ["output"] + (["done", "unit_writes"] if self.schema < 2 else []) + \
            (["risk"] if "risk" in self.group else [])
        arrays, bad = {}, {}
        digests = only = None
        if self.schema >= 2:
            fields, bad = self._unit_fields(units)
            arrays.update(done=fields["done"], unit_writes=fields["unit_writes"])
            digests = fields["unit_digest"]
            recorded = [u for u in units if fields["unit_writes"][self._region(u)[0], u.init, self._region(u)[3]]]
            if len(recorded) < len(units):  # the chunks of units with a record only (none for a new store)
                only = recorded
        for name in names:
            arrays[name], unreadable = self._read(name, units, only)
            for u in unreadable:
                bad.setdefault(u, f"{name} chunk does not decode (checksum mismatch or corrupt bytes)")
        done = arrays["done"].astype(bool)
        for u in units:
            wi, i, sl, b = self._region(u)
            if u in bad:
                continue
            if not done[wi, i, sl].all():
                continue
            if not np.isfinite(arrays["output"][wi, i, sl]).all():
                bad[u] = "marked done but output has non-finite values (a missing chunk?)"
            elif "risk" in arrays and not np.isfinite(arrays["risk"][wi, i, sl]).all():
                bad[u] = "marked done but risk has non-finite values (a missing chunk?)"
            elif arrays["unit_writes"][wi, i, b] < 1:
                bad[u] = f"marked done but unit_writes is {int(arrays['unit_writes'][wi, i, b])}"
            elif digests is not None and (why := digest_problem(digests[wi, i, b], {
                    name: (key, arrays[name][wi, i, sl]) for name, key in chunk_keys(arrays, wi, i, b).items()})):
                bad[u] = why
        return arrays, {u: bad[u] for u in units if u in bad}

    def _all_units(self) -> list[Unit]:
        shape = self._array("output").shape
        return unit_grid(self.widths, shape[1], shape[2], self.block)

    def _unit_fields(self, units: list) -> tuple[dict, dict]:
        """Schema 2: the ``unit`` records of ``units`` as arrays, and the units whose record is unreadable.

        Returns ``({"done": (W, I, R) bool, "unit_wall_time", "unit_node", "unit_writes": (W, I, block)},
        {unit: why})``; a unit with an unreadable record counts as not done.
        """
        recs, unreadable = self._read("unit", units)
        W, I, nb = recs.shape
        R = self._array("output").shape[2]
        wall, node = np.full((W, I, nb), np.nan), np.full((W, I, nb), "", dtype=object)
        writes, done = np.zeros((W, I, nb), dtype=np.int64), np.zeros((W, I, nb), dtype=bool)
        digest = np.full((W, I, nb), None, dtype=object)
        bad = {u: "unit chunk does not decode (checksum mismatch or corrupt bytes)" for u in unreadable}
        for u in units:
            wi, i, _, b = self._region(u)
            text = recs[wi, i, b]
            if u in bad or not text:
                continue
            try:
                rec = json.loads(str(text))
                writes[wi, i, b], wall[wi, i, b], node[wi, i, b] = int(rec["writes"]), rec["wall_time"], rec["node"]
                digest[wi, i, b] = rec.get("digest")
            except (ValueError, KeyError, TypeError, AttributeError):
                bad[u] = "unit record does not parse"
                continue
            done[wi, i, b] = True
        done_data = np.repeat(done, self.block, axis=2)[:, :, :R]
        return {"done": done_data, "unit_wall_time": wall, "unit_node": node.astype(recs.dtype),
                "unit_writes": writes, "unit_digest": digest}, bad

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
        names = ("output", "risk") if "risk" in self.group else ("output",)
        return ChunkTarget(self.path, self._storage_options, str(self.attrs.get("store_id", "")), tuple(self.widths),
                           self.block, names)

    def commits(self) -> "_Commits":
        """Schema 3: the store's record commits (one per opened store: the driver's view of ``unit``)."""
        if self._commits is None:
            self._commits = _Commits(self, _zarr_sync(_running_loop()))
        return self._commits

    def writer(self, max_pending: int = 1024, batches: int | None = None, concurrency: int = 64) -> "UnitWriter":
        """A :class:`UnitWriter` on this store (use it as a context manager); ``batches``: see there."""
        return UnitWriter(self, max_pending=max_pending, batches=batches, concurrency=concurrency)

    def missing_arrays(self) -> list[str]:
        """The arrays the store's canonical spec implies that are not in the store (a lost array is damage)."""
        names = set(self.group.array_keys())
        return [n for n in _required_arrays(self.canonical, self.schema) if n not in names]

    def lost_predictions(self) -> list[str]:
        """Prediction arrays present but unreadable or not finite (a damaged or deleted chunk); all of them when
        they (or the solver's attributes) do not match the store's ``predictions_digest``."""
        lost, values = [], {}
        names = prediction_names(self.group.array_keys())
        undefined = undefined_predictions(self.canonical)
        for name in names:
            arr = self._array(name)
            try:
                values[name] = np.asarray(arr[...])
                v = values[name].astype(float)
                ok = np.isnan(v).all() if name in undefined else np.isfinite(v).all()
            except DECODE_ERRORS:
                ok = False
            if not ok and name in _required_arrays(self.canonical, self.schema):
                lost.append(name)
        want = self.attrs.get("predictions_digest")
        if not lost and want and len(values) == len(names) and predictions_digest(values, self.attrs) != want:
            return names
        return lost

    def rebuild(self, spec: Spec, predictions: Callable[[], xr.Dataset]) -> list[str]:
        """Recreate the arrays the spec implies that are missing, and rewrite lost predictions.

        Returns the names rebuilt (empty when nothing was missing; ``predictions`` is
        then not called).  A recreated per-replica array is empty: the units whose
        data it held are damaged and :meth:`pending` hands them back to be recomputed.
        """
        missing, lost = self.missing_arrays(), self.lost_predictions()
        if not missing and not lost:
            return []
        self._data_rebuilt = bool({"output", "risk"} & set(missing))
        pred = predictions()
        with storage_errors(self.path, "write store", catch=(OSError,)):
            _allocate(self.group, spec.experiment, pred, self.schema, only=set(missing))
            for name in lost:
                self._array(name)[...] = pred[name].values if name != "probe_window" else \
                    _probe_windows(spec.experiment)
            self._arrays.clear()
            fresh = _attrs(spec, spec.experiment, pred, "")
            solver = _solver_attrs(fresh)
            values = {n: np.asarray(self._array(n)[...]) for n in prediction_names(self.group.array_keys())}
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
        names = ("output", "unit") if self.schema >= 2 else ("output", "done", "unit_wall_time", "unit_node",
                                                                "unit_writes")
        with storage_errors(rs.path, "open store"):
            self.arrays = {k: rs._array(k).async_array for k in names}
            with contextlib.suppress(KeyError):
                self.arrays["risk"] = rs._array("risk").async_array
        if rs._writes is None:  # the write counters as read chunk-safe (a damaged one restarts at 0)
            units = rs._all_units()
            writes = rs._unit_fields(units)[0]["unit_writes"] if self.schema >= 2 else \
                rs._read("unit_writes", units)[0]
            rs._writes = np.asarray(writes, dtype=np.int64)
        self.rs, self.widths, self.block = rs, rs.widths, rs.block
        self.n_data = int(rs._array("output").shape[2])
        self.n_blocks = -(-self.n_data // self.block)

    def _digest(self, item) -> dict:
        """``{name: digest}`` of the chunks a unit ``item = (unit, result, wall, node)`` writes."""
        wi, i, _sl, b = self.rs._region(item[0])
        return {name: chunk_digest(key, np.asarray(item[1][name], dtype=np.float64))  # output, risk: float64
                for name, key in chunk_keys(self.arrays, wi, i, b).items() if name in item[1]}

    def _regions(self, batch: list) -> list:
        """``batch`` -> ``[(wi, i0, i1, b0, b1, items)]``: rectangles of whole chunks, items in row-major order.

        Consecutive blocks of one row make one region; rows covered completely and
        consecutive in ``init`` merge into one region ``(wi, i0:i1, all blocks)``.
        """
        keyed = sorted(((self.rs._region(it[0]), it) for it in batch), key=lambda x: (x[0][0], x[0][1], x[0][3]))
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

            data.append(a["output"].setitem(sel_d, _stacked(items, "output", rows)))
            if "risk" in a and "risk" in items[0][1]:
                data.append(a["risk"].setitem(sel_d, _stacked(items, "risk", rows)))
            if self.schema >= 3:
                continue
            if self.schema >= 2:
                recs = [json.dumps({"writes": int(n), "wall_time": it[2], "node": it[3], "digest": self._digest(it)},
                                   separators=(",", ":"))
                        for it, n in zip(items, counts.ravel(), strict=True)]
                flags.append((a["unit"], sel_u, np.array(recs, dtype=str).reshape(shape_u)))
                continue
            data.append(a["unit_wall_time"].setitem(sel_u, np.array([it[2] for it in items]).reshape(shape_u)))
            data.append(a["unit_node"].setitem(sel_u, np.array([it[3] for it in items], dtype=str).reshape(shape_u)))
            data.append(a["unit_writes"].setitem(sel_u, counts.reshape(shape_u)))
            flags.append((a["done"], sel_d, np.ones((rows, d1 - d0) if rows > 1 else (d1 - d0,), dtype=bool)))
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
        units = rs._all_units()
        recs, _bad = rs._read("unit", units)
        self.rs, self.loop = rs, loop
        self.arr = rs._array("unit").async_array
        self.ci = int(rs._array("unit").chunks[1])
        self.recs = np.array(recs, dtype=object)
        if rs._writes is None:
            rs._writes = np.asarray(rs._unit_fields(units)[0]["unit_writes"], dtype=np.int64)
        self.dirty: dict = {}  # (wi, chunk row) -> units added since its last write
        self.fut = None  # the flush in flight: (future, {chunk: units})
        self.last = self.since = 0.0
        self.waiting = 0  # units added since the last flush began
        self._done: list = []
        self.chunk_writes = 0  # record chunks written (one PUT each on object storage)

    def add(self, unit: Unit, wall_time: float, node: str, digest: dict, writer: str = "driver") -> None:
        """The record of ``unit``, whose chunks (``digest``) ``writer`` ("worker" or "driver") stored."""
        wi, i, _sl, b = self.rs._region(unit)
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


async def _retrying(path: str, what: str, attempt: Callable):
    """Await ``attempt()`` until it succeeds, retrying storage and transport errors with backoff
    (:data:`_RETRY_DELAYS`); then a one-line :class:`StoreError`."""
    for n, delay in enumerate(_RETRY_DELAYS + (None,)):
        try:
            with storage_errors(path, "write store", catch=(OSError,)):
                return await attempt()
        except StoreError as exc:
            if delay is None:
                raise StoreError(f"{exc} (after {n} retries)") from None
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
            with storage_errors(target.path, "open store"):
                try:
                    g = _zarr_group(target.path, "r+", target.storage_options)  # opens: writes no metadata
                except NOT_FOUND:
                    g = None
                found = None if g is None else str(g.attrs.get("store_id", ""))
                arrays = {name: g[name].async_array for name in target.names} if found == target.store_id else (
                    f"no store at {target.path} from this worker (a local path on a node that does not share it?)"
                    if g is None else f"the store there has store_id {found[:12] or '(none)'}, not "
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
            batches = 8 if _is_url(rs.path) else 2  # writes are CPU-bound and more only contend for the GIL
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
        for attempt, delay in enumerate(_RETRY_DELAYS + (None,)):
            try:
                with storage_errors(self.rs.path, "write store", catch=(OSError,)):
                    return await self._regions.write(regions)
            except StoreError as exc:
                if delay is None:
                    raise StoreError(f"{exc} (after {attempt} retries)") from None
                self.retries += 1
                _log.warning("write of %d units failed (%s); retry %d in %.2f s", n, exc, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


async def _gather_reads(arr, regions: list) -> list:
    return await asyncio.gather(*(arr.getitem(r) for r in regions))


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def open_result_store(path: str | os.PathLike, mode: str = "r+", storage_options: dict | None = None) -> ResultStore:
    """Open an existing distntk store (``mode`` ``"r"`` or ``"r+"``)."""
    path = location(path)
    with storage_errors(path, "open store"):
        try:
            g = _zarr_group(path, mode, storage_options)
        except NOT_FOUND:
            raise StoreError(f"no distntk store at {path}") from None
    if "spec_hash" not in g.attrs or "spec_canonical" not in g.attrs:
        raise StoreError(f"{path} is a Zarr group without distntk attributes (not a distntk store, or its "
                         "creation was interrupted: remove it to start over)")
    check_attributes(path, dict(g.attrs))
    return ResultStore(str(path), g, _storage_options=storage_options)


def open_or_create(path: str | os.PathLike, spec: Spec, predictions: Callable[[], xr.Dataset],
                   storage_options: dict | None = None,
                   command: str = "", redo_interrupted: bool = False) -> ResultStore:
    """Open the store for ``spec`` at ``path``, or create it with ``predictions()`` (called only then).

    ``predictions`` is the caller's (the driver solves the limit: ``spec.experiment.predictions``);
    it is called after the location proved writable.  An existing store must come from the
    same canonical spec; otherwise the error names the keys that differ.  ``redo_interrupted``
    (the driver, holding the store's lease): an interrupted creation
    (:func:`_interrupted_creation`) is removed, with one warning line, and created again.
    """
    if redo_interrupted and _interrupted_creation(path, storage_options):
        with storage_errors(path, "remove the interrupted creation of"):
            import fsspec

            fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
            fs.rm(root, recursive=True)
        _log.warning("distntk: warning: %s: its creation was interrupted (a Zarr group without distntk attributes "
                     "and without unit data): removed, created again", path)
    if _exists(path, storage_options):
        store = open_result_store(path, "r+", storage_options)
        if store.attrs["spec_hash"] != spec.hash:
            keys = spec_diff(store.canonical, spec.canonical)
            raise SpecChanged(f"spec differs from the store's in keys: {', '.join(keys) or '(hash only)'} "
                              f"(store {path})", _fresh_location(str(path), spec, storage_options))
        store.rebuild(spec, predictions)
        return store
    check_writable(path, storage_options)
    return create_store(path, spec, predictions(), storage_options, command=command)


def _fresh_location(path: str, spec: Spec, storage_options: dict | None = None) -> str:
    """Where ``spec`` can go instead of ``path``: see :class:`SpecChanged`."""
    base = path.rstrip("/")
    stem, zarr_suffix = (base[:-5], ".zarr") if base.endswith(".zarr") else (base, "")
    for n in (8, 12, len(spec.hash)):
        fresh = f"{stem}-{spec.hash[:n]}{zarr_suffix}"
        with contextlib.suppress(StoreError):
            if not (not _is_url(fresh) and os.path.lexists(fresh)) and not _exists(fresh, storage_options):
                return fresh
        with contextlib.suppress(StoreError, KeyError):
            if open_result_store(fresh, "r", storage_options).attrs["spec_hash"] == spec.hash:
                return fresh
    return f"{stem}-{spec.hash}-new{zarr_suffix}"


_PER_UNIT = frozenset({"output", "risk", "unit", "done", "unit_wall_time", "unit_node", "unit_writes"})


def _interrupted_creation(path, storage_options=None) -> bool:
    """Whether ``path`` holds what :func:`create_store` leaves when killed before its attributes are written.

    That is: a Zarr group whose ``zarr.json`` has no ``spec_hash``/``spec_canonical``, and under it only
    arrays (``<name>/zarr.json``) of which no per-unit array (results, unit records) has a chunk; the
    chunks of coordinates and predictions (recomputed on creation) may be there.  Anything else (a file
    that is not such, a nested group, a unit's data) makes it not ours to remove: ``False``.
    """
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
        root = root.rstrip("/")
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
            if rel in ("zarr.json", _PROBE) or (len(parts) == 2 and parts[1] == "zarr.json"):
                continue
            if len(parts) < 2 or parts[0] not in arrays or parts[0] in _PER_UNIT or not parts[1].startswith("c"):
                return False
        return True
    except Exception:  # unreadable, not JSON, not there: not recognisably ours
        return False


def _check_local_target(path: str) -> None:
    if _is_url(path):
        return
    p = str(path).removeprefix("file://")
    if os.path.isfile(p):
        raise StoreError(f"cannot create store at {path}: a file is in the way")
    if os.path.isdir(p) and os.listdir(p):
        raise StoreError(f"cannot create store at {path}: directory exists, is not empty and is not a distntk store")


def check_location(path: str | os.PathLike, storage_options: dict | None = None) -> bool:
    """True if a store exists at ``path``; else check that one can be created there (one-line errors)."""
    if _exists(path, storage_options):
        return True
    check_writable(path, storage_options)
    return False


def check_writable(path: str | os.PathLike, storage_options: dict | None = None) -> None:
    """Fail with a one-line :class:`StoreError` unless a new store can be created at ``path``.

    Writes and removes a small probe object: an unwritable location fails before the limit is solved.
    """
    _check_local_target(str(path))
    _probe_write(path, storage_options)


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
    if _exists(path, storage_options):
        raise StoreError(f"cannot create store at {path}: a store is already there")
    check_writable(path, storage_options)
    exp = spec.experiment
    with storage_errors(path, "create store at"):
        try:
            g = _zarr_group(path, "w-", storage_options)
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
            raise StoreError(f"cannot create store at {path}: {type(exc).__name__}: {one_line(exc)}") from None
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


_LONG_NAMES = {
    "output": ("network output g^N_t(z) on the probe windows", "1"),
    "risk": ("stationary risk 1/2 sum_z pi_L(z) (f(z) - g^N_t(z))^2", "1"),
    "done": ("replica written (set after its data)", None),
    "unit_wall_time": ("wall time of the work unit on its actor", "s"),
    "unit_node": ("Ray node id that computed the work unit", None),
    "unit_writes": ("number of times the work unit was written", "1"),
    "unit": ("work unit record, JSON {writes, wall_time, node}; written after its data", None),
    "h": ("kernel limit h_t(z), docs/model.md (4.5)", "1"),
    "nvar_poisson": ("predicted N Var(g|theta), Poisson equation, docs/model.md (5.8)", "1"),
    "nvar_iid": ("predicted N Var(g|theta) if data were i.i.d., docs/model.md (5.10)", "1"),
    "var_init_coef": ("Var_theta E[g|theta] / N^(1-2 beta), docs/model.md (5.12)", "1"),
    "f": ("target f(z) on the probe windows", "1"),
    "pi_probe": ("stationary probability pi_L(z) of the probe windows (NaN for AR(1) value windows)", "1"),
    "probe_window": ("probe windows, oldest first: states (int), or an AR(1)'s input values (float)", None),
    "risk_h": ("stationary risk of the limit h_t", "1"),
    "nvar_risk_poisson": ("predicted N Var(risk|theta), Poisson equation", "1"),
    "nvar_risk_iid": ("predicted N Var(risk|theta) if data were i.i.d.", "1"),
    "var_risk_init_coef": ("Var_theta E[risk|theta] / N^(1-2 beta)", "1"),
    "width": ("network width N", None),
    "init": ("initialisation index", None),
    "data": ("data sequence index", None),
    "time": ("training time t = k / N", "1"),
    "probe": ("probe window label (state digits, or an AR(1)'s values, oldest first)", None),
    "block": ("work unit (data block) index", None),
}


def variable_attrs(name: str) -> dict:
    if name.endswith("_se") and name[:-3] in _LONG_NAMES:
        base, units = _LONG_NAMES[name[:-3]]
        return {"long_name": f"Monte Carlo standard error of the estimated limit's {base}",
                **({"units": units} if units else {})}
    long_name, units = _LONG_NAMES.get(name, (name, None))
    return {"long_name": long_name, **({"units": units} if units else {})}


def _allocate(g: zarr.Group, exp: Experiment, pred: xr.Dataset, schema: int, only: set | None = None) -> None:
    """Create the store's arrays in ``g`` (``only``: just these names, the others left as they are)."""
    W, I, R = len(exp.replicas.widths), exp.replicas.n_init, exp.replicas.n_data
    nt, P, B = len(exp.times), len(exp.probes), exp.replicas.block
    nb = -(-R // B)

    def arr(name, dims, shape, chunks, dtype, fill, data=None, per_unit=False):
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
                           dimension_names=dims, attributes=variable_attrs(name), **kw)
        if data is not None:
            a[...] = data
        return a

    arr("width", ("width",), (W,), (W,), "int64", 0, np.asarray(exp.replicas.widths, dtype=np.int64))
    arr("init", ("init",), (I,), (I,), "int64", 0, np.arange(I, dtype=np.int64))
    arr("data", ("data",), (R,), (R,), "int64", 0, np.arange(R, dtype=np.int64))
    arr("block", ("block",), (nb,), (nb,), "int64", 0, np.arange(nb, dtype=np.int64))
    arr("time", ("time",), (nt,), (nt,), "float64", 0.0, np.asarray(exp.times, dtype=float))
    arr("probe", ("probe",), (P,), (P,), str, "", np.asarray(exp.probe_labels(), dtype=str))

    arr("output", ("width", "init", "data", "time", "probe"), (W, I, R, nt, P), (1, 1, B, nt, P), "float64", np.nan,
        per_unit=True)
    if exp.record_risk:
        arr("risk", ("width", "init", "data", "time"), (W, I, R, nt), (1, 1, B, nt), "float64", np.nan,
            per_unit=True)
    if schema >= 3:  # records in large chunks, rewritten whole by the driver (the only writer of "unit")
        ci = min(I, max(1, -(-_RECORDS_PER_CHUNK // nb)))
        arr("unit", ("width", "init", "block"), (W, I, nb), (1, ci, nb), str, "", per_unit=True)
    elif schema == 2:
        arr("unit", ("width", "init", "block"), (W, I, nb), (1, 1, 1), str, "", per_unit=True)
    else:
        arr("done", ("width", "init", "data"), (W, I, R), (1, 1, B), "bool", False)
        arr("unit_wall_time", ("width", "init", "block"), (W, I, nb), (1, 1, 1), "float64", np.nan)
        arr("unit_node", ("width", "init", "block"), (W, I, nb), (1, 1, 1), str, "")
        arr("unit_writes", ("width", "init", "block"), (W, I, nb), (1, 1, 1), "int64", 0)

    # a sampled (infinite-past) limit also has the Monte Carlo standard error <name>_se of each prediction
    for name in ("h", "nvar_poisson", "nvar_iid", "var_init_coef"):
        for nm in (name, name + "_se"):
            if nm == name or nm in pred:
                arr(nm, ("time", "probe"), (nt, P), (nt, P), "float64", np.nan, pred[nm].values)
    for name in ("f", "pi_probe"):
        arr(name, ("probe",), (P,), (P,), "float64", np.nan, pred[name].values)
    for name in ("risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef"):
        for nm in (name, name + "_se"):
            if nm == name or nm in pred:
                arr(nm, ("time",), (nt,), (nt,), "float64", np.nan, pred[nm].values)
    pw = _probe_windows(exp)
    if pw.dtype.kind == "f":
        arr("probe_window", _VALUE_WINDOWS[1], pw.shape, pw.shape, "float64", np.nan, pw)
    else:
        arr("probe_window", ("probe", "lag"), pw.shape, pw.shape, "int64", 0, pw)


def _probe_windows(exp: Experiment) -> np.ndarray:
    """The stored ``probe_window``: int64 state windows ``(P, L)``, or an AR(1)'s float64 values ``(P, L, d)``."""
    if getattr(exp, "source", None) is not None:  # a ContinuousExperiment
        return np.asarray(exp.probes, dtype=np.float64).reshape(len(exp.probes), exp.L, -1)
    return np.asarray(exp.probes, dtype=np.int64)
