"""A wrong ``--address`` fails fast (issue 23, item 1): one line, exit 2, nothing created.

``distntk run SPEC --address A`` with nothing Ray at ``A`` used to solve the limit,
create the store, then print Ray's reconnect lines for minutes.  Here each wrong
address is a real loopback endpoint: a closed port (connection refused), a thread
that accepts and says nothing (the gRPC call meets its 10 s deadline), a thread
that answers garbage (not HTTP/2), and a live Ray GCS for the addresses that must
still pass.  The CLI runs as a real subprocess: its whole stderr must be one line,
within 30 s, and the store (and its lease) must not exist afterwards.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from raytools import cleanup, free_port, new_mark, scoped_env, short_tmp, tiny_spec

from distntk.driver import run
from distntk.service import ConnectError, check_address
from distntk.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "jobs" / "quickstart.toml"
EXPECTED = "expected the HOST:PORT that `ray start --head` prints"

pytestmark = pytest.mark.timeout(300)


@contextmanager
def _listener(reply: bytes | None):
    """A loopback TCP server thread: accepts, then sends ``reply`` and closes, or (``None``) holds the connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    held, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if reply is None:
                held.append(conn)  # silent: read nothing, answer nothing
            else:
                conn.sendall(reply)
                conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        srv.close()
        for c in held:
            c.close()


@contextmanager
def _endpoint(kind: str):
    if kind == "closed":
        yield f"127.0.0.1:{free_port()}"  # bound once, then closed: nothing listens
    elif kind == "silent":
        with _listener(None) as a:
            yield a
    else:
        with _listener(b"HTTP/1.0 200 OK\r\n\r\nnot ray\n") as a:
            yield a


WHY = {"closed": "connection refused", "silent": "no gRPC reply within 10 s", "garbage": "does not speak gRPC"}


def _cli(args, env, cwd) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "distntk", *args], env=env, cwd=cwd, capture_output=True, text=True,
                       timeout=120)
    return p, time.monotonic() - t0


@pytest.mark.parametrize("kind", ["closed", "silent", "garbage"])
def test_run_with_a_wrong_address_is_one_line_within_30_s(tmp_path, kind):
    store = tmp_path / "x.zarr"
    env = scoped_env(tmp_path / "home")
    with _endpoint(kind) as address:
        p, seconds = _cli(["run", str(QUICKSTART), "--address", address, "--store", str(store)], env, tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("distntk: error: ") and address in lines[0], lines[0]
    assert WHY[kind] in lines[0] and EXPECTED in lines[0], lines[0]
    assert seconds < 30, f"{seconds:.1f} s"
    assert not store.exists()
    assert sorted(os.listdir(tmp_path)) == ["home"]  # no store, no lease, no limit written anywhere here


def test_ray_address_environment_and_ray_client_addresses_are_checked_too(tmp_path):
    store = tmp_path / "x.zarr"
    closed = f"127.0.0.1:{free_port()}"
    p, seconds = _cli(["run", str(QUICKSTART), "--store", str(store)],
                      scoped_env(tmp_path / "home", RAY_ADDRESS=closed), tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"cannot reach a Ray cluster at {closed}: connection refused" in p.stderr and seconds < 30
    with _endpoint("garbage") as address:
        p, seconds = _cli(["run", str(QUICKSTART), "--store", str(store), "--address", f"ray://{address}"],
                          scoped_env(tmp_path / "home"), tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"ray://{address} is not a Ray client server: something listens there but does not speak gRPC" in p.stderr
    assert seconds < 30 and not store.exists()


@pytest.mark.parametrize("address, expected", [
    ("http://127.0.0.1:8265", "an HTTP address (the dashboard's, for `ray job submit`)"),
    ("127.0.0.1", "not HOST:PORT"),
    ("127.0.0.1:99999", "not HOST:PORT"),
])
def test_malformed_addresses_are_refused_by_the_python_api_before_any_store(tmp_path, address, expected):
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    with pytest.raises(ConnectError, match=re.escape(f"address {address}: {expected}; {EXPECTED}")) as got:
        run(spec, str(tmp_path / "x.zarr"), address=address, progress=False)
    assert "\n" not in str(got.value) and EXPECTED in str(got.value)
    assert sorted(os.listdir(tmp_path)) == ["tiny.toml"]


@pytest.mark.parametrize("kind", ["closed", "silent", "garbage"])
def test_python_api_refuses_before_the_lease_and_the_store(tmp_path, kind):
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    with _endpoint(kind) as address, pytest.raises(ConnectError, match=WHY[kind]):
        run(spec, str(tmp_path / "x.zarr"), address=address, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["tiny.toml"]


_GCS = """
import sys, ray
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", _temp_dir=sys.argv[1])
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
"""


@pytest.mark.parametrize("auth", ["disabled", "token"])
def test_a_live_ray_gcs_passes_the_check(tmp_path, auth):
    """A real GCS (embedded Ray in a subprocess): the check answers at once, with or without token auth.

    With token auth on, the check's call carries no token and Ray answers UNAUTHENTICATED: a Ray server
    (whose token ``ray.init`` then presents); with auth disabled it answers the call itself.
    """
    mark, temp = new_mark(), short_tmp("dnaddr")
    env = scoped_env(tmp_path / "home", mark, RAY_AUTH_MODE=auth)
    proc = subprocess.Popen([sys.executable, "-c", _GCS, temp], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        gcs = proc.stdout.readline().strip()
        assert gcs.rpartition(":")[2].isdigit(), gcs
        t0 = time.monotonic()
        check_address(gcs)  # raises if the GCS is not recognised
        assert time.monotonic() - t0 < 5
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
        assert cleanup(mark, temp) == []


def test_a_sweep_with_a_wrong_address_writes_no_root(tmp_path):
    root = tmp_path / "root"
    closed = f"127.0.0.1:{free_port()}"
    p, seconds = _cli(["run", str(ROOT / "jobs" / "beta-sweep.toml"), "--store", str(root), "--address", closed],
                      scoped_env(tmp_path / "home"), tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"cannot reach a Ray cluster at {closed}: connection refused" in p.stderr and seconds < 30
    assert not root.exists()  # no manifest, no member store
