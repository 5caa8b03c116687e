"""A catalog of stores: every distntk store under one root, read as one table.

A *root* is a local directory or an fsspec prefix (``s3://bucket/campaign``) whose
children ``<member>.zarr`` are distntk stores: the root of a sweep
(:mod:`distntk.sweep`), or any folder of stores.  A sweep root also holds
``sweep.json``, the manifest that names its members with their spec hashes, so
that members not started yet are known and a changed sweep is refused.

:func:`open_catalog` lists the root (one listing), reads each store's attributes (one
small object per store, all at once, spec hash checked) and returns a :class:`Catalog`:

* ``catalog.stores``: member name -> ``xarray.Dataset``, each opened lazily
  (``xarray.open_zarr``) on first access;
* ``catalog.tree``: an ``xarray.DataTree``, one child node per store, with the
  store's flattened canonical spec (dotted keys) in the node's attrs;
* ``catalog.rows(...)``: the tidy table, one row per (store, width, time, probe),
  with the fields of ``distntk query`` and every spec key that differs across the
  stores as a column named by its dotted key (``model.beta``); each store is read
  and checked as ``distntk query`` reads it (:func:`distntk.verify.open_checked_many`:
  checksums, non-finite values, write counts, outliers, predictions, spec hash),
  damaged units left out and a store that cannot be read whole left out
  (``catalog.damaged`` names both);
* ``catalog.problems``: members named by the manifest but absent, and children
  that are not readable distntk stores, each with the reason.

The summaries are computed by :func:`distntk.query.summary`, the one estimator
every command uses.  Reading is the cost of a catalog: every array a summary needs
is read whole (:func:`distntk.verify.open_checked_many`), and nothing else is opened.
That reading is CPU-bound Python inside zarr, so a catalog of hundreds of stores is
shared between this process and worker processes, one per further core, in small
batches taken by whoever is free (:func:`_read_summarised`).  A worker is started
isolated (``python -I``): neither the current directory (a ``json.py`` there), nor
``PYTHONPATH`` as such, nor the user's site-packages reach it; it finds distntk where
this process found it (the package's parent directory, then absolute ``PYTHONPATH``
entries, put on its path explicitly), and everything else in the interpreter's own
site-packages (a virtual environment's included).

In a sweep root (one with ``sweep.json``) a child store is listed only as the member
whose name and spec hash the manifest records: a store of another spec under a
member's name, or a store that is no member, is left out and named in
``catalog.problems``.  A store whose attributes are readable but cannot be summarised
(a doctored value) is left out and named in ``catalog.damaged``; it never stops the
table of the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import DistntkError

if TYPE_CHECKING:
    import pandas as pd

import csv
import io
import json
import math
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import xarray as xr

from ._text import one_line, printable
from .rows import QueryError, progress, summary
from .spec import flat_keys, spec_diff
from .store import (
    StoreError,
    check_storage_options,
    filesystem,
    is_url,
    join_location,
    open_store,
    storage_errors,
)
from .verify import damage_warning, open_checked_many, store_attrs_many

__all__ = ["Catalog", "CatalogError", "open_catalog", "read_manifest", "write_manifest", "is_catalog_root",
           "format_catalog", "MANIFEST"]

MANIFEST = "sweep.json"
_STORES_PER_WORKER = 200  # a worker needs ~1.5 s for its imports, ~150 stores read meanwhile: it helps from ~200 on
_MAX_WORKERS = 8
_TASK_STORES = 25  # stores per batch handed to whoever is free (_read_summarised)


class CatalogError(DistntkError, RuntimeError):
    """A root that cannot be listed, or a sweep that does not match its root; one-line message."""


def _fs(root: str, storage_options: dict | None):
    with _errors(root, "list"):
        return filesystem(root, storage_options)


def _errors(root, action):
    """A filesystem or transport error while we ``action`` the root: one line (:func:`distntk.store.storage_errors`)."""
    return storage_errors(root, action, error=CatalogError)


def read_manifest(root: str, storage_options: dict | None = None) -> dict | None:
    """The sweep manifest of ``root``, or ``None`` when the root holds none."""
    fs, path = _fs(root, storage_options)
    with _errors(root, "read the sweep manifest of"):
        if not fs.exists(f"{path}/{MANIFEST}"):
            return None
        text = fs.cat_file(f"{path}/{MANIFEST}")
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError):
        manifest = None
    why = _manifest_problem(manifest)
    if why:
        raise CatalogError(f"{join_location(root, MANIFEST)} is not a distntk sweep manifest: {why}")
    return manifest


def _manifest_problem(manifest) -> str:
    """Why ``manifest`` is not a sweep manifest (``""`` when it is one)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    members, keys = manifest.get("members"), manifest.get("keys", [])
    if not isinstance(members, list):
        return "no list of members"
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return "its keys are not a list of strings"
    for k, m in enumerate(members):
        if not (isinstance(m, dict) and isinstance(m.get("name"), str) and m["name"]
                and isinstance(m.get("spec_hash"), str)):
            return f"member {k} is not an object with a name and a spec_hash"
    return ""


def write_manifest(root: str, manifest: dict, storage_options: dict | None = None) -> None:
    """Record ``manifest`` in ``root``; refuse a root whose recorded sweep differs (what differs named)."""
    old = read_manifest(root, storage_options)
    if old is not None:
        if old.get("members") == manifest["members"]:
            return
        raise CatalogError(f"the sweep differs from the one recorded in {root}: {_manifest_diff(old, manifest)} "
                           "(use another --store root to run this sweep)")
    fs, path = _fs(root, storage_options)
    with _errors(root, "write the sweep manifest of"):
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(f"{path}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode())


def _manifest_diff(old: dict, new: dict) -> str:
    o = {m["name"]: m["spec_hash"] for m in old["members"]}
    n = {m["name"]: m["spec_hash"] for m in new["members"]}
    parts = []
    if set(o) - set(n):
        parts.append(f"members no longer in the sweep: {_names(set(o) - set(n))}")
    if set(n) - set(o):
        parts.append(f"new members: {_names(set(n) - set(o))}")
    changed = sorted(k for k in set(o) & set(n) if o[k] != n[k])
    if changed:
        parts.append(f"members whose spec changed: {_names(changed)}")
    if old.get("keys") != new.get("keys"):
        parts.append(f"swept keys {old.get('keys')} -> {new.get('keys')}")
    return "; ".join(parts) or "member order"


def _names(names, limit: int = 3) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


class _LazyStores(Mapping):
    """Member name -> ``xarray.Dataset``, each store opened (lazily, metadata only) on first access."""

    def __init__(self, locations: dict, storage_options: dict | None, opened: dict | None = None):
        self._locations, self._options = locations, storage_options
        self._opened = {} if opened is None else opened  # shared with the catalogs derived by `where`

    def __getitem__(self, name):
        if name not in self._opened:
            self._opened[name] = open_store(self._locations[name], self._options)
        return self._opened[name]

    def __iter__(self):
        return iter(self._locations)

    def __len__(self):
        return len(self._locations)

    def only(self, names) -> _LazyStores:
        return _LazyStores({n: self._locations[n] for n in names}, self._options, self._opened)


@dataclass(frozen=True)
class Catalog:
    """The stores under one root; see the ``distntk.catalog`` module docstring.

    Build it with ``open_catalog``.  Reading is lazy: a store is opened on first access, and read
    and checked whole only by ``rows``, ``frame`` or ``checked`` (once; the results are kept).

    Parameters
    ----------
    root : str
        The root: a local directory or an fsspec prefix.
    stores : Mapping
        Member name -> ``xarray.Dataset``, each store opened lazily on first access.
    specs : dict
        Member name -> its canonical spec as ``{dotted key: value}``.
    problems : dict
        Member name -> why it is missing or left out: a manifest's member not started, a child
        that is not a readable distntk store, or not the member the manifest records.
    manifest : dict or None, optional
        The sweep manifest (``sweep.json``) of a sweep root; ``None`` for any other folder.
    storage_options : dict or None, optional
        Options of the fsspec backend of a URL root.
    attrs : dict, optional
        Member name -> the store's attributes.
    """

    root: str
    stores: Mapping  # member name -> lazily opened xr.Dataset
    specs: dict  # member name -> {dotted key: value} of its canonical spec
    problems: dict  # member name -> reason it is missing or unreadable
    manifest: dict | None = None
    storage_options: dict | None = field(default=None, repr=False)
    attrs: dict = field(default_factory=dict, repr=False)  # member name -> the store's attributes
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def location(self, name: str) -> str:
        """Where member ``name``'s store lives.

        Parameters
        ----------
        name : str
            A member's name.

        Returns
        -------
        str
            ``<root>/<name>.zarr``.
        """
        return join_location(self.root, f"{name}.zarr")

    def checked(self, name: str) -> tuple[xr.Dataset, dict]:
        """Member ``name`` read and checked, damaged units left out (``distntk.verify.open_checked_many``).

        What ``rows`` and the sweep report read; read once, then kept.

        Parameters
        ----------
        name : str
            A member's name.

        Returns
        -------
        dataset : xarray.Dataset
            The coordinates, ``output``, ``risk``, ``done`` and the predictions, the damaged
            units marked not done.
        damaged : dict
            Unit -> why it was left out.

        Raises
        ------
        distntk.store.StoreError
            If the store cannot be read whole (lost predictions, a spec that does not match its
            hash).
        """
        self._read([name])
        got = self._cache[name]
        if isinstance(got, StoreError):
            raise got
        return got

    def _read(self, names) -> None:
        todo = [n for n in names if n not in self._cache]
        if todo:
            self._cache.update(zip(todo, _checked_many([self.location(n) for n in todo], self.storage_options),
                                   strict=True))

    @property
    def damaged(self) -> dict:
        """Member name -> one line naming its damaged units, or why it cannot be read, for the members read so far."""
        out = {}
        for n, got in list(self._cache.items()):
            if isinstance(got, StoreError):
                out[n] = one_line(f"not summarised: {got}", 600)
            elif got[1]:
                out[n] = damage_warning(got[1])
        return out

    @property
    def flagged(self) -> dict:
        """Member name -> one line naming its units flagged as outliers (kept: not damage), for the members read."""
        return {n: got[0].attrs["distntk_flagged"] for n, got in list(self._cache.items())
                if not isinstance(got, StoreError) and got[0].attrs.get("distntk_flagged")}

    @property
    def keys(self) -> list[str]:
        """The dotted spec keys whose values differ across the stores (swept keys first)."""
        swept = list((self.manifest or {}).get("keys", []))
        names = list(self.specs)
        differ = set()
        for a in names[1:]:
            differ.update(spec_diff(self._canonical(names[0]), self._canonical(a)))
        return swept + sorted(differ - set(swept))

    @property
    def swept(self) -> list[str]:
        """The keys a sweep varies (its manifest's), else ``keys``: the axes of the sweep report."""
        return list(self.manifest["keys"]) if self.manifest else self.keys

    def spec_value(self, name: str, key: str):
        """Member ``name``'s value of a dotted spec key.

        Parameters
        ----------
        name : str
            A member's name.
        key : str
            A dotted spec key (``"model.beta"``), or a table's (``"target"``).

        Returns
        -------
        object
            The value; a table, such as a swept ``"target"``, as the dict of its keys; ``None``
            when the spec has no such key.
        """
        return _value(self.specs[name], key)

    def _canonical(self, name):
        return json.loads(self.attrs[name]["spec_canonical"])

    @property
    def tree(self) -> xr.DataTree:
        """One node per store (lazy datasets), the flattened spec in each node's attrs."""
        nodes = {}
        for name, ds in self.stores.items():
            node = ds.copy()
            node.attrs = {**ds.attrs, **{f"spec:{k}": _attr(v) for k, v in self.specs[name].items()}}
            nodes[f"/{name}"] = node
        tree = xr.DataTree.from_dict(nodes)
        tree.attrs = {"root": self.root, "keys": self.keys,
                      "problems": json.dumps(self.problems, sort_keys=True)}
        return tree

    def where(self, **conditions: object) -> Catalog:
        """The catalog restricted to members whose spec keys equal the given values.

        Values compare as numbers when the spec's value is a number and the given one is a number
        or a string that parses as one.  The stores already read are shared with the new catalog.

        Parameters
        ----------
        **conditions : object
            Dotted spec key -> value, the keys given as ``**{"model.beta": 0.75}``.

        Returns
        -------
        Catalog
            The members whose specs match every condition.

        Raises
        ------
        CatalogError
            If no store's spec has one of the keys: the message names the keys that differ across
            the stores (a typo selects nothing, it does not print an empty table).

        Examples
        --------
        ``0.75``, ``.75``, ``"0.75"`` and ``7.5e-1`` all select ``model.beta = 0.75``:

        >>> catalog = open_catalog("stores/beta-sweep")
        >>> rows = catalog.where(**{"model.beta": "0.75"}).rows(time=2.0)
        """
        unknown = [k for k in conditions if self.specs
                   and all(_value(f, k, _MISSING) is _MISSING for f in self.specs.values())]
        if unknown:
            raise CatalogError(f"--where {printable(unknown[0])}: no store under {printable(self.root)} has this "
                               f"spec key; the keys that differ across its stores: {', '.join(self.keys) or 'none'}")
        keep = [n for n in self.stores if all(_equal(_value(self.specs[n], k, _MISSING), v)
                                               for k, v in conditions.items())]
        stores = self.stores.only(keep) if isinstance(self.stores, _LazyStores) else {n: self.stores[n] for n in keep}
        return Catalog(self.root, stores, {n: self.specs[n] for n in keep}, dict(self.problems), self.manifest,
                       self.storage_options, {n: self.attrs[n] for n in keep if n in self.attrs},
                       {n: self._cache[n] for n in keep if n in self._cache})

    def rows(self, width: int | None = None, time: float | None = None,
             probe: int | str | None = None) -> list[dict]:
        """The tidy table: the ``distntk query`` row fields per (store, width, time, probe), plus the keys.

        Each store is read and checked as ``distntk query`` reads it, damaged units left out; a
        store that cannot be read whole is left out and named in ``damaged``.

        Parameters
        ----------
        width : int or None, optional
            Only this width; ``None``: every width.
        time : float or None, optional
            Only this time of the grid; ``None``: every time.
        probe : int or str or None, optional
            Only this probe, by label (its window, ``"000000"``) or index; ``None``: every probe.

        Returns
        -------
        list of dict
            One row per (store, width, time, probe): ``store``, every key of ``keys`` by its
            dotted name, the ``distntk query`` fields (``distntk.rows.COLUMNS``), ``units_done``
            and ``units``.

        Raises
        ------
        distntk.rows.QueryError
            If a selection is not in a store (a width, time or probe it does not have).
        """
        keys = self.keys
        select = (width, time, probe)
        todo = [n for n in self.stores if n not in self._cache]
        fresh = dict(zip(todo, _read_summarised([self.location(n) for n in todo], self.storage_options, select),
                         strict=True))
        self._cache.update({n: got for n, (got, _) in fresh.items()})
        out = []
        for name in self.stores:
            got = self._cache[name]
            if isinstance(got, StoreError):
                continue  # named by `damaged`, never summarised
            if name in fresh:
                rows = fresh[name][1]
            else:
                try:
                    rows = _store_rows(got[0], select)
                except QueryError:
                    raise
                except Exception as exc:  # as in _summarised: this store is left out and named
                    self._cache[name] = StoreError(f"cannot summarise {self.location(name)}: "
                                                   f"{type(exc).__name__}: {one_line(exc)}")
                    continue
            if isinstance(rows, QueryError):
                raise rows
            base = {"store": name, **{k: _value(self.specs[name], k) for k in keys}}
            out += [{**base, **r} for r in rows]
        return out

    def frame(self, width: int | None = None, time: float | None = None,
              probe: int | str | None = None) -> pd.DataFrame:
        """``rows`` as a ``pandas.DataFrame`` (pandas is imported only here).

        Parameters
        ----------
        width : int or None, optional
            Only this width; ``None``: every width.
        time : float or None, optional
            Only this time of the grid; ``None``: every time.
        probe : int or str or None, optional
            Only this probe, by label or index; ``None``: every probe.

        Returns
        -------
        pandas.DataFrame
            One row per (store, width, time, probe), the columns of ``rows``.
        """
        import pandas as pd

        return pd.DataFrame(self.rows(width, time, probe))


def _value(flat: dict, key: str, default=None):
    """The value of dotted ``key`` in a flattened spec; a table (a swept ``"target"``) as the dict of its keys."""
    if key in flat:
        return flat[key]
    sub = {k[len(key) + 1:]: v for k, v in flat.items() if k.startswith(key + ".")}
    return sub or default


def _store_rows(ds: xr.Dataset, select: tuple) -> list[dict]:
    """``distntk query``'s rows of one checked store, with its units done per width."""
    prog = {p["width"]: p for p in progress(ds)}
    return [{**r, "units_done": prog[r["width"]]["units_done"], "units": prog[r["width"]]["units"]}
            for r in summary(ds, *select)]


def _summarised(locations: list, storage_options: dict | None, select: tuple) -> list:
    """``[(checked store or its StoreError, its rows or their QueryError)]`` for ``locations``, in one process."""
    out = []
    for loc, got in zip(locations, _checked_many(locations, storage_options), strict=True):
        if isinstance(got, StoreError):
            out.append((got, None))
            continue
        try:
            out.append((got, _store_rows(got[0], select)))
        except QueryError as exc:
            out.append((got, exc))
        except Exception as exc:  # a doctored attribute the checks let through: this store, not the table
            out.append((StoreError(f"cannot summarise {loc}: {type(exc).__name__}: {one_line(exc)}"), None))
    return out


def _checked_many(locations: list, storage_options: dict | None) -> list:
    """:func:`~distntk.verify.open_checked_many`, a store that makes it fail otherwise than with its StoreError
    (a doctored attribute its checks let through) isolated: that store gets a StoreError naming it."""
    try:
        return open_checked_many(locations, storage_options)
    except Exception as exc:
        if len(locations) == 1:
            return [StoreError(f"cannot read {locations[0]}: {type(exc).__name__}: {one_line(exc)}")]
        return [got for loc in locations for got in _checked_many([loc], storage_options)]


def _read_summarised(locations: list, storage_options: dict | None, select: tuple, workers: int | None = None) -> list:
    """:func:`_summarised`, shared with worker processes when there are enough stores to pay for them.

    Reading a store is CPU-bound Python in zarr (metadata, codecs, tasks per chunk), so
    threads do not help; processes do, one per core.  This process reads too, and the
    others are ``cores - 1`` workers, each a fresh interpreter running :func:`_worker` (not
    ``multiprocessing``, which would run the caller's main module again).  The stores go
    out in small batches to whoever is free: this process, or a worker (through its
    pipes, pickled) once it has imported distntk (~1.5 s).  A worker not ready when the
    batches run out is stopped, and the batch of a worker that fails is read here: the
    rows are the same whoever reads a store.
    """
    if workers is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        workers = min(cores - 1, _MAX_WORKERS, len(locations) // _STORES_PER_WORKER)
    if workers < 1:
        return _summarised(locations, storage_options, select)
    step = max(1, min(_TASK_STORES, -(-len(locations) // (4 * (workers + 1)))))
    batches = [locations[k:k + step] for k in range(0, len(locations), step)]
    results: list = [None] * len(batches)
    pending, retry, lock = iter(range(len(batches))), [], threading.Lock()

    def take():
        with lock:
            return retry.pop() if retry else next(pending, None)

    def serve(proc, ready):
        k = None
        try:
            pickle.dump((storage_options, select), proc.stdin)
            proc.stdin.flush()
            if pickle.load(proc.stdout) != _READY:  # written by our own worker (as is everything it sends)
                raise RuntimeError("the worker did not start")
            ready.set()
            while (k := take()) is not None:
                pickle.dump(batches[k], proc.stdin)
                proc.stdin.flush()
                results[k] = pickle.load(proc.stdout)
            proc.stdin.close()
        except Exception:  # stopped before it was ready, or failed: its batch, if any, is read here
            proc.kill()
            if k is not None:
                with lock:
                    retry.append(k)
        proc.wait()

    def drain():
        while (k := take()) is not None:
            results[k] = _summarised(batches[k], storage_options, select)

    procs = []
    for _ in range(workers):
        try:
            procs.append((subprocess.Popen(_worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.DEVNULL), threading.Event()))
        except OSError:  # no process to be had: this one reads more
            break
    threads = [threading.Thread(target=serve, args=pr, daemon=True) for pr in procs]
    for t in threads:
        t.start()
    try:
        drain()
    finally:
        for proc, ready in procs:
            if not ready.is_set():
                proc.kill()  # still importing: every batch is taken, it is not needed
        for t in threads:
            t.join()
    drain()  # the batches of workers that failed
    return [got for part in results for got in part]


_READY = "ready"


def _worker_command() -> list[str]:
    """``python -I -c ...`` for :func:`_worker`: isolated from the current directory and the user's site.

    ``-I`` drops the current directory, ``PYTHONPATH`` and the user's site-packages from the path
    and keeps the interpreter's (or virtual environment's) site-packages, where an installed or
    editable distntk is found.  The package's parent directory and the absolute ``PYTHONPATH``
    entries go first on the path explicitly, so that the worker runs the distntk this process runs.
    """
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    paths = list(dict.fromkeys([package_root, *extra]))
    return [sys.executable, "-I", "-c",
            f"import sys; sys.path[:0] = {paths!r}; from distntk.catalog import _worker; _worker()"]


def _worker() -> None:
    """A worker of :func:`_read_summarised`: pickled ``(storage_options, select)`` in, :data:`_READY` out; then
    each pickled batch of locations in, its pickled list of results out, until its input ends."""
    out, sys.stdout = sys.stdout.buffer, sys.stderr  # nothing but the results go to the pipe
    inp = sys.stdin.buffer
    storage_options, select = pickle.load(inp)
    pickle.dump(_READY, out)
    out.flush()
    while True:
        try:
            locations = pickle.load(inp)
        except EOFError:
            return
        pickle.dump(_summarised(locations, storage_options, select), out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


_MISSING = object()


def _number(v) -> float | None:
    """``v`` as a float when it is a number (not a bool) or a string that parses as a finite one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def _equal(a, b) -> bool:
    if isinstance(a, (int, float)) and not isinstance(a, bool) and (x := _number(b)) is not None:
        return float(a) == x
    return a == b


def _attr(v):
    return v if isinstance(v, (str, int, float, bool)) else json.dumps(v, separators=(",", ":"))


def open_catalog(root: str, storage_options: dict | None = None) -> Catalog:
    """The stores under ``root`` (a directory or an fsspec prefix), opened lazily.

    Lists the root once and reads every ``<member>.zarr`` child's attributes (all at once, spec
    hash checked); in a sweep root (one with ``sweep.json``) only the members its manifest
    records are listed.  See the ``distntk.catalog`` module docstring.

    Parameters
    ----------
    root : str
        A local directory or an fsspec prefix (``s3://bucket/campaign``).
    storage_options : dict or None, optional
        Options of the fsspec backend of a URL root (``endpoint_url``, ``key``, ...); not for
        a local path.

    Returns
    -------
    Catalog
        The members that could be listed; the others are named in ``Catalog.problems``.

    Raises
    ------
    CatalogError
        If the root cannot be listed or holds no distntk store, or storage options are given
        with a local path.
    """
    check_storage_options(root, storage_options, error=CatalogError)
    fs, path = _fs(root, storage_options)
    with _errors(root, "list"):
        if not fs.isdir(path):
            raise CatalogError(f"no directory or prefix at {root}; expected a folder of distntk stores")
        children = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    manifest = read_manifest(root, storage_options)
    names = [c[: -len(".zarr")] for c in children if c.endswith(".zarr")]
    problems = {}
    if manifest is not None:
        for m in manifest["members"]:
            if m["name"] not in names:
                problems[m["name"]] = "not started (no store yet)"

    locations, specs, attrs = {}, {}, {}
    recorded = {m["name"]: m["spec_hash"] for m in manifest["members"]} if manifest is not None else None
    for name, got in zip(names, store_attrs_many([join_location(root, f"{n}.zarr") for n in names], storage_options),
                         strict=True):
        if isinstance(got, StoreError):
            problems[name] = one_line(got)
            continue
        if recorded is not None and name not in recorded:
            problems[name] = f"not a member of the sweep recorded in {MANIFEST}; left out"
            continue
        if recorded is not None and got.get("spec_hash") != recorded[name]:
            problems[name] = (f"its spec ({str(got.get('spec_hash'))[:12]}) is not the member's "
                              f"({str(recorded[name])[:12]}) recorded in {MANIFEST}: another spec's store; left out")
            continue
        specs[name] = flat_keys(json.loads(got["spec_canonical"]))  # it parsed and hashed to spec_hash
        locations[name], attrs[name] = join_location(root, f"{name}.zarr"), got
    stores = _LazyStores(locations, storage_options)
    if not stores and not problems:
        raise CatalogError(f"no distntk stores under {root} (expected children named <member>.zarr)")
    return Catalog(str(root), stores, specs, problems, manifest, storage_options, attrs)


def is_catalog_root(path: str, storage_options: dict | None = None) -> bool:
    """Whether ``path`` is a root of stores (a sweep manifest, or ``*.zarr`` children) rather than one store."""
    if not is_url(path) and not os.path.isdir(str(path)):
        return False
    try:
        fs, p = _fs(path, storage_options)
        if fs.exists(f"{p}/zarr.json") or not fs.isdir(p):
            return False
        if fs.exists(f"{p}/{MANIFEST}"):
            return True
        return any(c.rstrip("/").endswith(".zarr") for c in fs.ls(p, detail=False))
    except Exception:  # whatever the location is, opening it as a store will say what is wrong, in one line
        return False


# the `distntk query` columns the catalog table shows, named as in distntk.query.COLUMNS: (name, width, format)
_TABLE = [("width", 5, "d"), ("time", 5, ".2f"), ("probe", 0, "s"), ("n", 6, "d"), ("h", 8, ".4f"),
          ("mean", 8, ".4f"), ("se", 7, ".4f"), ("nvar", 8, ".4f"), ("nvar_poisson", 12, ".4f"),
          ("nvar_iid", 8, ".4f")]


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def format_catalog(catalog: Catalog, rows: list[dict], fmt: str = "table") -> str:
    """The catalog's rows as ``table``, ``csv`` or ``json`` (``{"root", "keys", "problems", "damaged", "rows"}``)."""
    keys = catalog.keys
    if fmt == "json":
        return json.dumps({"root": catalog.root, "keys": keys, "problems": catalog.problems,
                           "damaged": catalog.damaged,
                           "rows": [{k: _clean(v) for k, v in r.items()} for r in rows]}, indent=1)
    if fmt == "csv":
        fields = list(rows[0]) if rows else ["store", *keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if _clean(v) is None else (printable(v) if isinstance(v, str) else
                                                          v if not isinstance(v, (list, dict)) else json.dumps(v)))
                        for k, v in r.items()})
        return buf.getvalue().rstrip("\n")
    text = lambda v: "-" if v is None else printable(v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))  # noqa: E731, E501
    rows = [{**r, "store": printable(r["store"]), "probe": printable(r["probe"])} for r in rows]
    sw = max([5] + [len(r["store"]) for r in rows])
    kw = {k: max([len(k)] + [len(text(r.get(k))) for r in rows]) for k in keys}
    pw = max([5] + [len(r["probe"]) for r in rows])
    head = [f"{'store':<{sw}}", *[f"{k:>{kw[k]}}" for k in keys]]
    head += [f"{name:>{pw if name == 'probe' else w}}" for name, w, _ in _TABLE]
    damaged = catalog.damaged
    lines = [f"catalog {printable(catalog.root)}: {len(catalog.stores)} stores"
             + (f", {len(catalog.problems)} missing or unreadable" if catalog.problems else "")
             + (f", {len(damaged)} with damaged units left out or not summarised" if damaged else ""), " ".join(head)]
    for r in rows:
        cells = [f"{r['store']:<{sw}}", *[f"{text(r.get(k)):>{kw[k]}}" for k in keys]]
        for name, w, f in _TABLE:
            v = r[name]
            if name == "probe":
                cells.append(f"{v:>{pw}}")
            elif isinstance(v, float) and not math.isfinite(v):
                cells.append(f"{'-':>{w}}")
            else:
                cells.append(f"{v:>{w}{f}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)
