"""``--probe`` by label or by index, never confused (issue 23, item 2).

Real stores (``create_store``, no units computed: a query of an empty store has
every row, with ``n = 0``) whose probes are given as explicit windows, so the
labels are known here without running anything: ``000000`` and ``111111`` (six
digits: ``L = 6``), in that order.  ``000001`` has the labels' form and matches
none: it must be an error listing the labels, not probe 1 (the bug of the issue).
The same rule holds on a catalog root: a folder holding two such stores.
"""

import json

import pytest
from raytools import tiny_spec

from distntk.cli import main
from distntk.query import QueryError, summary
from distntk.spec import load_spec
from distntk.store import create_store, open_store

LABELS = ["000000", "111111"]


def _spec(tmp_path, name="probes", seed=7):
    path = tiny_spec(tmp_path / f"{name}.toml", name=name, seed=seed, widths=(16,), n_data=4)
    text = path.read_text()
    assert "L = 4" in text and "most_likely = 2" in text
    path.write_text(text.replace("L = 4", "L = 6").replace("most_likely = 2", "windows = [[0, 0, 0, 0, 0, 0], "
                                                                                "[1, 1, 1, 1, 1, 1]]"))
    spec = load_spec(path)
    assert spec.experiment.probe_labels() == LABELS
    return spec


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe-store")
    spec = _spec(tmp)
    path = tmp / "s.zarr"
    create_store(path, spec, spec.experiment.predictions())
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A catalog root: two stores of the same probes (other seeds), no manifest (a folder of stores)."""
    tmp = tmp_path_factory.mktemp("probe-root")
    (tmp / "root").mkdir()
    for k, seed in enumerate((7, 8)):
        spec = _spec(tmp, name=f"m{k}", seed=seed)
        create_store(tmp / "root" / f"m{k}.zarr", spec, spec.experiment.predictions())
    return tmp / "root"


def _probes(capsys, target, probe) -> list[str]:
    assert main(["query", str(target), "--probe", probe, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    assert ("root" in doc) == target.name.startswith("root")  # a root is read as a catalog, a store as one store
    return sorted({r["probe"] for r in doc["rows"]})


def _error(capsys, target, probe) -> str:
    assert main(["query", str(target), "--probe", probe]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"distntk: error: --probe {probe}: "), err
    return err


@pytest.mark.parametrize("where", ["store", "root"])
def test_label_and_index_select_the_same_probe(request, capsys, where):
    target = request.getfixturevalue(where)
    assert _probes(capsys, target, "111111") == ["111111"]
    assert _probes(capsys, target, "1") == ["111111"]
    assert _probes(capsys, target, "000000") == ["000000"]
    assert _probes(capsys, target, "0") == ["000000"]


@pytest.mark.parametrize("where", ["store", "root"])
def test_a_label_shaped_value_that_matches_no_label_is_an_error_listing_the_labels(request, capsys, where):
    target = request.getfixturevalue(where)
    for probe in ("000001", "000010", "222222"):  # 000001 was read as index 1 before
        err = _error(capsys, target, probe)
        assert "no probe has this label" in err and "000000, 111111" in err, err


@pytest.mark.parametrize("where", ["store", "root"])
def test_an_index_out_of_range_names_the_range(request, capsys, where):
    target = request.getfixturevalue(where)
    for probe in ("2", "17", "1234567"):  # 1234567: seven digits, not the labels' six
        err = _error(capsys, target, probe)
        assert "index out of range 0..1" in err and "000000, 111111" in err, err


@pytest.mark.parametrize("where", ["store", "root"])
@pytest.mark.parametrize("probe", ["01", "00", "-1", "x", "1.0", " 1", "٣"])
def test_ambiguous_or_malformed_values_are_refused(request, capsys, where, probe):
    """``01``: an index with a leading zero could be a label's prefix; ``-1``, ``x``, ``1.0``: neither form."""
    err = _error(capsys, request.getfixturevalue(where), probe)
    assert "neither a probe label (000000, 111111) nor an index 0..1" in err, err


def test_python_api_takes_an_int_as_an_index_and_a_str_by_the_same_rule(store):
    ds = open_store(store)
    assert {r["probe"] for r in summary(ds, probe=1)} == {"111111"}
    assert {r["probe"] for r in summary(ds, probe="000000")} == {"000000"}
    for bad, why in ((2, "index out of range 0..1"), ("000001", "no probe has this label"), ("01", "neither")):
        with pytest.raises(QueryError, match=why):
            summary(ds, probe=bad)


def test_help_states_the_rule(capsys):
    with pytest.raises(SystemExit):
        main(["query", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "its label (the window of states, e.g. 000000), or its index 0, 1, ... written without leading zeros" in out
