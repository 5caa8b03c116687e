"""A changed spec on an existing store: refused, with the command that works (issue 23, item 3).

The refusal line ends with ``distntk run ...`` with ``--store`` set to a new
location (the old name with the new spec hash's first 8 characters), shell-quoted.
The end-to-end test runs that command as printed, through a shell, on a tiny spec
whose store folder has a space and a quote in its name, and checks the store it made.
"""

import shlex
import subprocess
import sys

import pytest
from raytools import cleanup, new_mark, scoped_env, short_tmp, tiny_spec

from distntk.cli import main
from distntk.spec import load_spec
from distntk.store import SpecChanged, StoreError, create_store, open_or_create, open_result_store, open_store

pytestmark = pytest.mark.timeout(300)

SAYS = "; to run this spec into a new store: "


def _specs(tmp_path):
    """The tiny spec (beta 0.75) and the same with beta 0.6, in two files."""
    old = tiny_spec(tmp_path / "old.toml", widths=(16,), n_init=1, n_data=4, block=4)
    new = tiny_spec(tmp_path / "new.toml", widths=(16,), n_init=1, n_data=4, block=4, beta=0.6)
    return old, new


def test_the_printed_command_run_as_printed_makes_the_new_store(tmp_path):
    old, new = _specs(tmp_path)
    folder = tmp_path / "my stores"
    folder.mkdir()
    store = folder / "it's.zarr"
    create_store(store, load_spec(old), load_spec(old).experiment.predictions())
    mark, temp = new_mark(), short_tmp("dnchg")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    try:
        refused = subprocess.run([sys.executable, "-m", "distntk", "run", str(new), "--store", str(store),
                                  "--no-progress", "--actors", "1"], env=env, cwd=tmp_path, capture_output=True,
                                 text=True, timeout=120)
        assert refused.returncode == 2 and refused.stdout == "", refused.stderr
        [line] = refused.stderr.splitlines()
        assert line.startswith("distntk: error: spec differs from the store's in keys: model.beta (store "), line
        head, _, command = line.partition(SAYS)
        assert command, line
        spec = load_spec(new)
        fresh = folder / f"it's-{spec.hash[:8]}.zarr"
        assert shlex.split(command) == ["distntk", "run", str(new), "--no-progress", "--actors", "1",
                                        "--store", str(fresh)]
        assert not fresh.exists()
        done = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        assert cleanup(mark, temp) == []
    made = open_store(fresh)
    assert made.attrs["spec_hash"] == spec.hash and bool(made.done.values.all())
    assert open_store(store).attrs["spec_hash"] == load_spec(old).hash  # the old store untouched
    assert not bool(open_store(store).done.values.any())


def test_without_store_flag_the_command_adds_one(tmp_path, capsys, monkeypatch):
    """The spec's own store (a relative path in the spec): the command gains ``--store``, keeps the rest."""
    old, new = _specs(tmp_path)
    for p in (old, new):
        p.write_text('store = "stores/tiny.zarr"\n' + p.read_text())
    monkeypatch.chdir(tmp_path)
    create_store("stores/tiny.zarr", load_spec(old), load_spec(old).experiment.predictions())
    assert main(["run", "new.toml", "--max-core-hours", "5", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    fresh = f"stores/tiny-{load_spec(new).hash[:8]}.zarr"
    assert err.rstrip("\n").endswith(f"{SAYS}distntk run new.toml --max-core-hours 5 --no-progress --store {fresh}")
    assert not (tmp_path / fresh).exists()


def test_the_suggested_location_is_free_or_this_specs_own_store(tmp_path):
    old, new = _specs(tmp_path)
    a, b = load_spec(old), load_spec(new)
    store = tmp_path / "s.zarr"
    create_store(store, a, a.experiment.predictions())
    eight, twelve = tmp_path / f"s-{b.hash[:8]}.zarr", tmp_path / f"s-{b.hash[:12]}.zarr"

    def fresh() -> str:
        with pytest.raises(SpecChanged) as got:
            open_or_create(store, b, b.experiment.predictions)
        assert isinstance(got.value, StoreError) and str(got.value).endswith(f"e.g. {got.value.fresh}")
        return got.value.fresh

    assert fresh() == str(eight)
    eight.mkdir()
    (eight / "notes.txt").write_text("something else lives here")
    assert fresh() == str(twelve)  # taken by something else: more of the hash
    create_store(twelve, b, b.experiment.predictions())
    assert fresh() == str(twelve)  # this spec's own store: a run there resumes
    assert open_result_store(twelve, "r").attrs["spec_hash"] == b.hash
