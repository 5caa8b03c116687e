"""Helpers for the service tests: tiny specs, scoped environments, cleanup of our own processes.

Every Ray process a test starts (``ray start``, an embedded ``ray.init``, a
``distntk run`` subprocess and everything they spawn) inherits the environment
variable ``DISTNTK_TEST_MARK=<unique>``; :func:`kill_marked` ends exactly those
processes, found through ``/proc/<pid>/environ``, never by name.  The machine
is shared: ``ray stop`` would end other people's clusters too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)

def section6_toml(*, seed, widths, n_init, n_data, T=1.0, times=(0.5, 1.0), L=4, block=None, most_likely=2,
                 name=None, beta=None) -> str:
    """TOML of the reference case (docs/model.md#reference-case): sticky binary chain, tanh_linear target, b_max = 0.3.

    Model keys other than ``b_max`` (and ``beta`` when given) keep RNNConfig's
    defaults; ``name`` and ``block`` are written only when given.  One line per
    key, no blank lines, so tests can edit single keys with ``str.replace``.
    """
    lines = [f'name = "{name}"'] if name else []
    lines += [f"seed = {seed}",
              "[chain]", "inputs = [-1.0, 1.0]", "transition = [[0.8, 0.2], [0.3, 0.7]]",
              "[target]", 'name = "tanh_linear"', "inner = [1.0, 0.8]", "outer = [0.0, 0.0, 0.3]",
              "[model]", "b_max = 0.3"] + ([f"beta = {beta}"] if beta is not None else [])
    lines += ["[training]", f"T = {T}", f"times = {list(times)}", f"L = {L}",
              "[replicas]", f"widths = {list(widths)}", f"n_init = {n_init}", f"n_data = {n_data}"]
    lines += ([f"block = {block}"] if block is not None else []) + ["[probes]", f"most_likely = {most_likely}"]
    return "\n".join(lines) + "\n"


def tiny_spec(path: Path, name="tiny", seed=7, beta=0.75, T=1.0, times=(0.5, 1.0), widths=(16, 32), n_init=2,
              n_data=8, block=4) -> Path:
    """Write a small spec (sticky binary chain, L = 4) and return its path."""
    path = Path(path)
    path.write_text(section6_toml(name=name, seed=seed, beta=beta, T=T, times=times, widths=widths, n_init=n_init,
                                  n_data=n_data, block=block))
    return path


def done_units(store, block: int, storage_options: dict | None = None) -> int:
    """How many units are done in a store being written (0 before it exists): :func:`distntk.store.done_units`."""
    from distntk.store import done_units, open_result_store

    try:
        done = open_result_store(store, "r", storage_options).done_mask()
    except Exception:  # not created yet (or its attributes not written yet)
        return 0
    return int(done_units(done, block).sum())


def sigkill_when(proc, ready, what: str, timeout: float = 90.0) -> None:
    """Poll ``ready()`` while ``proc`` stays alive, then SIGKILL and reap it (its stdout is a pipe)."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, f"{what} after {timeout:.0f} s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stdout.close()


def free_port() -> int:
    return free_ports(1)[0]


_GIVEN: set = set()  # ports this process handed out: never handed out twice (Ray refuses a port used twice)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, none handed out before by this process (all bound at once)."""
    socks, out = [], []
    try:
        while len(out) < n:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in _GIVEN:
                out.append(port)
                _GIVEN.add(port)
    finally:
        for s in socks:
            s.close()
    return out


def short_tmp(prefix: str = "dn") -> str:
    """A short temp dir: Ray's unix socket paths must stay under ~107 characters."""
    return tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp")


def scoped_env(home: Path, mark: str | None = None, **extra) -> dict:
    """Environment for a Ray process of one test: own HOME (token file), own temp root, marker."""
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_API_SERVER_ADDRESS"):
        env.pop(k, None)
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), PATH=f"{VENV_BIN}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               RAY_USAGE_STATS_ENABLED="0", DISTNTK_TEST_MARK=mark or new_mark())
    env.update({k: str(v) for k, v in extra.items()})
    return env


def new_mark() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def marked_pids(mark: str) -> list[int]:
    needle = f"DISTNTK_TEST_MARK={mark}".encode()
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            out.append(int(d))
    return out


def cleanup(mark: str, *dirs) -> list[int]:
    """End this test's processes, then remove its Ray temp dirs; returns pids that would not die."""
    left = kill_marked(mark)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return left


def kill_marked(mark: str, grace: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace`` seconds, every live process carrying ``mark``."""
    pids = marked_pids(mark)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and marked_pids(mark):
            time.sleep(0.2)
        pids = marked_pids(mark)
        if not pids:
            break
    return pids
