"""An S3-protocol server on loopback for remote-store tests (moto's server mode).

Design
------
The server runs in a child process, ``python tests/s3_server.py``: it binds 127.0.0.1
on a port the kernel picks (no probe-then-bind race), prints that port on stdout, and
serves until its stdin reaches end-of-file. The parent holds the write end of that
pipe, so the server goes away with the test session however the session ends, a hard
kill included; a separate process also keeps the server answering while the test
process sits in numerics or in ``ray.get``.

Clients reach it the way a user's tools reach real S3, through botocore's standard
configuration, so nothing in distntk needs a test hook:

* ``S3Server.env()`` -- ``AWS_ENDPOINT_URL`` plus dummy credentials and region. The
  ``s3_bucket`` fixture puts these in ``os.environ``; then ``s3://`` URLs opened in the
  test process, in subprocesses (``distntk run ... --store s3://...``) and in the Ray
  workers those start all land on this server, with no storage options.
* ``S3Server.storage_options()`` -- the same as fsspec/s3fs keyword arguments, for
  ``xarray.open_zarr(url, storage_options=...)`` and friends.

Variables that could send a client to a real account (profiles, session tokens, the
instance metadata service, web identity) are removed or disabled while a test runs.

Fixtures (made available to every test by ``tests/conftest.py``):

* ``s3_server`` (session) -- the running server, an ``S3Server``.
* ``s3_bucket`` (function) -- a fresh, empty bucket on it, an ``S3Bucket``, with the
  environment pointed at the server for the duration of the test.

A command-line run against it::

    def test_run_on_s3(s3_bucket):
        store = s3_bucket.url("stores/quickstart.zarr")
        subprocess.run(["distntk", "run", "jobs/quickstart.toml", "--store", store], check=True)
        # os.environ already points at the server; for an explicit environment pass
        # env=s3_bucket.server.subprocess_env().

Only the process that opens the store needs the server: in distntk that is the
driver of ``distntk run`` (and ``query``/``report``); its Ray workers send their
units back to it and never open the store (tests/test_remote_run.py resumes a run
with no ``AWS_*`` variables at all, the server given as ``--storage-option``).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass

import pytest

__all__ = ["S3Bucket", "S3Server", "running_s3_server", "s3_bucket", "s3_server"]

# Variables that would override the test endpoint or credentials, or make botocore
# look for real ones (profiles, SSO, assumed roles).
_UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


@dataclass(frozen=True)
class S3Server:
    """Where the loopback server listens, and the dummy identity it accepts."""

    endpoint_url: str
    # Not us-east-1: there S3 rejects an explicit LocationConstraint, which s3fs sends.
    region: str = "us-west-2"
    key: str = "distntk-test"
    secret: str = "distntk-test-secret"

    def env(self) -> dict[str, str]:
        """Environment variables that point botocore (hence s3fs) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # Ignore ~/.aws of whoever runs the tests.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def subprocess_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with this server's variables in, the risky ones out."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _UNSET}
        env.update(self.env())
        return env

    def storage_options(self) -> dict:
        """fsspec/s3fs keyword arguments that reach this server without any environment."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"region_name": self.region},
        }


@dataclass(frozen=True)
class S3Bucket:
    """A bucket on the test server; ``url("a/b.zarr")`` is ``s3://<name>/a/b.zarr``."""

    name: str
    server: S3Server

    def url(self, path: str = "") -> str:
        return f"s3://{self.name}/{path.lstrip('/')}"

    def storage_options(self) -> dict:
        return self.server.storage_options()

    def filesystem(self):
        """An s3fs filesystem on the server that bypasses fsspec's instance cache."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())


@contextlib.contextmanager
def running_s3_server(timeout: float = 60.0):
    """Start the server in a child process, yield its ``S3Server``, stop it on exit."""
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            line = proc.stdout.readline() if ready else ""
            if not line.strip().isdigit():
                proc.kill()
                proc.wait()
                stderr.seek(0)
                raise RuntimeError(
                    f"moto S3 server did not report a port within {timeout:.0f} s "
                    f"(exit status {proc.returncode}); its stderr:\n{stderr.read()[-4000:]}"
                )
            yield S3Server(endpoint_url=f"http://127.0.0.1:{int(line)}")
        finally:
            stop_by_eof(proc)


def stop_by_eof(proc: subprocess.Popen) -> None:
    """End a helper server that serves until its stdin closes: close it, wait, kill if it hangs."""
    if proc.poll() is None:
        proc.stdin.close()  # end-of-file: the server stops and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="session")
def s3_server():
    """One moto S3 server on 127.0.0.1 for the whole session."""
    pytest.importorskip("moto.server", reason="remote-store tests need moto[server] (the test extra)")
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket, with os.environ pointing s3:// at the test server for this test."""
    s3fs = pytest.importorskip("s3fs", reason="s3:// stores need s3fs (the s3 and test extras)")
    for name in _UNSET:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = S3Bucket(name=f"distntk-{uuid.uuid4().hex[:12]}", server=s3_server)
    bucket.filesystem().mkdir(bucket.name)
    yield bucket
    # Filesystems cached during the test (with their listings) belong to this test only.
    s3fs.S3FileSystem.clear_instance_cache()


def _serve() -> None:
    """Child-process entry point: serve on an OS-chosen loopback port until stdin closes."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    _serve()
