"""Two Ray nodes on this machine, token authentication on, a spec submitted with `ray job submit`.

Ray maps ``--node-ip-address=127.0.0.1`` to the host's own address
(``ray._private.services.resolve_ip_for_localhost``), so both nodes report the
same IP; the store records the Ray node id, which tells them apart.  All ports
are free ports picked here (the default dashboard agent port 52365 would clash
between the two nodes), the temp dir is private to the test, and cleanup ends
only the processes carrying this test's marker.
"""

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from raytools import cleanup, free_port, new_mark, scoped_env, short_tmp, tiny_spec

from distntk import open_store
from distntk.service import ConnectError, check_address
from distntk.spec import load_spec

pytestmark = pytest.mark.timeout(600)  # generous: the suite must pass on a loaded machine


def _ray(args, env, timeout=300, check=True):
    p = subprocess.run(["ray", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"ray {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def _node_ports() -> list[str]:
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]


def _client_server_passes(address: str, timeout: float = 60.0) -> None:
    """``check_address`` passes on the Ray client server, which may still be starting after ``ray start``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check_address(address)
        except ConnectError as exc:
            if "connection refused" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_two_nodes_token_auth_job_submit(tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    spec_path = tiny_spec(job_dir / "tiny.toml", widths=(32, 64), n_init=4, n_data=8, block=2)
    spec = load_spec(spec_path)
    store = tmp_path / "multi.zarr"
    mark = new_mark()
    cluster_env = scoped_env(tmp_path / "cluster-home", mark, RAY_AUTH_MODE="token")
    gcs, dash, client_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{dash}"
    temp = short_tmp("dnmn")
    try:
        # the cluster's token: generated into the cluster user's ~/.ray/auth_token
        _ray(["get-auth-token", "--generate"], cluster_env)
        token = (Path(cluster_env["HOME"]) / ".ray" / "auth_token").read_text().strip()
        assert len(token) >= 32
        _ray(["start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=1",
              "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client_port}",
              f"--temp-dir={temp}", "--disable-usage-stats", *_node_ports()], cluster_env)
        _ray(["start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--disable-usage-stats", *_node_ports()],
             cluster_env)

        # the cluster passes distntk's early address check (service.check_address: its GCS, its Ray client
        # server), from this process, which has no token: Ray's UNAUTHENTICATED answer is Ray's
        check_address(f"127.0.0.1:{gcs}")
        _client_server_passes(f"ray://127.0.0.1:{client_port}")

        # a client without the token is turned away
        anon = _ray(["job", "list", "--address", api], scoped_env(tmp_path / "anon-home", mark), check=False)
        assert anon.returncode != 0 and "Unauthorized" in anon.stdout + anon.stderr

        wrong = scoped_env(tmp_path / "wrong-home", mark, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
        forged = _ray(["job", "list", "--address", api], wrong, check=False)
        assert forged.returncode != 0 and "Forbidden" in forged.stdout + forged.stderr

        # a client with the token (here in RAY_AUTH_TOKEN, no token file in its HOME) lists both nodes ...
        client = scoped_env(tmp_path / "client-home", mark, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        nodes = json.loads(_ray(["list", "nodes", "--address", api, "--format", "json"], client).stdout)
        alive = {n["node_id"]: n["is_head_node"] for n in nodes if n["state"] == "ALIVE"}
        assert len(alive) == 2 and sorted(alive.values()) == [False, True]

        # ... and submits the spec as a Ray job
        job = _ray(["job", "submit", "--address", api, "--working-dir", str(job_dir), "--",
                    "distntk", "run", "tiny.toml", "--store", str(store), "--actors", "2", "--no-progress"],
                   client, timeout=300)
        assert "succeeded" in job.stdout + job.stderr, job.stdout[-3000:]

        # a driver outside the cluster joins it with --address (needs RAY_AUTH_MODE=token and the token too)
        direct = subprocess.run(["distntk", "run", str(spec_path), "--store", str(tmp_path / "direct.zarr"),
                                 "--address", f"127.0.0.1:{gcs}", "--actors", "2", "--no-progress"],
                                env=client, capture_output=True, text=True, timeout=300)
        assert direct.returncode == 0, direct.stderr[-3000:]
        assert f"units to compute on Ray cluster 127.0.0.1:{gcs}" in direct.stderr

        # ... with a `module:function` target and a `kind = "sampler"` chain that only the driver's machine has
        # (on its PYTHONPATH, not the cluster's): --address ships both modules in a runtime_env, so the workers
        # can unpickle them (the sampler's limit segments and the units both run on the cluster)
        laptop = tmp_path / "laptop"
        laptop.mkdir()
        (laptop / "my_target_mod.py").write_text(
            "import numpy as np\n\ndef f(x):\n    return np.tanh(x[:, -1, 0] + 0.8 * x[:, -2, 0])\n")
        (laptop / "my_sampler_mod.py").write_text(
            "import numpy as np\n\ndef ar1(rng, n_paths, n_steps, phi=0.5):\n"
            "    x = np.zeros((n_paths, n_steps, 1))\n"
            "    z = rng.standard_normal((max(n_steps, 1), n_paths))\n"
            "    if n_steps:\n        x[:, 0, 0] = z[0] / np.sqrt(1 - phi**2)\n"
            "    for k in range(1, n_steps):\n        x[:, k, 0] = phi * x[:, k - 1, 0] + z[k]\n"
            "    return x\n")
        user_spec = laptop / "user.toml"
        user_spec.write_text(
            'name = "laptop-code"\nseed = 3\n[chain]\nkind = "sampler"\nsampler = "my_sampler_mod:ar1"\n'
            '[target]\nname = "my_target_mod:f"\nm = 2\n[training]\nT = 1.0\ntimes = [0.5, 1.0]\nL = 3\n'
            '[limit]\nresolution = 4\nsegments = 4\nsegment_steps = 256\n'
            '[replicas]\nwidths = [16]\nn_init = 2\nn_data = 2\nblock = 1\n')
        shipped = subprocess.run(["distntk", "run", str(user_spec), "--store", str(tmp_path / "user.zarr"),
                                  "--address", f"127.0.0.1:{gcs}", "--actors", "2", "--no-progress", "--allow-code"],
                                 env={**client, "PYTHONPATH": str(laptop)}, capture_output=True, text=True,
                                 timeout=300)
        assert shipped.returncode == 0, shipped.stderr[-3000:]
    finally:
        left = cleanup(mark, temp)
    assert left == []

    ds = open_store(store)
    assert ds.done.values.all() and (ds.unit_writes.values == 1).all()
    node_of_unit = ds.unit_node.values.ravel().tolist()
    split = {("head" if alive[n] else "worker"): node_of_unit.count(n) for n in set(node_of_unit)}
    print(f"\nunits per node: {split} (of {len(node_of_unit)})")
    assert set(node_of_unit) == set(alive) and min(split.values()) > 0
    user = open_store(tmp_path / "user.zarr")
    assert user.done.values.all() and set(user.unit_node.values.ravel()) <= set(alive)
    other = open_store(tmp_path / "direct.zarr")
    np.testing.assert_array_equal(other.output.values, ds.output.values)
    assert set(other.unit_node.values.ravel()) <= set(alive)
    # the store equals the single-node (in-process) result, bit for bit
    e = spec.experiment
    for u in e.units():
        wi = list(e.replicas.widths).index(u.width)
        ref = e.compute(u)
        np.testing.assert_array_equal(ds.output.values[wi, u.init, u.data_start:u.data_stop], ref["output"])
        np.testing.assert_array_equal(ds.risk.values[wi, u.init, u.data_start:u.data_stop], ref["risk"])
