"""Store locations: the one place a location string becomes a Zarr group or an fsspec filesystem.

A location is a local path (``stores/quickstart.zarr``, ``~/runs/a.zarr``, ``file:///data/a.zarr``) or an
fsspec URL (``memory://``, ``s3://``, ``gs://``).  This module says what a location is (:func:`location`,
:func:`is_url`, :func:`is_local`, :func:`protocol`, :func:`needs_shared_filesystem`); opens it as a Zarr
group (:func:`zarr_group`, the one place zarr is handed a location and the ``storage_options``: its
``LocalStore`` for paths, ``FsspecStore`` for URLs; :func:`open_group` and :func:`create_group` through it,
:func:`open_group_async` for zarr's asynchronous API) or as an fsspec filesystem (:func:`filesystem`);
checks that a new store can be created there (:func:`check_location`, :func:`check_writable`); and turns
what a storage library raises into a one-line :class:`StoreError` (:func:`storage_errors`).  No other
module of distntk parses a location.

Without ``storage_options`` the backend configures itself from the standard environment (for s3fs,
botocore's ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...).

Whatever a filesystem raises (``OSError``, a missing backend package, a transport error such as
botocore's ``EndpointConnectionError``) becomes a one-line :class:`StoreError`.  A new store's location is
checked once: :func:`check_writable` writes and removes a probe object (one PUT and one DELETE on object
storage), so an unwritable location fails before the limit is solved; ``distntk run`` does it before it
takes the lease, and the store is then created without a second probe
(:func:`distntk.store.writer.open_or_create`, ``checked``).

Import-light: zarr and fsspec are imported when a location is opened, not when this module is (the
command line spells its locations with :func:`location` before it loads any storage library).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

from .._text import one_line
from ..errors import DistntkError

__all__ = ["StoreError", "ZARR_FORMAT", "PROBE", "location", "is_url", "is_local", "local_path", "protocol", "url_path",
           "needs_shared_filesystem", "join_location", "check_storage_options", "storage_errors", "filesystem",
           "zarr_group", "open_group", "open_group_async", "create_group", "group_exists", "local_read_store",
           "not_found", "probe_write", "check_writable", "check_location"]

ZARR_FORMAT = 3  # every store is a Zarr v3 group
PROBE = ".distntk-write-test"  # the object check_writable writes and removes where a new store goes
_S3_CONNECTIONS = 128  # default botocore pool size for s3:// stores (a --storage-option config_kwargs overrides it)
# fsspec protocol -> (the package that implements it, the distntk extra that installs it)
_BACKENDS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
# Top-level packages whose exceptions fsspec backends let through unwrapped (e.g. botocore's
# EndpointConnectionError for an unreachable endpoint, google.auth's errors for missing credentials).
_TRANSPORT_PACKAGES = {"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "fsspec", "requests",
                       "urllib3", "obstore"}
_DENIED = {"PermissionDeniedError", "UnauthenticatedError"}  # obstore's refusals (not PermissionError)
_SCHEME = "://"
_log = logging.getLogger("distntk.store")
_FILE = "file" + _SCHEME


class StoreError(DistntkError, RuntimeError):
    """A store that cannot be opened, created or written; one-line message.

    What a storage library raises (an ``OSError``, a missing backend package, a transport error) is
    translated into it by :func:`storage_errors`; damage a read finds (edited metadata, a spec that
    does not hash to its ``spec_hash``) is one too.
    """


# --------------------------------------------------------------------------- what a location is

def location(path: str | os.PathLike) -> str:
    """A store location as distntk uses it: ``~`` expanded and ``file://`` dropped for local paths; URLs as given."""
    text = str(path)
    if text.startswith(_FILE):
        text = text[len(_FILE):]
    return text if _SCHEME in text else os.path.expanduser(text)


def is_url(path) -> bool:
    """Whether ``path`` is spelled as an fsspec URL (``file://`` included): storage options apply to it."""
    return _SCHEME in str(path)


def is_local(path) -> bool:
    """Whether ``path`` is on this machine's filesystem: a path, or a ``file://`` URL."""
    return not is_url(path) or str(path).startswith(_FILE)


def local_path(path) -> str:
    """A local location as the operating system spells it (``file://`` dropped)."""
    return str(path).removeprefix(_FILE)


def protocol(path) -> str:
    """The fsspec protocol of ``path``, lower case: ``s3``, ``gs``, ``memory``, ...; ``file`` for a path."""
    return str(path).split(_SCHEME, 1)[0].lower() if is_url(path) else "file"


def url_path(path) -> str:
    """What follows the scheme of an fsspec URL (``bucket/key`` of ``s3://bucket/key``); ``path`` as given
    for a local path."""
    return str(path).split(_SCHEME, 1)[1] if is_url(path) else str(path)


def needs_shared_filesystem(path) -> bool:
    """Whether Ray workers on other nodes reach ``path`` only through a filesystem they all mount at the same
    place (a local path); a URL of object storage is reached from every node with its credentials.  A worker
    that does not find the store writes nothing and hands its results to the driver
    (:func:`distntk.store.writer.write_chunks`)."""
    return is_local(path)


def join_location(root, name: str) -> str:
    """``root/name``: a store under a root of stores (a directory or an fsspec prefix)."""
    return f"{str(root).rstrip('/')}/{name}"


def check_storage_options(path, storage_options: dict | None, error: type[Exception] = StoreError) -> None:
    """Storage options are the fsspec backend's keyword arguments: refused (``error``) for a local path."""
    if storage_options and not is_url(path):
        raise error(f"storage options apply to fsspec URLs (s3://, gs://, memory://), not to the local path {path}")


# --------------------------------------------------------------------------- storage errors, in one line

@contextlib.contextmanager
def storage_errors(path, action: str, catch: tuple = (OSError, ValueError), error: type[Exception] = StoreError):
    """Turn what the filesystem raises while we ``action`` (``"open store"``, ...) into a one-line StoreError.

    ``catch``: the built-in exceptions that count as storage errors here (zarr reports a node
    that is missing or in the way as ``ValueError``; a data write leaves ``ValueError`` alone).
    ``error``: the class raised (a catalog's root raises :class:`~distntk.catalog.CatalogError`).
    """
    try:
        yield
    except (StoreError, error):
        raise
    except ImportError as exc:
        proto = protocol(path)
        if proto not in _BACKENDS:
            raise error(f"cannot {action} {path}: {one_line(exc)}") from None
        package, extra = _BACKENDS[proto]
        raise error(f"{proto}:// stores need {package}, which is not installed: "
                    f"pip install 'distntk[{extra}]'") from None
    except PermissionError as exc:  # S3's AccessDenied/Forbidden, a read-only mount: whose rights to change
        raise error(_denied(path, action, one_line(exc, 80))) from None
    except catch as exc:
        raise error(f"cannot {action} {path}: {one_line(exc)}") from None
    except TypeError as exc:  # a --storage-option the backend does not take (s3fs passes them on to its session)
        if "unexpected keyword argument" not in str(exc):
            raise
        raise error(f"cannot {action} {path}: a storage option is not one the {protocol(path)}:// backend "
                    f"takes: {one_line(exc)}") from None
    except Exception as exc:
        if type(exc).__module__.split(".")[0] not in _TRANSPORT_PACKAGES:
            raise
        if type(exc).__name__ in _DENIED:
            raise error(_denied(path, action, f"{type(exc).__name__}: {one_line(exc, 80)}")) from None
        raise error(f"cannot {action} {path}: {type(exc).__name__}: {one_line(exc)}") from None


def _denied(path, action: str, detail: str) -> str:
    """The one line for a refused request (s3fs's PermissionError, obstore's PermissionDeniedError): whose
    rights are missing first, the backend's words after (they may be cut)."""
    return f"cannot {action} {path}: access denied, the credentials this process uses may not do that ({detail})"


# --------------------------------------------------------------------------- opening a location

def filesystem(path, storage_options: dict | None = None):
    """``(fs, root)``: the fsspec filesystem of ``path`` and the location's path in it (no trailing ``/``).

    Errors are the caller's to translate (:func:`storage_errors`)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return fs, root.rstrip("/")


def _group_kwargs(path, storage_options: dict | None) -> dict:
    """zarr's keyword arguments for the group at ``path``: Zarr v3, no consolidated metadata, the options."""
    check_storage_options(path, storage_options)
    kwargs = {"zarr_format": ZARR_FORMAT, "use_consolidated": False}
    if storage_options:
        kwargs["storage_options"] = storage_options
    if protocol(path) in ("s3", "s3a"):
        # botocore's pool holds 10 connections by default: that, not the cluster, would cap the requests in flight
        opts = dict(storage_options or {})
        opts["config_kwargs"] = {"max_pool_connections": _S3_CONNECTIONS, **(opts.get("config_kwargs") or {})}
        kwargs["storage_options"] = opts
    return kwargs


def zarr_group(path, mode: str, storage_options: dict | None = None, client: str = "fsspec"):
    """The one place a store location becomes a Zarr group (paths and fsspec URLs alike): zarr's
    ``open_group`` in ``mode``, its errors as zarr raises them (:func:`open_group` and :func:`create_group`
    translate them; a benchmark may replace this function to route the opens through another client).

    ``client="obstore"`` (an actor's chunk writes): an ``s3://`` or ``gs://`` location through obstore
    where it fits (:func:`distntk.store.objstore.obstore_zarr_store`), else through fsspec as always."""
    import zarr

    if client == "obstore":
        from .objstore import obstore_zarr_store

        store = obstore_zarr_store(protocol(path), url_path(path), storage_options, read_only=mode == "r")
        if store is not None:
            check_storage_options(path, storage_options)
            try:
                return zarr.open_group(store, mode=mode, zarr_format=ZARR_FORMAT, use_consolidated=False)
            except not_found():
                raise
            except Exception as exc:  # noqa: BLE001  (what obstore cannot reach, s3fs may: a redirect, a region)
                if type(exc).__name__ in _DENIED:
                    raise
                _log.info("%s: obstore cannot open it (%s: %s); through fsspec", path, type(exc).__name__, exc)
    return zarr.open_group(str(path), mode=mode, **_group_kwargs(path, storage_options))


def not_found() -> tuple:
    """What zarr raises for a location where no group is (nothing there, or an array)."""
    import zarr

    return (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError)


def open_group(path, mode: str = "r", storage_options: dict | None = None, client: str = "fsspec"):
    """The Zarr group at ``path`` (``mode`` ``"r"`` or ``"r+"``), or ``None`` when no group is there.

    What the filesystem raises is a one-line :class:`StoreError` ("cannot open store ...").  ``client``:
    as for :func:`zarr_group`."""
    with storage_errors(path, "open store"):
        try:
            return zarr_group(path, mode, storage_options, client)
        except not_found():
            return None


async def open_group_async(path, storage_options: dict | None = None, local_reads: bool = False):
    """:func:`open_group` (read-only) through zarr's asynchronous API: an ``AsyncGroup`` or ``None``.

    ``local_reads``: a local path is read through :func:`local_read_store` (files read in the calling
    coroutine; for the many small files of a catalog)."""
    import zarr.api.asynchronous as zarr_async

    kwargs = _group_kwargs(path, storage_options)
    store = local_read_store(path) if local_reads and not is_url(path) else str(path)
    with storage_errors(path, "open store"):
        try:
            return await zarr_async.open_group(store=store, mode="r", **kwargs)
        except not_found():
            return None


def create_group(path, storage_options: dict | None = None):
    """A new, empty Zarr group at ``path``; a :class:`StoreError` if a node is already there."""
    import zarr

    with storage_errors(path, "create store at"):
        try:
            return zarr_group(path, "w-", storage_options)
        except (FileExistsError, zarr.errors.ContainsGroupError, zarr.errors.ContainsArrayError) as exc:
            raise StoreError(f"cannot create store at {path}: {type(exc).__name__}: {one_line(exc)}") from None


def group_exists(path, storage_options: dict | None = None) -> bool:
    """Whether a Zarr group is at ``path`` (a distntk store, or what its interrupted creation left)."""
    return open_group(path, "r", storage_options) is not None


@functools.cache
def _local_reads_class():
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    class LocalReads(LocalStore):
        """zarr's ``LocalStore``, read-only, with each file read in the calling coroutine.

        ``LocalStore.get`` hands every read to a thread (``asyncio.to_thread``).  A catalog
        reads many small files (62 per store of the catalog benchmark, most under a few kB),
        and for those the hand-off costs more than the read itself: this store reads the
        file directly.  It is used for local paths only, to read; object stores keep their
        asynchronous reads, where latency, not CPU, is the cost.
        """

        async def get(self, key, prototype=None, byte_range=None):
            if byte_range is not None:  # not used by whole-array reads; zarr's own path
                return await super().get(key, prototype, byte_range)
            if not self._is_open:
                await self._open()
            try:
                with open(os.path.join(self.root, key), "rb") as f:  # os.path: a pathlib join costs more than the read
                    data = f.read()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
            return (prototype or default_buffer_prototype()).buffer.from_bytes(data)

    LocalReads.__module__ = __name__
    return LocalReads


def local_read_store(path):
    """A read-only zarr store of the local ``path`` that reads each file in the calling coroutine (zarr's
    ``LocalStore`` hands every read to a thread, which costs more than a small file's read)."""
    return _local_reads_class()(local_path(path), read_only=True)


# --------------------------------------------------------------------------- a new store's location, checked once

def probe_write(path, storage_options: dict | None = None) -> None:
    """Write and remove a small object where the store goes: fail before the limit is solved, not after."""
    with storage_errors(path, "create store at"):
        if not is_url(path):
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, PROBE)
            with open(probe, "wb"):
                pass
            os.remove(probe)
            return
        fs, root = filesystem(path, storage_options)
        probe = f"{root}/{PROBE}"
        fs.pipe_file(probe, b"")
        with contextlib.suppress(OSError):  # a write-only identity may not delete; the probe is harmless
            fs.rm_file(probe)


def _check_local_target(path) -> None:
    if not is_local(path):
        return
    p = local_path(path)
    if os.path.isfile(p):
        raise StoreError(f"cannot create store at {path}: a file is in the way")
    if os.path.isdir(p) and os.listdir(p):
        raise StoreError(f"cannot create store at {path}: directory exists, is not empty and is not a distntk store")


def check_writable(path: str | os.PathLike, storage_options: dict | None = None) -> None:
    """Fail with a one-line :class:`StoreError` unless a new store can be created at ``path``.

    Writes and removes a small probe object (:func:`probe_write`): an unwritable location fails before
    the limit is solved.
    """
    _check_local_target(str(path))
    probe_write(path, storage_options)


def check_location(path: str | os.PathLike, storage_options: dict | None = None) -> bool:
    """True if a store exists at ``path``; else check that one can be created there (one-line errors).

    False means: no store is there and the location took the probe (:func:`check_writable`); the caller
    that creates the store next need not probe again (``open_or_create(..., checked=True)``).
    """
    if group_exists(path, storage_options):
        return True
    check_writable(path, storage_options)
    return False
