"""Resume after SIGKILL: `distntk run` as a subprocess, killed mid-way, then rerun."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from distntk import open_store
from distntk.spec import load_spec

from raytools import cleanup, marked_pids, new_mark, scoped_env, short_tmp, tiny_spec

pytestmark = pytest.mark.timeout(180)


def _done_units(path, block):
    try:
        done = zarr.open_group(str(path), mode="r")["done"][:]
    except Exception:  # not created yet
        return 0
    return int(done[:, :, ::block].sum())  # first replica of every unit


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def test_sigkill_then_rerun(tmp_path):
    # 48 units of 0.1-0.2 s each on the reference kernel: several seconds of work on 2 actors
    spec_path = tiny_spec(tmp_path / "resume.toml", widths=(768, 1536), T=2.0, times=(1.0, 2.0), n_init=6,
                          n_data=8, block=2)
    spec_path.write_text(spec_path.read_text().replace('seed = 7', 'seed = 7\nkernel = "reference"'))
    spec = load_spec(spec_path)
    e = spec.experiment
    n_units = len(e.units())
    store = tmp_path / "resume.zarr"
    mark = new_mark()
    temp = short_tmp("dnres")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    cmd = [sys.executable, "-m", "distntk", "run", str(spec_path), "--store", str(store), "--actors", "2",
           "--no-progress"]
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while _done_units(store, e.block) < 6:
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no units done after 90 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()

        before = open_store(store).load()
        done_before = before.done.values[:, :, :: e.block]  # (width, init, block)
        n_before = int(done_before.sum())
        assert 6 <= n_before < n_units, f"{n_before} of {n_units} units done at the kill; units too fast?"
        assert (before.unit_writes.values[done_before] == 1).all()

        # The embedded Ray of the killed driver goes away with it.  Only Ray's per-node agents may linger
        # for about a minute: when their raylet dies without a SIGTERM they first report its death to the
        # GCS, which is gone as well, and exit when that call times out (ray/_private/process_watcher.py,
        # report_raylet_error_logs).  kill_marked ends them below.
        agents = {"ray::DashboardAgent", "ray::RuntimeEnvAgent", ""}
        t_end = time.time() + 20
        while {_name(p) for p in marked_pids(mark)} - agents and time.time() < t_end:
            time.sleep(0.5)
        leftovers = {p: _name(p) for p in marked_pids(mark)}

        rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert f"{n_units - n_before} units" in rerun.stderr and f"{n_before} already done" in rerun.stderr
    finally:
        cleanup(mark, temp)
    assert set(leftovers.values()) <= agents, leftovers

    after = open_store(store).load()
    assert after.done.values.all()
    writes = after.unit_writes.values
    # finished units were not recomputed: same write count, wall time and node as before the kill
    assert (writes[done_before] == 1).all()
    np.testing.assert_array_equal(after.unit_wall_time.values[done_before], before.unit_wall_time.values[done_before])
    np.testing.assert_array_equal(after.unit_node.values[done_before], before.unit_node.values[done_before])
    # the others were written once by the rerun, or twice if the kill fell between a unit's data and its flag
    assert set(np.unique(writes[~done_before])) <= {1, 2} and (writes == 2).sum() <= 1
    # values identical to an uninterrupted computation (Experiment.compute, bit for bit)
    for u in e.units():
        wi = list(e.widths).index(u.width)
        ref = e.compute(u)
        np.testing.assert_array_equal(after.output.values[wi, u.init, u.data_start:u.data_stop], ref["output"])
        np.testing.assert_array_equal(after.risk.values[wi, u.init, u.data_start:u.data_stop], ref["risk"])
