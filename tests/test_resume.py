"""Resume after SIGKILL: `distntk run` as a subprocess, killed mid-way, reported on, then rerun."""

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from raytools import cleanup, done_units, marked_pids, new_mark, scoped_env, short_tmp, sigkill_when, tiny_spec

from distntk import open_store
from distntk.cli import main
from distntk.estimator import missing_units
from distntk.spec import Spec, load_spec
from distntk.store import open_result_store

pytestmark = pytest.mark.timeout(420)  # generous: the suite must pass on a loaded machine


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


# The embedded Ray of the killed driver goes away with it.  Only Ray's per-node agents may linger for about
# a minute: when their raylet dies without a SIGTERM they first report its death to the GCS, which is gone as
# well, and exit when that call times out (ray/_private/process_watcher.py, report_raylet_error_logs).
# cleanup() ends them.
AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent", ""}


@dataclass
class Killed:
    spec: Spec
    store: Path  # the store the killed run wrote (rerun by the test below)
    snapshot: Path  # a byte copy of it taken right after the kill, before any rerun
    cmd: list
    env: dict
    leftovers: dict  # pid -> name of our processes still alive 20 s after the kill
    unkillable: list  # pids of the killed run that survived cleanup (must be none)
    killed_at: float  # time.time() when the SIGKILL was sent


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """`distntk run` SIGKILLed once about half of its 48 units are done; the store copied as it was left."""
    tmp = tmp_path_factory.mktemp("resume")
    # 48 units of 0.1-0.2 s each on the reference kernel: several seconds of work on 2 actors
    spec_path = tiny_spec(tmp / "resume.toml", widths=(768, 1536), T=2.0, times=(1.0, 2.0), n_init=6,
                          n_data=8, block=2)
    spec_path.write_text(spec_path.read_text().replace('seed = 7', 'seed = 7\nengine = "reference"'))
    spec = load_spec(spec_path)
    e = spec.experiment
    store = tmp / "resume.zarr"
    mark = new_mark()
    temp = short_tmp("dnres")
    env = scoped_env(tmp / "home", mark, RAY_TMPDIR=temp)
    cmd = [sys.executable, "-m", "distntk", "run", str(spec_path), "--store", str(store), "--actors", "2",
           "--no-progress"]
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        half: list = []  # when half the units had records; the kill comes 1 s later, out of step with the
        # commits, so that some finished units wait for their record (test_a_killed_driver_loses_at_most_...)

        def ready() -> bool:
            if not half and done_units(store, e.replicas.block) >= len(e.units()) // 2:
                half.append(time.time())
            return bool(half) and time.time() - half[0] >= 1.0

        sigkill_when(proc, ready, "not half of the units done", timeout=240)
        killed_at = time.time()
        snapshot = tmp / "killed.zarr"
        shutil.copytree(store, snapshot)
        t_end = time.time() + 20
        while {_name(p) for p in marked_pids(mark)} - AGENTS and time.time() < t_end:
            time.sleep(0.5)
        leftovers = {p: _name(p) for p in marked_pids(mark)}
        unkillable = cleanup(mark)  # end the killed run's Ray agents before anything reruns
        yield Killed(spec, store, snapshot, cmd, env, leftovers, unkillable, killed_at)
    finally:
        cleanup(mark, temp)


def test_sigkill_then_rerun(killed):
    e = killed.spec.experiment
    n_units = len(e.units())
    before = open_store(killed.snapshot).load()
    done_before = before.done.values[:, :, :: e.replicas.block]  # (width, init, block)
    n_before = int(done_before.sum())
    assert n_units // 2 <= n_before < n_units, f"{n_before} of {n_units} units done at the kill; units too fast?"
    assert (before.unit_writes.values[done_before] == 1).all()
    assert set(killed.leftovers.values()) <= AGENTS, killed.leftovers
    assert killed.unkillable == [], killed.unkillable  # no process of the killed run is left

    rerun = subprocess.run(killed.cmd, env=killed.env, cwd=killed.store.parent, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "taken over from" in rerun.stderr and "(its process is gone)" in rerun.stderr  # the killed driver's lease
    assert f"{n_units - n_before} units" in rerun.stderr and f"{n_before} already done" in rerun.stderr

    after = open_store(killed.store).load()
    assert after.done.values.all()
    writes = after.unit_writes.values
    # finished units were not recomputed: same write count, wall time and node as before the kill
    assert (writes[done_before] == 1).all()
    np.testing.assert_array_equal(after.unit_wall_time.values[done_before], before.unit_wall_time.values[done_before])
    np.testing.assert_array_equal(after.unit_node.values[done_before], before.unit_node.values[done_before])
    # the others were written once by the rerun, or twice if the kill fell between a unit's data and its flag
    # (with several batches of writes in flight at the kill, more than one unit can be in that window)
    assert set(np.unique(writes[~done_before])) <= {1, 2}
    # values identical to an uninterrupted computation (Experiment.compute, bit for bit)
    for u in e.units():
        wi = list(e.replicas.widths).index(u.width)
        ref = e.compute(u)
        np.testing.assert_array_equal(after.output.values[wi, u.init, u.data_start:u.data_stop], ref["output"])
        np.testing.assert_array_equal(after.risk.values[wi, u.init, u.data_start:u.data_stop], ref["risk"])


def test_a_killed_driver_loses_at_most_one_commit_interval(killed):
    """Schema 3: a worker stores its unit's chunks, the driver commits the unit's record at the latest
    ``_COMMIT_MAX_S`` (2 s) after the receipt arrives.  So the units whose chunks the SIGKILL left without a
    record (their receipts lost with the driver, recomputed by the rerun) all completed in the last interval
    before the kill: every orphan chunk is younger than 2 s plus one commit's write (slack 3 s on a loaded
    machine), and a driver that never committed until the end would fail this by the whole run's length."""
    from distntk.store.writer import _COMMIT_MAX_S  # noqa: PLC2701  (the constant under test)

    e = killed.spec.experiment
    before = open_store(killed.snapshot).load()
    assert before.attrs.get("store_schema") == 3
    done = before.done.values[:, :, :: e.replicas.block]  # (width, init, block)
    root = killed.snapshot / "output"  # chunk keys "c/wi/i/b/0/0" or "c.wi.i.b.0.0": the unit is (wi, i, b)
    chunks = {tuple(int(x) for x in re.split(r"[./]", f.relative_to(root).as_posix())[1:4]): f.stat().st_mtime
              for f in root.rglob("c*") if f.is_file()}
    assert chunks, "the workers wrote no chunk"
    orphans = {k: t for k, t in chunks.items() if not done[k]}
    assert all(tuple(map(int, k)) in chunks for k in zip(*np.nonzero(done), strict=True))  # a record has chunks
    oldest = min(chunks.values())
    for key, mtime in orphans.items():
        age = killed.killed_at - mtime
        assert age <= _COMMIT_MAX_S + 3.0, (f"unit {key}: its chunks were written {age:.1f} s before the kill and "
                                            f"never committed (the run had been writing for "
                                            f"{killed.killed_at - oldest:.1f} s)")


def test_report_on_the_killed_store_names_the_missing_units(killed, tmp_path, capsys):
    """`distntk report` on the store exactly as the SIGKILL left it: it runs and lists what is missing."""
    e = killed.spec.experiment
    pending = open_result_store(killed.snapshot, mode="r").pending(e.units())  # the driver's view: what a rerun does
    assert 0 < len(pending) <= len(e.units()) // 2
    assert missing_units(open_store(killed.snapshot)) == pending
    assert main(["report", str(killed.snapshot), "--out", str(tmp_path / "rep")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "rep" / "report.md")
    md = (tmp_path / "rep" / "report.md").read_text()
    ds = open_store(killed.snapshot)
    head = md.split("## 1.")[0]
    assert f"**Partial store:** {int(ds.done.sum())} of {ds.done.size} replicas done" in head
    assert f"{len(pending)} units missing, listed at the end." in head
    listed = md.split("## Missing units")[1].split("## Method")[0]
    assert f"{len(pending)} units (width, init, data range) are not done:" in listed
    assert [ln for ln in listed.splitlines() if ln.startswith("- width ")] == [
        f"- width {u.width}, init {u.init}, data {u.data_start}-{u.data_stop - 1}" for u in pending]
