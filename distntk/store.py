"""Result stores: one Zarr v3 group per experiment, pre-allocated, written unit by unit.

Layout (documented in the README, "Result store schema")::

    dims    width (W), init (I), data (R = n_data), time (n_t), probe (P), lag (L),
            block (ceil(R / block))
    coords  width, init, data, block (int64), time (float64), probe (str window label)
    output  (width, init, data, time, probe) float64   NaN until written
    risk    (width, init, data, time)        float64   when the spec records the risk
    done    (width, init, data)              bool      set AFTER the unit's data
    unit_wall_time (width, init, block) float64 s, NaN until done
    unit_node      (width, init, block) str   Ray node id that computed the unit, "" until done
    unit_writes    (width, init, block) int64 times the unit was written (1 after a clean run)
    h, nvar_poisson, nvar_iid, var_init_coef (time, probe); f, pi_probe (probe);
    probe_window (probe, lag); risk_h, nvar_risk_poisson, nvar_risk_iid, var_risk_init_coef (time)

A work unit ``(width, init, data block)`` is exactly one chunk of every per-replica
array (chunks ``(1, 1, block, ...)``) and one element of every per-unit array
(chunks ``(1, 1, 1)``), so a unit's writes never touch another unit's chunks and a
unit rewritten after a crash replaces whole chunks.  Write order per unit: data,
then the unit's wall time, node and write counter, then ``done``; a unit is done
iff its ``done`` region is all True.

Locations are local paths or fsspec URLs (``memory://``, ``s3://``, ``gs://``);
every open goes through :func:`_zarr_group`, which hands the string and the
``storage_options`` to zarr (``LocalStore`` for paths, ``FsspecStore`` for URLs).
Without ``storage_options`` the backend configures itself from the standard
environment (for s3fs, botocore's ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

On object storage each chunk and each ``zarr.json`` is one object, written by
one PUT.  A unit's selection covers its chunks exactly (the short last block is
the whole edge chunk), so zarr writes them without reading them first: no
read-modify-write, and two units never share an object.  The driver is the only
writer (Ray workers never open the store), so the group ``zarr.json`` that
:meth:`ResultStore.log` rewrites has no concurrent writer either.  Metadata are
not consolidated (that is not part of Zarr v3): every reader sees the
``zarr.json`` files themselves, so nothing goes stale across a resume.

Whatever a filesystem raises (``OSError``, a missing backend package, a
transport error such as botocore's ``EndpointConnectionError``) becomes a
one-line :class:`StoreError`; creating a store first writes and removes a probe
object, so an unwritable location fails before the limit is solved.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import xarray as xr
import zarr

from ._text import one_line
from .experiment import Experiment, Unit
from .spec import Spec, SpecError, canonical_json, parse_spec, spec_diff

__all__ = ["StoreError", "ResultStore", "open_store", "open_result_store", "create_store", "open_or_create",
           "store_spec"]

_ZARR_FORMAT = 3


class StoreError(RuntimeError):
    """A store that cannot be opened, created or written; one-line message."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _version(pkg: str) -> str:
    try:
        return version(pkg)
    except PackageNotFoundError:  # pragma: no cover - all are declared dependencies
        return "unknown"


def _is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def _protocol(path) -> str:
    return str(path).split("://", 1)[0].lower() if "://" in str(path) else "file"


# fsspec protocol -> (the package that implements it, the distntk extra that installs it)
_BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
# Top-level packages whose exceptions fsspec backends let through unwrapped (e.g. botocore's
# EndpointConnectionError for an unreachable endpoint, google.auth's errors for missing credentials).
_TRANSPORT_PACKAGES = {"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "fsspec", "requests",
                       "urllib3"}
_PROBE = ".distntk-write-test"


@contextlib.contextmanager
def _storage_errors(path, action: str, catch: tuple = (OSError, ValueError)):
    """Turn what the filesystem raises while we ``action`` (``"open store"``, ...) into a one-line StoreError.

    ``catch``: the built-in exceptions that count as storage errors here (zarr reports a node
    that is missing or in the way as ``ValueError``; a data write leaves ``ValueError`` alone).
    """
    try:
        yield
    except StoreError:
        raise
    except ImportError as exc:
        proto = _protocol(path)
        if proto not in _BACKENDS:
            raise StoreError(f"cannot {action} {path}: {one_line(exc)}") from None
        package, extra = _BACKENDS[proto]
        raise StoreError(f"{proto}:// stores need {package}, which is not installed: "
                         f"pip install 'distntk[{extra}]'") from None
    except catch as exc:
        raise StoreError(f"cannot {action} {path}: {one_line(exc)}") from None
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
    return zarr.open_group(str(path), mode=mode, **kwargs)


_NOT_FOUND = (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError)


def _exists(path, storage_options=None) -> bool:
    with _storage_errors(path, "open store"):
        try:
            _zarr_group(path, "r", storage_options)
            return True
        except _NOT_FOUND:
            return False


def _probe_write(path, storage_options=None) -> None:
    """Write and remove a small object where the store goes: fail before the limit is solved, not after."""
    with _storage_errors(path, "create store at"):
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


def open_store(path, storage_options: dict | None = None) -> xr.Dataset:
    """The store at ``path`` as a lazily loaded :class:`xarray.Dataset`.

    ``storage_options`` go to the fsspec backend of a URL (``endpoint_url``, ``key``, ...);
    without them the backend reads its standard environment.
    """
    g = open_result_store(path, mode="r", storage_options=storage_options).group
    with _storage_errors(path, "read store"):
        return xr.open_zarr(g.store, consolidated=False, zarr_format=_ZARR_FORMAT, chunks=None)


def store_spec(ds: xr.Dataset) -> Spec:
    """The :class:`~distntk.spec.Spec` a store was made from, rebuilt from its ``spec`` attribute.

    The experiment it carries recomputes anything the store does not hold (the
    model's parameters for :func:`distntk.estimate.memory_contraction`, the
    limit).  The rebuilt spec must hash to the store's ``spec_hash``: a spec
    that resolves differently now (e.g. other defaults in another distntk
    version) would describe another experiment.  A ``module:function`` target
    must be importable here; its code itself is not part of the hash.
    """
    a = ds.attrs
    name = str(a.get("name") or "store")
    if not a.get("spec") or not a.get("spec_hash"):
        raise StoreError(f"store {name!r} has no spec attributes; expected a store written by distntk run")
    try:
        spec = parse_spec(str(a["spec"]), default_name=name, source=f"spec of store {name!r}")
    except SpecError as exc:
        raise StoreError(f"the spec stored in {name!r} no longer parses: {one_line(exc)}") from None
    if spec.hash != a["spec_hash"]:
        raise StoreError(f"the spec stored in {name!r} now hashes to {spec.hash[:12]}, not the store's "
                         f"{str(a['spec_hash'])[:12]} (made by distntk {a.get('distntk_version', '?')})")
    return spec


@dataclass(eq=False)
class ResultStore:
    """A distntk store opened for reading or writing. Open it with the functions below."""

    path: str
    group: zarr.Group
    _arrays: dict = field(default_factory=dict, repr=False)
    _writes: np.ndarray | None = field(default=None, repr=False)
    _widths: list | None = field(default=None, repr=False)

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def canonical(self) -> dict:
        return json.loads(self.group.attrs["spec_canonical"])

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    @property
    def widths(self) -> list[int]:
        if self._widths is None:  # a coordinate, fixed at creation: read once, not once per unit
            with _storage_errors(self.path, "read store"):
                self._widths = [int(w) for w in self._array("width")[:]]
        return list(self._widths)

    @property
    def block(self) -> int:
        return int(self.group.attrs["block"])

    def _region(self, unit: Unit):
        try:
            wi = self.widths.index(unit.width)
        except ValueError:
            raise StoreError(f"{self.path}: width {unit.width} is not in the store's widths {self.widths}") from None
        return wi, unit.init, slice(unit.data_start, unit.data_stop), unit.data_start // self.block

    def done_mask(self) -> np.ndarray:
        """``done`` as a NumPy array ``(width, init, data)``."""
        with _storage_errors(self.path, "read store"):
            return np.asarray(self._array("done")[:], dtype=bool)

    def pending(self, units) -> list[Unit]:
        """The units among ``units`` whose replicas are not all marked done."""
        done = self.done_mask()
        out = []
        for u in units:
            wi, i, sl, _ = self._region(u)
            if not done[wi, i, sl].all():
                out.append(u)
        return out

    def write_unit(self, unit: Unit, result: dict, wall_time: float, node: str) -> None:
        """Write one unit: its data, then wall time, node and write count, then ``done``."""
        wi, i, sl, b = self._region(unit)
        with _storage_errors(self.path, "write store", catch=(OSError,)):
            if self._writes is None:
                self._writes = np.asarray(self._array("unit_writes")[:], dtype=np.int64)
            self._array("output")[wi, i, sl] = result["output"]
            if "risk" in result and "risk" in self.group:
                self._array("risk")[wi, i, sl] = result["risk"]
            self._array("unit_wall_time")[wi, i, b] = float(wall_time)
            self._array("unit_node")[wi, i, b] = str(node)
            self._writes[wi, i, b] += 1
            self._array("unit_writes")[wi, i, b] = self._writes[wi, i, b]
            self._array("done")[wi, i, sl] = True

    def log(self, event: str) -> None:
        """Append ``event`` to the CF ``history`` attribute and refresh ``updated``."""
        now = _now()
        history = self.group.attrs.get("history", "")
        with _storage_errors(self.path, "write store", catch=(OSError,)):
            self.group.attrs.update({"updated": now, "history": f"{history}\n{now} {event}".lstrip("\n")})


def open_result_store(path, mode: str = "r+", storage_options: dict | None = None) -> ResultStore:
    """Open an existing distntk store (``mode`` ``"r"`` or ``"r+"``)."""
    with _storage_errors(path, "open store"):
        try:
            g = _zarr_group(path, mode, storage_options)
        except _NOT_FOUND:
            raise StoreError(f"no distntk store at {path}") from None
    if "spec_hash" not in g.attrs or "spec_canonical" not in g.attrs:
        raise StoreError(f"{path} is a Zarr group without distntk attributes (not a distntk store, or its "
                         "creation was interrupted: remove it to start over)")
    return ResultStore(str(path), g)


def open_or_create(path, spec: Spec, storage_options: dict | None = None, command: str = "") -> ResultStore:
    """Open the store for ``spec`` at ``path``, creating it if needed.

    An existing store must come from the same canonical spec; otherwise the
    error names the keys that differ.
    """
    if _exists(path, storage_options):
        store = open_result_store(path, "r+", storage_options)
        if store.attrs["spec_hash"] != spec.hash:
            keys = spec_diff(store.canonical, spec.canonical)
            raise StoreError(f"spec differs from the store's in keys: {', '.join(keys) or '(hash only)'} "
                             f"(store {path}; use another --store to run this spec)")
        return store
    return create_store(path, spec, storage_options, command=command)


def _check_local_target(path: str) -> None:
    if _is_url(path):
        return
    p = str(path).removeprefix("file://")
    if os.path.isfile(p):
        raise StoreError(f"cannot create store at {path}: a file is in the way")
    if os.path.isdir(p) and os.listdir(p):
        raise StoreError(f"cannot create store at {path}: directory exists, is not empty and is not a distntk store")


def create_store(path, spec: Spec, storage_options: dict | None = None, command: str = "") -> ResultStore:
    """Create and pre-allocate the store of ``spec``, predictions included (solves the limit)."""
    _check_local_target(str(path))
    _probe_write(path, storage_options)
    exp = spec.experiment
    pred = exp.predictions()
    with _storage_errors(path, "create store at"):
        g = _zarr_group(path, "w-", storage_options)
        _allocate(g, exp, pred)
        g.attrs.update(_attrs(spec, exp, pred, command))
    return ResultStore(str(path), g)


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
                  f"gradients, kernel '{exp.kernel}'; limit by quadrature, MODEL.md sections 2-5)",
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
        "block": int(exp.block),
        "kernel": exp.kernel,
        "memory_bound": num(pa["memory_bound"]),
        "kernel_error": num(pa["kernel_error"]),
        "kernel_method": str(pa.get("kernel_method", "")),
        "kernel_nodes": int(pa.get("kernel_nodes", 0)),
        "kernel_seconds": num(pa.get("kernel_seconds", float("nan"))),
        "kernel_tol": num(pa.get("kernel_tol", float("nan"))),
        "n_histories": int(pa.get("n_histories", 0)),
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
    "h": ("kernel limit h_t(z), MODEL 4.3", "1"),
    "nvar_poisson": ("predicted N Var(g|theta), Poisson equation, MODEL 5.1", "1"),
    "nvar_iid": ("predicted N Var(g|theta) if data were i.i.d., MODEL 5.1", "1"),
    "var_init_coef": ("Var_theta E[g|theta] / N^(1-2 beta), MODEL 5.2", "1"),
    "f": ("target f(z) on the probe windows", "1"),
    "pi_probe": ("stationary probability pi_L(z) of the probe windows", "1"),
    "probe_window": ("probe window states, oldest first", None),
    "risk_h": ("stationary risk of the limit h_t", "1"),
    "nvar_risk_poisson": ("predicted N Var(risk|theta), Poisson equation", "1"),
    "nvar_risk_iid": ("predicted N Var(risk|theta) if data were i.i.d.", "1"),
    "var_risk_init_coef": ("Var_theta E[risk|theta] / N^(1-2 beta)", "1"),
    "width": ("network width N", None),
    "init": ("initialisation index", None),
    "data": ("data sequence index", None),
    "time": ("training time t = k / N", "1"),
    "probe": ("probe window label (state digits, oldest first)", None),
    "block": ("work unit (data block) index", None),
}


def _meta(name: str) -> dict:
    long_name, units = _LONG_NAMES.get(name, (name, None))
    return {"long_name": long_name, **({"units": units} if units else {})}


def _allocate(g: zarr.Group, exp: Experiment, pred: xr.Dataset) -> None:
    W, I, R = len(exp.widths), exp.n_init, exp.n_data
    nt, P, B = len(exp.times), len(exp.probes), exp.block
    nb = -(-R // B)

    def arr(name, dims, shape, chunks, dtype, fill, data=None):
        a = g.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                           dimension_names=dims, attributes=_meta(name))
        if data is not None:
            a[...] = data
        return a

    arr("width", ("width",), (W,), (W,), "int64", 0, np.asarray(exp.widths, dtype=np.int64))
    arr("init", ("init",), (I,), (I,), "int64", 0, np.arange(I, dtype=np.int64))
    arr("data", ("data",), (R,), (R,), "int64", 0, np.arange(R, dtype=np.int64))
    arr("block", ("block",), (nb,), (nb,), "int64", 0, np.arange(nb, dtype=np.int64))
    arr("time", ("time",), (nt,), (nt,), "float64", 0.0, np.asarray(exp.times, dtype=float))
    arr("probe", ("probe",), (P,), (P,), str, "", np.asarray(exp.probe_labels(), dtype=str))

    arr("output", ("width", "init", "data", "time", "probe"), (W, I, R, nt, P), (1, 1, B, nt, P), "float64", np.nan)
    if exp.record_risk:
        arr("risk", ("width", "init", "data", "time"), (W, I, R, nt), (1, 1, B, nt), "float64", np.nan)
    arr("done", ("width", "init", "data"), (W, I, R), (1, 1, B), "bool", False)
    arr("unit_wall_time", ("width", "init", "block"), (W, I, nb), (1, 1, 1), "float64", np.nan)
    arr("unit_node", ("width", "init", "block"), (W, I, nb), (1, 1, 1), str, "")
    arr("unit_writes", ("width", "init", "block"), (W, I, nb), (1, 1, 1), "int64", 0)

    for name in ("h", "nvar_poisson", "nvar_iid", "var_init_coef"):
        arr(name, ("time", "probe"), (nt, P), (nt, P), "float64", np.nan, pred[name].values)
    for name in ("f", "pi_probe"):
        arr(name, ("probe",), (P,), (P,), "float64", np.nan, pred[name].values)
    for name in ("risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef"):
        arr(name, ("time",), (nt,), (nt,), "float64", np.nan, pred[name].values)
    arr("probe_window", ("probe", "lag"), (P, exp.L), (P, exp.L), "int64", 0, np.asarray(exp.probes, dtype=np.int64))
