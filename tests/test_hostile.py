"""Hostile stores and inputs (issue 20): each case is one input a user or a damaged store can hand to
distntk, and the exact outcome: a one-line ``distntk: error: ...`` with exit 2, or the repaired result.

Organised by class of the issue; each class has a short docstring.  Stores are real Zarr stores
(conftest.write_store), leases real lease files, s3:// the loopback server (tests/s3_server.py);
one case runs real Ray (``distntk run`` over an interrupted creation).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zarr
from conftest import write_store
from raytools import VENV_BIN, tiny_spec

from distntk.cli import main
from distntk.lease import STALE_AFTER_S, LeaseError, _Object, acquire
from distntk.spec import load_spec
from distntk.store import StoreError, create_store, open_or_create, open_result_store
from distntk.sweep import parse_sweep

# --------------------------------------------------------------------------------------------- helpers


def _one_error(capsys, code, expected):
    """The call failed with exit 2 and exactly one stderr line, ``distntk: error: <expected>...``."""
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith(f"distntk: error: {expected}"), err
    return err


@pytest.fixture(scope="module")
def spec_a(tmp_path_factory):
    return load_spec(tiny_spec(tmp_path_factory.mktemp("spec") / "a.toml", beta=0.75))


@pytest.fixture(scope="module")
def spec_b(tmp_path_factory):
    return load_spec(tiny_spec(tmp_path_factory.mktemp("spec") / "b.toml", beta=0.6))


def _store(path, spec, units=2):
    e = spec.experiment
    return write_store(str(path), spec, {u: e.compute(u) for u in e.units()[:units]})


@pytest.fixture(scope="module")
def root(tmp_path_factory, spec_a, spec_b):
    """A folder of two stores: ``a`` (model.beta 0.75) and ``b`` (model.beta 0.6)."""
    r = tmp_path_factory.mktemp("root")
    _store(r / "a.zarr", spec_a)
    _store(r / "b.zarr", spec_b)
    return r


def _copy_root(root, tmp_path) -> Path:
    out = tmp_path / "root"
    shutil.copytree(root, out)
    return out


def _set_attr(store: Path, key, value):
    meta = store / "zarr.json"
    d = json.loads(meta.read_text())
    d["attributes"][key] = value
    meta.write_text(json.dumps(d))


def _python_isolated(code: str, cwd, timeout=300):
    """``python -I -c code`` in ``cwd``: the test's own process keeps the planted modules out."""
    return subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


# ------------------------------------------------------------------ class 1: code from the working directory
"""Class 1.  Worker processes (catalogs of >= 200 stores) start isolated: a ``json.py`` or ``numpy.py``
in the current directory, or a relative ``PYTHONPATH`` entry, never runs in them."""


def _plant(where: Path, marker: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for mod in ("json", "numpy", "zarr"):
        (where / f"{mod}.py").write_text(f"open({str(marker)!r}, 'a').write({mod!r} + '\\n')\n"
                                         "raise ImportError('planted module ran')\n")


@pytest.fixture(scope="module")
def big_root(tmp_path_factory, spec_a):
    """200 copies of one small store: the size from which `distntk query ROOT` starts worker processes."""
    r = tmp_path_factory.mktemp("big-root")
    one = r / "s000.zarr"
    _store(one, spec_a, units=1)
    for k in range(1, 200):
        shutil.copytree(one, r / f"s{k:03d}.zarr")
    return r


def test_query_of_200_stores_runs_no_code_from_the_working_directory(big_root, tmp_path):
    cwd, marker = tmp_path / "cwd", tmp_path / "marker"
    _plant(cwd, marker)
    # sched_getaffinity says 4 cores, so that 200 stores get a worker even on a one-core runner
    got = _python_isolated("import os, sys; os.sched_getaffinity = lambda pid: {0, 1, 2, 3}; "
                           "from distntk.cli import main; "
                           f"sys.exit(main(['query', {str(big_root)!r}, '--format', 'csv', '--time', '1.0']))", cwd)
    assert got.returncode == 0, got.stderr
    assert not marker.exists(), marker.read_text()
    lines = got.stdout.splitlines()
    assert len(lines) == 1 + 200 * 4  # 2 widths x 2 probes per store
    assert sorted({ln.split(",", 1)[0] for ln in lines[1:]}) == [f"s{k:03d}" for k in range(200)]
    assert len({ln.split(",", 1)[1] for ln in lines[1:]}) == 4  # every copy's rows are the first store's


def test_workers_ignore_a_relative_pythonpath_entry(big_root, tmp_path, monkeypatch):
    from distntk.catalog import _read_summarised, _summarised

    cwd, marker = tmp_path / "cwd", tmp_path / "marker"
    _plant(cwd, marker)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PYTHONPATH", ".")
    locations = [f"{big_root}/s{k:03d}.zarr" for k in range(200)]
    select = (None, 1.0, None)
    there = _read_summarised(locations, None, select, workers=1)
    assert not marker.exists(), marker.read_text()
    one = [rows for _, rows in _summarised(locations[:1], None, select)]
    assert len(there) == 200 and repr([rows for _, rows in there]) == repr(one * 200)  # repr: NaN equals NaN


def test_the_worker_command_is_isolated():
    from distntk.catalog import _worker_command

    cmd = _worker_command()
    assert cmd[:3] == [sys.executable, "-I", "-c"]
    got = subprocess.run([*cmd[:3], cmd[3].replace("from distntk.catalog import _worker; _worker()",
                                                   "import distntk, sys; print(sys.flags.isolated, distntk.__file__)")],
                         capture_output=True, text=True, timeout=120)
    flag, path = got.stdout.split()
    assert flag == "1" and Path(path).resolve() == Path(__file__).resolve().parents[1] / "distntk" / "__init__.py"


# ---------------------------------------------------------------------- class 6: stores that lock themselves
"""Class 6.  A creation interrupted before the store's attributes (a Zarr group with no distntk attributes and
no unit data) is redone by the next run holding the lease, with one line; a store with unit data or a foreign
file is never removed.  A lease whose heartbeat is in the future or not a number goes stale by its
modification time."""


def _interrupted(path: Path, spec, how: str) -> None:
    if how == "root zarr.json only":
        zarr.open_group(str(path), mode="w-", zarr_format=3)
    else:  # every array allocated and the predictions written, the attributes not yet
        create_store(str(path), spec, spec.experiment.predictions())
        meta = path / "zarr.json"
        d = json.loads(meta.read_text())
        d["attributes"] = {}
        meta.write_text(json.dumps(d))


@pytest.mark.parametrize("how", ["root zarr.json only", "arrays allocated"])
def test_an_interrupted_creation_is_redone_under_the_lease(tmp_path, spec_a, how, caplog):
    path = tmp_path / "s.zarr"
    _interrupted(path, spec_a, how)
    with pytest.raises(StoreError, match="is a Zarr group without distntk attributes"):
        open_or_create(str(path), spec_a, spec_a.experiment.predictions)  # no lease: refused as before
    with acquire(str(path), heartbeat=False):
        rs = open_or_create(str(path), spec_a, spec_a.experiment.predictions, redo_interrupted=True)
    assert rs.attrs["spec_hash"] == spec_a.hash and not rs.done_mask().any()
    said = [r.getMessage() for r in caplog.records if r.name == "distntk.store"]
    assert said == [f"distntk: warning: {path}: its creation was interrupted (a Zarr group without distntk "
                    "attributes and without unit data): removed, created again"]


@pytest.mark.parametrize("what", ["unit data", "a foreign file", "a nested group"])
def test_a_group_without_attributes_that_holds_more_is_never_removed(tmp_path, spec_a, what):
    path = tmp_path / "s.zarr"
    if what == "unit data":
        _store(path, spec_a, units=1)
        d = json.loads((path / "zarr.json").read_text())
        d["attributes"] = {}
        (path / "zarr.json").write_text(json.dumps(d))
    else:
        _interrupted(path, spec_a, "root zarr.json only")
        if what == "a foreign file":
            (path / "notes.txt").write_text("mine")
        else:
            zarr.open_group(str(path / "sub"), mode="w-", zarr_format=3)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with acquire(str(path), heartbeat=False), pytest.raises(StoreError, match=r"is a Zarr group without distntk "
                                                             r"attributes .*remove it to start over"):
        open_or_create(str(path), spec_a, spec_a.experiment.predictions, redo_interrupted=True)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before


def test_distntk_run_redoes_an_interrupted_creation(tmp_path):
    spec_path = tiny_spec(tmp_path / "t.toml", widths=(16,), n_init=1, n_data=4, block=4)
    store = tmp_path / "s.zarr"
    _interrupted(store, load_spec(spec_path), "arrays allocated")
    got = subprocess.run([f"{VENV_BIN}/distntk", "run", str(spec_path), "--store", str(store), "--actors", "1",
                          "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr
    assert got.stderr.count("its creation was interrupted") == 1, got.stderr
    assert open_result_store(str(store), "r").done_mask().all()


def _write_lease(store: Path, content, age_s: float) -> Path:
    key = Path(str(store) + ".lease.json")
    key.write_text(content if isinstance(content, str) else json.dumps(content))
    os.utime(key, (time.time() - age_s, time.time() - age_s))
    return key


@pytest.mark.parametrize("beat, why", [("future", r"its heartbeat is 86(?:399|400) s in the future"),
                                       ("soon", "its heartbeat is not a number"),
                                       (None, "its heartbeat is not a number"),
                                       ("1e999", "its heartbeat is not a number")])
def test_a_lease_with_a_useless_heartbeat_goes_stale_by_its_age(tmp_path, beat, why):
    store = tmp_path / "s.zarr"
    lease = {"host": "elsewhere.example", "pid": 4242, "started": "then", "token": "t",
             "heartbeat": time.time() + 86400 if beat == "future" else beat}
    text = json.dumps(lease).replace('"1e999"', "1e999")  # a number that parses as infinity
    key = _write_lease(store, text, 5)  # written 5 s ago: its holder may be alive
    with pytest.raises(LeaseError) as exc:
        acquire(str(store), heartbeat=False)
    assert str(exc.value).startswith(f"store {store} is in use by distntk run on host elsewhere.example (pid 4242)")
    os.utime(key, (time.time() - STALE_AFTER_S - 30, time.time() - STALE_AFTER_S - 30))
    held = acquire(str(store), heartbeat=False)
    assert re.search(rf"\({why}; by the lease's modification time, no heartbeat for 9\d s\)$", held.taken_over), \
        held.taken_over
    held.release()


# --------------------------------------------------------------------- class 7: one driver per store, bypassed
"""Class 7.  The lease is keyed by the store's resolved location: a symlink, a ``..`` path or a URL with doubled
slashes reaches the same lease as the plain location."""


def test_a_symlink_to_a_held_store_is_refused(tmp_path):
    real, link = tmp_path / "real.zarr", tmp_path / "link.zarr"
    real.mkdir()
    link.symlink_to(real)
    with acquire(str(real), heartbeat=False):
        with pytest.raises(LeaseError, match=rf"^store {link} is in use by distntk run on host"):
            acquire(str(link), heartbeat=False)
    with acquire(str(link), heartbeat=False):  # and the other way round; the lease lies beside the real store
        assert (tmp_path / "real.zarr.lease.json").exists() and not (tmp_path / "link.zarr.lease.json").exists()
        with pytest.raises(LeaseError):
            acquire(str(real), heartbeat=False)


def test_a_store_under_a_symlinked_folder_is_the_same_store(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with acquire(str(tmp_path / "real" / "s.zarr"), heartbeat=False), pytest.raises(LeaseError, match="is in use by"):
        acquire(str(tmp_path / "link" / "sub" / ".." / "s.zarr"), heartbeat=False)


def test_a_url_with_doubled_slashes_is_the_same_store():
    import uuid

    base = f"memory://distntk-hostile/{uuid.uuid4().hex}"
    with acquire(f"{base}/s.zarr", heartbeat=False), pytest.raises(LeaseError, match="is in use by"):
        acquire(f"{base}//s.zarr/", heartbeat=False)


# ------------------------------------------------------------------------------------- class 8: tracebacks
"""Class 8.  Each of these once ended in a traceback; each is one line and exit 2 now (or, for a store inside
a root, a warning naming it and the others' table)."""


@pytest.mark.parametrize("content", ["[1, 2]", '"held"', "3", "null", "true"])
def test_a_lease_that_is_not_a_json_object_is_one_line(tmp_path, capsys, content):
    spec = tiny_spec(tmp_path / "t.toml")
    store = tmp_path / "s.zarr"
    _write_lease(store, content, 1)
    code = main(["run", str(spec), "--store", str(store), "--no-progress"])
    err = _one_error(capsys, code, f"store {store} is in use by a driver still writing its lease")
    assert "Traceback" not in err


@pytest.mark.parametrize("manifest, why", [
    ({"members": [1]}, "member 0 is not an object with a name and a spec_hash"),
    ({"members": [{"name": "a"}]}, "member 0 is not an object with a name and a spec_hash"),
    ({"members": [{"spec_hash": "x"}]}, "member 0 is not an object with a name and a spec_hash"),
    ({"members": [], "keys": 3}, "its keys are not a list of strings"),
    ([], "not a JSON object")])
def test_a_broken_sweep_manifest_is_one_line(root, tmp_path, capsys, manifest, why):
    r = _copy_root(root, tmp_path)
    (r / "sweep.json").write_text(json.dumps(manifest))
    code = main(["query", str(r)])
    _one_error(capsys, code, f"{r}/sweep.json is not a distntk sweep manifest: {why}")


@pytest.mark.parametrize("value", ["x", 0, None])
def test_a_doctored_store_in_a_root_is_named_and_left_out(root, tmp_path, capsys, value):
    r = _copy_root(root, tmp_path)
    _set_attr(r / "b.zarr", "block", value)
    assert main(["query", str(r), "--format", "csv", "--time", "1.0"]) == 0
    out, err = capsys.readouterr()
    assert [ln.split(",", 1)[0] for ln in out.splitlines()[1:]] == ["a"] * 4
    assert len(err.splitlines()) == 1 and err.startswith("distntk: warning: 1 member(s) missing or unreadable: b: "
                                                         f"{r}/b.zarr: attribute 'block' is "), err
    assert "its canonical spec says 4" in err  # the attribute is checked against the hashed spec


@pytest.mark.parametrize("flag", ["--where", "--storage-option"])
def test_deeply_nested_json_in_a_flag_is_one_line(root, capsys, flag):
    code = main(["query", str(root), flag, "model.beta=" + "[" * 100000 + "]" * 100000])
    _one_error(capsys, code, f"{flag} model.beta: the value is nested too deeply")


@pytest.mark.parametrize("cmd", ["run", "query", "report", "verify"])
def test_an_unknown_storage_option_is_one_line_in_every_command(s3_bucket, tmp_path, capsys, cmd):
    url = s3_bucket.url("s.zarr")
    argv = [cmd, str(tiny_spec(tmp_path / "t.toml")), "--store", url] if cmd == "run" else [cmd, url]
    code = main([*argv, "--storage-option", "no_such_option=1"])
    _one_error(capsys, code, f"cannot open store {url}: a storage option is not one the s3:// backend takes: ")


def test_storage_options_on_a_local_root_are_one_line(root, capsys):
    code = main(["query", str(root), "--storage-option", "anon=true"])
    _one_error(capsys, code, f"storage options apply to fsspec URLs (s3://, gs://, memory://), not to the local "
                             f"path {root}")


# -------------------------------------------------------------------------------------- class 9: silent empties
"""Class 9.  A ``--where`` that cannot select what it says is an error, not an empty table: a key no store has,
a key given twice.  Numbers compare as numbers (``.75``, ``"0.75"``, ``7.5e-1``).  In a sweep root, a store
whose spec is not its member's, or that is no member, is named, not listed."""


def test_where_on_a_key_no_store_has_is_one_line(root, capsys):
    code = main(["query", str(root), "--where", "model.betta=0.75"])
    _one_error(capsys, code, f"--where model.betta: no store under {root} has this spec key; the keys that differ "
                             "across its stores: model.beta")


@pytest.mark.parametrize("value", [".75", '"0.75"', '"7.5e-1"', "+0.75", '"0.750"'])
def test_where_compares_numbers_as_numbers(root, capsys, value):
    assert main(["query", str(root), "--where", f"model.beta={value}", "--format", "csv", "--time", "1.0"]) == 0
    out, _ = capsys.readouterr()
    assert [ln.split(",", 1)[0] for ln in out.splitlines()[1:]] == ["a"] * 4


def test_where_given_the_same_key_twice_is_one_line(root, capsys):
    code = main(["query", str(root), "--where", "model.beta=0.75", "--where", "model.beta=0.6"])
    _one_error(capsys, code, "--where model.beta: given twice; give each key once")


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    base = Path(tiny_spec(tmp_path_factory.mktemp("sw") / "base.toml", name="sw")).read_text()
    sweep = parse_sweep(base + '[sweep]\n"model.beta" = [0.6, 0.75]\n', default_name="sw")
    r = tmp_path_factory.mktemp("sweep-root")
    from distntk.catalog import write_manifest

    write_manifest(str(r), sweep.manifest)
    for m in sweep.members:
        _store(r / f"{m.name}.zarr", m.spec, units=1)
    return r, sweep


def test_a_member_replaced_by_another_specs_store_is_named_not_listed(sweep_root, tmp_path, capsys, spec_b):
    r0, sweep = sweep_root
    r = _copy_root(r0, tmp_path)
    victim = sweep.members[1]
    shutil.rmtree(r / f"{victim.name}.zarr")
    _store(r / f"{victim.name}.zarr", spec_b, units=1)  # beta 0.6 where the member has 0.75
    assert main(["query", str(r), "--format", "csv", "--time", "1.0"]) == 0
    out, err = capsys.readouterr()
    assert {ln.split(",", 1)[0] for ln in out.splitlines()[1:]} == {sweep.members[0].name}
    assert err.startswith(f"distntk: warning: 1 member(s) missing or unreadable: {victim.name}: its spec "
                          f"({spec_b.hash[:12]}) is not the member's ({victim.spec.hash[:12]}) recorded in "
                          "sweep.json: another spec's store; left out"), err


def test_a_foreign_store_in_a_sweep_root_is_named_not_listed(sweep_root, tmp_path, capsys, spec_b):
    r0, sweep = sweep_root
    r = _copy_root(r0, tmp_path)
    _store(r / "stranger.zarr", spec_b, units=1)
    assert main(["query", str(r), "--format", "csv", "--time", "1.0"]) == 0
    out, err = capsys.readouterr()
    assert {ln.split(",", 1)[0] for ln in out.splitlines()[1:]} == {m.name for m in sweep.members}
    assert err == ("distntk: warning: 1 member(s) missing or unreadable: stranger: not a member of the sweep "
                   "recorded in sweep.json; left out\n")


# ------------------------------------------------------------------------------------------- class 10: inputs
"""Class 10.  Spec files are regular files of at most 1 MiB (a FIFO or /dev/zero is refused, never waited on or
read without end); ``run`` refuses ``memory://``; strings a store provides are printed escaped; a failed lease
write leaves no temporary file."""


def test_a_fifo_spec_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    got = subprocess.run([f"{VENV_BIN}/distntk", "run", str(fifo)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 2 and got.stdout == ""
    assert got.stderr == f"distntk: error: spec file '{fifo}' is not a regular file\n"


def test_dev_zero_as_a_spec_is_refused(capsys):
    code = main(["run", "/dev/zero"])
    _one_error(capsys, code, "spec file '/dev/zero' is not a regular file")


def test_a_spec_over_one_mib_is_refused(tmp_path, capsys):
    big = tiny_spec(tmp_path / "big.toml")
    big.write_text(big.read_text() + "#" * (1 << 20) + "\n")
    code = main(["run", str(big)])
    _one_error(capsys, code, f"spec file '{big}' is larger than 1048576 bytes; a spec is a short TOML file")


@pytest.mark.parametrize("sweep", [False, True])
def test_run_refuses_a_memory_store(tmp_path, capsys, sweep):
    spec = tiny_spec(tmp_path / "t.toml")
    if sweep:
        spec.write_text(spec.read_text() + '[sweep]\n"model.beta" = [0.6, 0.75]\n')
    code = main(["run", str(spec), "--store", "memory://x/s.zarr"])
    _one_error(capsys, code, "--store memory://x/s.zarr: a memory:// store lives in this process only; the results "
                             "of the run would vanish when it ends")


def test_a_store_name_with_control_characters_is_printed_escaped(root, tmp_path, capsys):
    r = _copy_root(root, tmp_path)
    _set_attr(r / "a.zarr", "name", "evil\x1b]0;owned\x07\nline two")
    assert main(["query", str(r / "a.zarr")]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].startswith("store evil\\x1b]0;owned\\x07\\nline two  spec ")
    assert "\x1b" not in out and "\x07" not in out


def test_a_member_name_with_control_characters_is_printed_escaped(root, tmp_path, capsys):
    r = _copy_root(root, tmp_path)
    (r / "a.zarr").rename(r / "a\x1b[2J.zarr")
    assert main(["query", str(r), "--time", "1.0"]) == 0
    out, _ = capsys.readouterr()
    assert "\x1b" not in out and sum(ln.startswith("a\\x1b[2J ") for ln in out.splitlines()) == 4


def test_a_failed_lease_replace_leaves_no_temporary_file(tmp_path):
    store = tmp_path / "s.zarr"
    key = Path(str(store) + ".lease.json")
    key.mkdir()
    (key / "x").write_text("in the way")
    with pytest.raises(OSError):
        _Object(str(store), None).replace({"token": "t1", "heartbeat": 1.0}, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr.lease.json"]


def test_a_failed_lease_create_leaves_no_temporary_file(tmp_path, monkeypatch):
    store = tmp_path / "s.zarr"

    def no_link(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "link", no_link)
    with pytest.raises(PermissionError):
        _Object(str(store), None).create({"token": "t1", "heartbeat": 1.0})
    assert list(tmp_path.iterdir()) == []
