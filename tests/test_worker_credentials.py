"""Workers without write credentials: the run says so in one line, and the driver stores their units.

A cluster's nodes often hold other credentials than the machine that submits the run (a read-only instance
role, none at all).  Here the S3 server sits behind a loopback forwarder that answers 403 AccessDenied to every
request signed with the workers' key, as S3 does for a principal without the permission; the driver signs
with a key the forwarder lets through.  The Ray workers get their key from the job's ``runtime_env``, as a
cluster node gets it from its own environment.  What must hold (docs/guides/object-stores.md): the run
completes, one warning line names the store and the reason, every unit is stored (by the driver) and
matches an uninterrupted computation.
"""

import http.client
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import numpy as np
import pytest
import xarray as xr
from raytools import cleanup, new_mark, scoped_env, short_tmp, tiny_spec

from distntk import open_store
from distntk.spec import load_spec

pytestmark = pytest.mark.timeout(300)

WORKER_KEY = "worker-read-only"
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
           b"<Message>Access Denied</Message></Error>")


def _forwarder(upstream: str, denied_key: str):
    """A threaded HTTP server on loopback that forwards to ``upstream`` and refuses ``denied_key``'s requests."""
    up = urlparse(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _forward(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else None
            if f"Credential={denied_key}/" in (self.headers.get("Authorization") or ""):
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(_DENIED)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(_DENIED)
                return
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


_DRIVER = r"""
import json, sys, ray
from distntk.driver import run
from distntk.spec import load_spec
env = json.loads(sys.argv[3])
ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env})
rep = run(load_spec(sys.argv[1]), sys.argv[2], actors=2, progress=False)
print(json.dumps({"computed": rep.computed, "total": rep.total}))
"""


def test_workers_without_write_credentials_are_named_in_one_line_and_lose_nothing(s3_bucket, tmp_path):
    proxy = _forwarder(s3_bucket.server.endpoint_url, WORKER_KEY)
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    spec_path = tiny_spec(tmp_path / "creds.toml", widths=(16, 32), n_init=2, n_data=4, block=2)
    spec = load_spec(spec_path)
    url = s3_bucket.url("creds.zarr")
    mark = new_mark()
    temp = short_tmp("dncred")
    env = s3_bucket.server.subprocess_env(scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp))
    env["AWS_ENDPOINT_URL"] = endpoint  # the driver: its own key, let through
    workers = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": WORKER_KEY}  # the nodes: refused
    try:
        p = subprocess.run([sys.executable, "-c", _DRIVER, str(spec_path), url, json.dumps(workers)], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=240)
    finally:
        cleanup(mark, temp)
        proxy.shutdown()
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"computed": len(spec.experiment.units()),
                                                             "total": len(spec.experiment.units())}
    said = [line for line in p.stderr.splitlines() if "cannot write the store" in line]
    assert len(said) == 1, p.stderr[-3000:]  # one line, however many units and actors
    assert said[0].startswith(f"distntk run: warning: {url}: a worker on node ")
    assert "the driver writes its units" in said[0]
    assert "access denied, the credentials this process uses may not do that (" in said[0], said[0]

    ds = open_store(url, storage_options=s3_bucket.storage_options()).load()
    assert ds.done.values.all()
    raw = xr.open_zarr(url, consolidated=False, storage_options=s3_bucket.storage_options())  # the records
    records = [json.loads(str(r)) for r in np.ravel(raw["unit"].values) if str(r)]
    assert len(records) == len(spec.experiment.units())
    assert {r["writer"] for r in records} == {"driver"}  # no chunk came from a worker
    e = spec.experiment
    for u in e.units():
        wi = list(e.replicas.widths).index(u.width)
        np.testing.assert_array_equal(ds.output.values[wi, u.init, u.data_start:u.data_stop],
                                      e.compute(u)["output"])


def test_the_forwarder_refuses_only_the_workers_key(s3_bucket):
    """The fixture itself: the driver's key reaches the server, the workers' key gets S3's AccessDenied."""
    import s3fs

    proxy = _forwarder(s3_bucket.server.endpoint_url, WORKER_KEY)
    endpoint = f"http://127.0.0.1:{proxy.server_address[1]}"
    try:
        good = s3fs.S3FileSystem(skip_instance_cache=True, **{**s3_bucket.storage_options(),
                                                             "endpoint_url": endpoint})
        good.pipe(f"{s3_bucket.name}/x", b"1")
        assert good.cat(f"{s3_bucket.name}/x") == b"1"
        bad = s3fs.S3FileSystem(skip_instance_cache=True, **{**s3_bucket.storage_options(),
                                                            "endpoint_url": endpoint, "key": WORKER_KEY})
        with pytest.raises(PermissionError):
            bad.pipe(f"{s3_bucket.name}/y", b"2")
    finally:
        proxy.shutdown()
