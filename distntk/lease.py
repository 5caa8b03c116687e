"""One driver per store: a lease object beside the store, ``<store>.lease.json``.

(Beside, not inside: Zarr lists every object in a group's prefix and warns about
any that is not part of the hierarchy, so readers of a running store would see
a warning for a lease inside it.)

The lease holds the owner's host, pid (and the pid's start time, so a reused pid
is not taken for the owner), the run's start time, a random token and a
heartbeat (Unix seconds), refreshed every :data:`HEARTBEAT_S` seconds by a
daemon thread of the driver.

* **Acquire.**  No lease: create it *exclusively* (``O_CREAT | O_EXCL`` on a
  local path; ``PUT`` with ``If-None-Match: *`` on ``s3://``), so of two drivers
  starting on the same new store at the same instant exactly one gets it, before
  either creates the store; the other is refused with one line naming the
  holder.  A live lease (holder alive, heartbeat younger than
  :data:`STALE_AFTER_S`) is refused the same way.
* **Stale takeover.**  A lease whose holder is known dead (same host, pid gone)
  or whose heartbeat is older than :data:`STALE_AFTER_S` seconds is taken over:
  replaced by ours (on ``s3://`` conditionally on the stale object's ETag, so
  of two takers one wins; on a local path by an atomic rename, then re-read
  after :data:`SETTLE_S` seconds: the taker that no longer finds its own token
  gives up).  The takeover is logged (``logging``, logger ``distntk.lease``) and
  written to the store's history by the driver.
* **Heartbeat.**  Each beat first re-reads the lease; a lease found to carry
  another token (this driver was paused past the timeout and taken over) marks
  ours as lost, and the driver stops with a one-line error at its next batch.
* **Release.**  A clean exit deletes the lease (only if it is still ours); a
  killed driver leaves it, and the next run takes it over as stale.

Heartbeats compare clocks of different hosts: :data:`STALE_AFTER_S` (60 s) is
far above usual clock skew and far above the 10 s beat.  A heartbeat that is not a
number, or lies more than :data:`STALE_AFTER_S` in the future (a clock far off, a
doctored file), says nothing about the holder: the lease object's own modification
time (the filesystem's or the object store's clock, rewritten at every beat) stands
in for it, so such a lease goes stale like any other, and the takeover says why.
A lease object that is not a JSON object counts as "a driver still writing its lease"
and also goes stale by its modification time.

**The key is the store's location, resolved**: a local store by its real path
(``os.path.realpath``: a symlink, ``..`` or a second mount path to the same store
reach the same lease), a URL by its normalised path (``s3://b//x/`` and ``s3://b/x``
are one store).  Temporary files of a local create or replace are removed when the
write fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import posixpath
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from ._text import one_line, printable
from .store import StoreError, filesystem, is_local, local_path, protocol, storage_errors

__all__ = ["Lease", "LeaseError", "acquire", "HEARTBEAT_S", "STALE_AFTER_S"]

HEARTBEAT_S = 10.0
STALE_AFTER_S = 60.0
SETTLE_S = 0.5
_SUFFIX = ".lease.json"
_log = logging.getLogger("distntk.lease")


class LeaseError(StoreError):
    """The store is held by another live driver; one-line message naming it."""


def _proc_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot ("" where /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _proc_start(pid) in ("", start)


def _precondition_failed(exc: Exception) -> bool:
    """S3's 412 for a conditional write (s3fs turns it into an OSError with the service's words)."""
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return any(w in text for w in ("preconditionfailed", "pre-condition", "precondition", " 412"))


class _Object:
    """The lease object: a local file or an fsspec object (``s3://`` with conditional writes)."""

    def __init__(self, path: str, storage_options: dict | None):
        self.where = str(path)
        self.local = is_local(self.where)
        if self.local:
            root = os.path.realpath(os.path.expanduser(local_path(self.where))).rstrip("/")
            self.dir, self.key = os.path.dirname(root), root + _SUFFIX
        else:
            self.fs, root = filesystem(self.where, storage_options)
            self.key = (posixpath.normpath(root) if root.strip("/") else root).rstrip("/") + _SUFFIX
        self.s3 = protocol(self.where) in ("s3", "s3a")

    def read(self) -> tuple[dict | None, str | None]:
        """(content, version tag) of the lease, ``(None, None)`` if there is none; unparsable content -> ``{}``."""
        try:
            if self.local:
                with open(self.key, "rb") as f:
                    raw = f.read()
                tag = str(os.stat(self.key).st_ino)
            else:
                raw = self.fs.cat_file(self.key)
                tag = str(self.fs.info(self.key).get("ETag", "")) if self.s3 else None
                if self.s3:
                    self.fs.invalidate_cache(self.key)
        except FileNotFoundError:
            return None, None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return {}, tag
        return (data if isinstance(data, dict) else {}), tag

    def create(self, data: dict) -> bool:
        """Write the lease only if there is none; False if another one is there."""
        body = json.dumps(data).encode()
        if self.local:
            os.makedirs(self.dir, exist_ok=True)
            tmp = f"{self.key}.{data['token']}"
            try:
                _write_new(tmp, body)
                os.link(tmp, self.key)  # atomic and exclusive, with the content already in place
                return True
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
        try:
            self.fs.pipe_file(self.key, body, mode="create") if self.s3 else self._create_plain(body)
            return True
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or _precondition_failed(exc):
                return False
            raise

    def _create_plain(self, body: bytes) -> None:
        # other fsspec backends: no conditional write; check-then-write (documented race window)
        if self.fs.exists(self.key):
            raise FileExistsError(self.key)
        self.fs.pipe_file(self.key, body)

    def replace(self, data: dict, tag: str | None) -> bool:
        """Overwrite the lease, on s3:// only if it is still the version ``tag``; False if it changed."""
        body = json.dumps(data).encode()
        if self.local:
            tmp = f"{self.key}.{data['token']}"
            try:
                _write_new(tmp, body)
                os.replace(tmp, self.key)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
                raise
            return True
        if self.s3 and tag:
            try:
                self.fs.pipe_file(self.key, body, IfMatch=tag)
                return True
            except OSError as exc:
                if _precondition_failed(exc):
                    return False
                raise
        self.fs.pipe_file(self.key, body)
        return True

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.local:
                os.remove(self.key)
            else:
                self.fs.rm_file(self.key)


def _write_new(path: str, body: bytes) -> None:
    with open(path, "wb") as f:
        f.write(body)


def _heartbeat(d: dict) -> float | None:
    """The lease's heartbeat in Unix seconds; ``None`` when it is missing or not a finite number."""
    beat = d.get("heartbeat")
    if isinstance(beat, bool) or not isinstance(beat, (int, float)) or not math.isfinite(beat):
        return None
    return float(beat)


def _describe(d: dict, now: float) -> str:
    if not d:
        return "a driver still writing its lease"
    beat = _heartbeat(d)
    ago = ("no readable heartbeat" if beat is None else f"last heartbeat {now - beat:.0f} s ago" if beat <= now + 1
           else f"heartbeat {beat - now:.0f} s in the future")
    return printable(f"distntk run on host {d.get('host', '?')} (pid {d.get('pid', '?')}), "
                     f"started {d.get('started', '?')}, {ago}")


@dataclass
class Lease:
    """A held lease; :meth:`check` raises once it was lost, :meth:`release` gives it back."""

    obj: _Object
    data: dict
    tag: str | None
    taken_over: str | None  # the stale holder it replaced, described; None when it was free
    _lost: str | None = None
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                cur, tag = self.obj.read()
                if cur is None or cur.get("token") != self.data["token"]:
                    self._lost = (f"the lease of {self.obj.where} was taken over by "
                                  f"{_describe(cur or {}, time.time())}; this run stops")
                    _log.error(self._lost)
                    return
                self.data = {**self.data, "heartbeat": time.time()}
                if not self.obj.replace(self.data, tag):
                    continue  # changed between read and write: the next beat sees by whom
            except Exception as exc:  # a transient storage error: try again at the next beat
                _log.warning("lease heartbeat on %s failed: %s", self.obj.where, one_line(exc))

    def check(self) -> None:
        if self._lost:
            raise LeaseError(self._lost)

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=30)
        if self._lost:
            return
        with contextlib.suppress(Exception):
            cur, _ = self.obj.read()
            if cur and cur.get("token") == self.data["token"]:
                self.obj.delete()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(path: str, storage_options: dict | None = None, *, heartbeat: bool = True) -> Lease:
    """Take the lease of the store at ``path`` (which need not exist yet); see the module docstring."""
    with storage_errors(path, "take the lease of"):
        return _acquire(_Object(path, storage_options), heartbeat)


def _acquire(obj: _Object, heartbeat: bool) -> Lease:
    now = time.time()
    pid = os.getpid()
    mine = {"host": socket.gethostname(), "pid": pid, "pid_start": _proc_start(pid),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "heartbeat": now,
            "token": uuid.uuid4().hex}
    taken_over = None
    for _ in range(3):
        if obj.create(mine):
            break
        cur, tag = obj.read()
        if cur is None:
            continue  # released between our create and read: try again
        now = time.time()
        age, odd = _age(obj, cur, now)
        dead = (cur.get("host") == mine["host"] and isinstance(cur.get("pid"), int)
                and not isinstance(cur.get("pid"), bool) and cur["pid"] > 0
                and not _alive(cur["pid"], str(cur.get("pid_start", ""))))
        if not dead and age <= STALE_AFTER_S:
            raise LeaseError(f"store {obj.where} is in use by {_describe(cur, now)}; one driver per store "
                             f"(a lease without heartbeat for {STALE_AFTER_S:.0f} s is taken over)")
        why = "its process is gone" if dead else f"{odd}no heartbeat for {age:.0f} s"
        if not obj.replace(mine, tag):
            continue  # someone else replaced it first: look again
        if obj.local:  # no compare-and-swap on a local path: let a concurrent taker's write land, then look
            time.sleep(SETTLE_S)
            cur2, _ = obj.read()
            if not cur2 or cur2.get("token") != mine["token"]:
                raise LeaseError(f"store {obj.where} was just taken over by {_describe(cur2 or {}, time.time())}")
        taken_over = f"{_describe(cur, now)} ({why})"
        _log.warning("lease of %s taken over from %s", obj.where, taken_over)
        break
    else:
        raise LeaseError(f"store {obj.where}: the lease keeps changing hands; another driver is starting on it")
    _cur, tag = obj.read()
    lease = Lease(obj, mine, tag, taken_over)
    if heartbeat:
        lease._stop = threading.Event()
        lease._thread = threading.Thread(target=lease._beat, name="distntk-lease", daemon=True)
        lease._thread.start()
    return lease


def _age(obj: _Object, cur: dict, now: float) -> tuple[float, str]:
    """(seconds since the holder last wrote the lease, why the heartbeat field was not used or "")."""
    beat = _heartbeat(cur) if cur else None
    if cur and beat is None:
        odd = "its heartbeat is not a number; by the lease's modification time, "
    elif beat is not None and beat - now > STALE_AFTER_S:
        odd = f"its heartbeat is {beat - now:.0f} s in the future; by the lease's modification time, "
    else:
        return (now - beat if beat is not None else now - _mtime(obj)), ""
    return now - _mtime(obj), odd


def _mtime(obj: _Object) -> float:
    with contextlib.suppress(Exception):
        if obj.local:
            return os.stat(obj.key).st_mtime
        return float(obj.fs.modified(obj.key).timestamp())
    return time.time()
