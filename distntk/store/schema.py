"""A store's layout and what every read checks: variable names, arrays, attributes, digests, done units.

One table names the store's variables (:data:`VAR`, and the groups :data:`COORDS`, :data:`PER_REPLICA`,
:data:`RECORD_FIELDS`, :data:`PROBE_PREDICTIONS`, :data:`RISK_PREDICTIONS`, :data:`PREDICTION_NAMES`,
:data:`SE_NAMES`): the other modules name a store variable through it.  One function says which work units
are done (:func:`done_units`), and one decodes the unit records (:func:`decode_records`): resume, ``distntk
verify``, the catalog, the query's progress and the estimator's missing units all ask them.

A store's own metadata never redefine its numbers: every array's dtype, fill value and codecs must be those
distntk writes (an edited fill_value would turn a deleted chunk into data, a scale/offset codec or a CF
attribute would rescale it); the coordinates must be the canonical spec's; the attributes derived from the
spec must equal it.  A mismatch is one-line damage (:class:`StoreError`), named, never summarised.

A chunk's digest (:func:`chunk_digest`) binds its key and values; a unit's record carries the digests of its
chunks, so a chunk that is not the unit's own no longer matches (:func:`digest_problem`).  The predictions
are bound together by :func:`predictions_digest`, written at creation.

No storage library is imported here: the estimator reads the table and :func:`done_units` without zarr.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .._text import one_line
from ..spec import SpecError, names_code, parse_spec, spec_hash
from .locations import StoreError

__all__ = ["SCHEMA", "VAR", "StoreVariables", "COORDS", "PER_REPLICA", "RECORD_FIELDS", "PER_UNIT",
           "PROBE_PREDICTIONS", "TARGET_PREDICTIONS", "RISK_PREDICTIONS", "PREDICTION_NAMES", "SE_NAMES",
           "VALUE_WINDOW_DIMS", "DECODE_ERRORS", "se_name", "dimensions", "in_layout", "variable_attrs",
           "chunk_digest", "chunk_keys", "digest_problem", "required_arrays", "check_array_meta",
           "check_attributes", "check_coords", "solver_attrs", "predictions_digest", "prediction_names", "is_ar1",
           "undefined_predictions", "decode_records", "done_units", "done_replicas"]

SCHEMA = 3  # the layout new stores get (attribute ``store_schema``; absent means 1)


# --------------------------------------------------------------------------- the names of a store's variables

@dataclass(frozen=True)
class StoreVariables:
    """The names of a store's variables (docs/reference/store.md), spelled once: ``VAR.output``, ``VAR.done``."""

    # coordinates
    width: str = "width"
    init: str = "init"
    data: str = "data"
    block: str = "block"
    time: str = "time"
    probe: str = "probe"
    # per replica: the results
    output: str = "output"
    risk: str = "risk"
    # per unit: the record (schemas 2 and 3), and its fields as variables (arrays of their own in schema 1)
    unit: str = "unit"
    done: str = "done"
    unit_wall_time: str = "unit_wall_time"
    unit_node: str = "unit_node"
    unit_writes: str = "unit_writes"
    # the limit and its predictions (a sampled limit's also have "<name>_se", se_name)
    h: str = "h"
    nvar_poisson: str = "nvar_poisson"
    nvar_iid: str = "nvar_iid"
    var_init_coef: str = "var_init_coef"
    f: str = "f"
    pi_probe: str = "pi_probe"
    probe_window: str = "probe_window"
    risk_h: str = "risk_h"
    nvar_risk_poisson: str = "nvar_risk_poisson"
    nvar_risk_iid: str = "nvar_risk_iid"
    var_risk_init_coef: str = "var_risk_init_coef"


VAR = StoreVariables()
COORDS = (VAR.width, VAR.init, VAR.data, VAR.block, VAR.time, VAR.probe)
PER_REPLICA = (VAR.output, VAR.risk)  # (width, init, data, ...): one chunk per unit
RECORD_FIELDS = (VAR.done, VAR.unit_wall_time, VAR.unit_node, VAR.unit_writes)  # what open_store presents
PER_UNIT = frozenset(PER_REPLICA + (VAR.unit,) + RECORD_FIELDS)  # results and records: written unit by unit
PROBE_PREDICTIONS = (VAR.h, VAR.nvar_poisson, VAR.nvar_iid, VAR.var_init_coef)  # (time, probe)
TARGET_PREDICTIONS = (VAR.f, VAR.pi_probe)  # (probe,)
RISK_PREDICTIONS = (VAR.risk_h, VAR.nvar_risk_poisson, VAR.nvar_risk_iid, VAR.var_risk_init_coef)  # (time,)
PREDICTION_NAMES = PROBE_PREDICTIONS + TARGET_PREDICTIONS + RISK_PREDICTIONS


def se_name(name: str) -> str:
    """The Monte Carlo standard error of prediction ``name`` (a sampled or AR(1) limit's): ``<name>_se``."""
    return f"{name}_se"


SE_NAMES = tuple(se_name(n) for n in PROBE_PREDICTIONS + RISK_PREDICTIONS)
VALUE_WINDOW_DIMS = (VAR.probe, "lag", "input")  # an AR(1) store's probe_window: its input values

# Errors a damaged chunk raises when decoded: a crc32c mismatch (ValueError), a broken Zstd frame
# (RuntimeError, old stores without checksums).  Transport errors are neither and are not caught.
DECODE_ERRORS = (ValueError, RuntimeError)


# --------------------------------------------------------------------------- digests

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
    ndim = {VAR.output: 5, VAR.risk: 4}
    return {name: f"{name}/" + ".".join(map(str, (wi, i, b) + (0,) * (ndim[name] - 3)))
            for name in PER_REPLICA if name in names}


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


# --------------------------------------------------------------------------- the layout, checked on every read

_LAYOUT = {  # name -> (dtype kind, fill value); a prediction's "<name>_se" is laid out as the prediction
    **{n: ("f", "nan") for n in (VAR.output, VAR.risk, VAR.unit_wall_time) + PREDICTION_NAMES},
    VAR.time: ("f", 0.0),
    **{n: ("i", 0) for n in (VAR.width, VAR.init, VAR.data, VAR.block, VAR.probe_window, VAR.unit_writes)},
    **{n: ("T", "") for n in (VAR.probe, VAR.unit, VAR.unit_node)},
    VAR.done: ("b", False),
}
_PER_UNIT_DIMS = (VAR.width, VAR.init, VAR.block)
_DIMS = {**{n: (n,) for n in COORDS},
         VAR.output: (VAR.width, VAR.init, VAR.data, VAR.time, VAR.probe),
         VAR.risk: (VAR.width, VAR.init, VAR.data, VAR.time),
         **{n: _PER_UNIT_DIMS for n in (VAR.unit, VAR.unit_wall_time, VAR.unit_node, VAR.unit_writes)},
         VAR.done: (VAR.width, VAR.init, VAR.data), VAR.probe_window: (VAR.probe, "lag"),
         **{n: (VAR.probe,) for n in TARGET_PREDICTIONS},
         **{n: (VAR.time, VAR.probe) for n in PROBE_PREDICTIONS},
         **{n: (VAR.time,) for n in RISK_PREDICTIONS}}
_VALUE_WINDOWS = (("f", "nan"), VALUE_WINDOW_DIMS)  # an AR(1) store's probe_window: (layout, dims)
_CODECS = {"bytes", "zstd", "crc32c", "vlen-utf8"}  # what distntk writes; anything else could change values
_DERIVED = {"seed": ("seed",), "engine": ("engine",), "beta": ("model", "beta"), "alpha": ("model", "alpha"),
            "T": ("training", "T"), "L": ("training", "L"), "block": ("replicas", "block")}


def dimensions(name: str) -> tuple:
    """The dimensions distntk writes variable ``name`` with (a prediction's ``_se``: the prediction's;
    ``probe_window``: the state windows', an AR(1) store's value windows have :data:`VALUE_WINDOW_DIMS`)."""
    return _DIMS[name[:-3] if name.endswith("_se") else name]


def in_layout(name: str) -> bool:
    """Whether ``name`` is a variable distntk writes (a prediction's ``_se`` included)."""
    return (name[:-3] if name.endswith("_se") else name) in _LAYOUT


def _edited(path, what: str) -> StoreError:
    return StoreError(f"{path}: {what} (edited metadata; recreate the store)")


def required_arrays(canonical: dict, schema: int) -> list[str]:
    """The arrays a store of ``canonical`` must hold (a sampled limit's ``*_se`` are not required)."""
    risk = bool(canonical.get("training", {}).get("record_risk", True))
    names = list(COORDS) + [VAR.output] + ([VAR.risk] if risk else [])
    names += [VAR.unit] if schema >= 2 else list(RECORD_FIELDS)
    names += list(PROBE_PREDICTIONS + TARGET_PREDICTIONS) + [VAR.probe_window]
    return names + (list(RISK_PREDICTIONS) if risk else [])


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
        if name == VAR.probe_window and native.kind == "f":
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


def solver_attrs(attrs: dict) -> dict:
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
        v = np.ascontiguousarray(v, dtype=np.int64 if name == VAR.probe_window and v.dtype.kind != "f" else np.float64)
        h.update(f"{name}|{v.shape}|".encode())
        h.update(v.data)
    solver = {k: v for k, v in solver_attrs(attrs).items() if k != "kernel_seconds"}
    h.update(json.dumps(solver, sort_keys=True, default=str).encode())
    return h.hexdigest()


def prediction_names(names) -> list[str]:
    """The prediction arrays among ``names`` (array names of a store), in a fixed order."""
    return sorted(n for n in names if n in PREDICTION_NAMES + SE_NAMES + (VAR.probe_window,))


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
    from ..ar1 import probe_labels

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
    want = {VAR.width: rep.get("widths"), VAR.init: range(rep.get("n_init", 0)),
            VAR.data: range(rep.get("n_data", 0)), VAR.time: tr.get("times"),
            VAR.block: range(-(-rep.get("n_data", 0) // rep.get("block", 1))) if rep.get("block") else None,
            VAR.probe: labels, VAR.probe_window: windows}
    for name, v in values.items():
        w = want.get(name)
        if w is None or v is None or isinstance(v, Exception):
            continue
        got = np.asarray(v)
        if name == VAR.probe_window and got.dtype.kind != ("f" if is_ar1(canonical) else "i"):
            raise _edited(path, f"coordinate 'probe_window' has dtype {got.dtype}, not the "
                                f"{'float64 value windows of an AR(1)' if is_ar1(canonical) else 'int64 state windows'}"
                                " store")
        w = np.asarray(list(w) if isinstance(w, range) else w, dtype=got.dtype if got.dtype.kind != "T" else str)
        if got.shape != w.shape or not (got == w).all():
            raise _edited(path, f"coordinate {name!r} is not the canonical spec's ({one_line(repr(got.tolist()), 60)})")


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


# --------------------------------------------------------------------------- unit records, and which units are done

def decode_records(recs: np.ndarray, where=None) -> tuple[dict, dict]:
    """The unit records ``recs`` (``(width, init, block)`` JSON strings, ``""`` where there is none) decoded.

    Returns ``(fields, unparsable)``: ``fields`` maps ``done`` (the record is there and parses: the unit is
    done), ``unit_writes``, ``unit_wall_time``, ``unit_node`` and ``unit_digest`` (its chunks' digests, or
    None) to ``(width, init, block)`` arrays; ``unparsable`` maps the index ``(wi, i, b)`` of each record that
    does not parse to why (that unit is not done).  ``where``: the indices to decode (default: all).
    """
    shape = recs.shape
    wall, node = np.full(shape, np.nan), np.full(shape, "", dtype=object)
    writes, done = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=bool)
    digest = np.full(shape, None, dtype=object)
    bad = {}
    for idx in (np.ndindex(shape) if where is None else where):
        text = recs[idx]
        if not text:
            continue
        try:
            rec = json.loads(str(text))
            writes[idx], wall[idx], node[idx] = int(rec["writes"]), rec["wall_time"], rec["node"]
            digest[idx] = rec.get("digest")
        except (ValueError, KeyError, TypeError, AttributeError):
            bad[tuple(idx)] = "unit record does not parse"
            continue
        done[idx] = True
    return {VAR.done: done, VAR.unit_writes: writes, VAR.unit_wall_time: wall, VAR.unit_node: node,
            "unit_digest": digest}, bad


def done_replicas(units_done: np.ndarray, block: int, n_data: int) -> np.ndarray:
    """``done`` per replica ``(width, init, data)`` from ``done`` per unit ``(width, init, block)``."""
    return np.repeat(np.asarray(units_done, dtype=bool), block, axis=2)[:, :, :n_data]


def done_units(done, block: int | None = None) -> np.ndarray:
    """Which work units are done: ``(width, init, block)`` booleans, a unit done iff every replica of its data
    block is marked done.

    ``done``: the ``(width, init, data)`` ``done`` array, with the store's ``block``; or a store's Dataset
    (:func:`distntk.store.open_store`, a checked or summarised one), whose ``done`` variable and ``block``
    attribute are used.  The one answer to "which units are done": a resume's plan
    (:meth:`~distntk.store.reader.StoreReader.pending`), ``distntk verify``, the query's progress and
    :func:`distntk.missing_units` all ask it.
    """
    if hasattr(done, "data_vars"):  # a Dataset
        ds = done
        done = ds[VAR.done].transpose(VAR.width, VAR.init, VAR.data).values
        block = int(ds.attrs["block"]) if block is None else block
    d = np.asarray(done, dtype=bool)
    W, I, R = d.shape
    block = max(1, int(block if block is not None else R))
    nb = -(-R // block)
    if nb * block > R:  # the short last block: its missing replicas count as done
        d = np.concatenate([d, np.ones((W, I, nb * block - R), dtype=bool)], axis=2)
    return d.reshape(W, I, nb, block).all(axis=3)
