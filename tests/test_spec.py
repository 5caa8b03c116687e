"""TOML specs: validation messages name the key, canonical form and diffs."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from distntk.spec import SpecError, load_spec, parse_spec, spec_diff
from raytools import section6_toml

ROOT = Path(__file__).resolve().parents[1]

BASE = section6_toml(seed=1, widths=(16,), n_init=2, n_data=4)  # block and name left to their defaults


def _with(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


def _error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_base_spec_builds_the_experiment():
    s = parse_spec(BASE, default_name="base")
    e = s.experiment
    assert s.name == "base" and s.store == "stores/base.zarr"
    assert e.L == 4 and e.model.burn_in == 4 and e.block == 16
    assert e.probes.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert s.canonical["model"]["beta"] == 0.75  # RNNConfig default filled in
    assert len(s.hash) == 64


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("b_max = 0.3", "b_max = 'x'", "model.b_max: expected a number, got 'x'"),
        ("b_max = 0.3", "b_max = 1.5", "model.b_max: contraction factor rho"),
        ("b_max = 0.3", "b_max = 0.3\nbeta = 0.4", "model.beta: beta is 0.4"),
        ("b_max = 0.3", "b_max = 0.3\ndepth = 3", "model.depth: unknown key"),
        ("[[0.8, 0.2], [0.3, 0.7]]", "[[0.8, 0.2], [0.3, 0.67]]",
         "chain.transition: transition matrix row 1 sums to 0.97; rows must sum to 1"),
        ("[[0.8, 0.2], [0.3, 0.7]]", "[[0.0, 1.0], [1.0, 0.0]]", "chain.transition: chain is periodic"),
        ("[[0.8, 0.2], [0.3, 0.7]]", "[[0.8, 0.2, 0.0], [0.3, 0.7]]", "chain.transition: expected a square"),
        ("inputs = [-1.0, 1.0]", "inputs = [-1.0, 1.0, 2.0]", "chain.inputs: state inputs have shape"),
        ("seed = 1\n", "", "seed: missing; expected an integer"),
        ("seed = 1\n", "seed = 1.5\n", "seed: expected an integer, got 1.5"),
        ("name = \"tanh_linear\"", "name = \"tanh_lineer\"", "target.name: unknown target 'tanh_lineer'"),
        ("outer = [0.0, 0.0, 0.3]", "outer = [0.0, 0.0, 0.3]\nslope = 2", "target.slope: unknown key"),
        ("name = \"tanh_linear\"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]",
         "name = \"no_such_module_xyz:f\"\nm = 2", "target.name: 'no_such_module_xyz:f' is code"),
        ("L = 4", "L = 2", "training.L: expected an integer >= the target memory m = 3"),
        ("times = [0.5, 1.0]", "times = [1.0, 0.5]", "training.times: expected sorted times"),
        ("times = [0.5, 1.0]", "times = [0.5, 2.0]", "training.times: expected sorted times within [0, T = 1]"),
        ("widths = [16]", "widths = []", "replicas.widths: expected a non-empty list"),
        ("n_init = 2", "n_init = 0", "replicas.n_init: expected an integer >= 1"),
        ("most_likely = 2", "most_likely = 99", "probes.most_likely: expected an integer in [1, 16]"),
        ("most_likely = 2", "windows = [\"0000\", [0, 1, 0, 1]]", None),
        ("most_likely = 2", "windows = [\"000\"]", "probes.windows[0]: expected a window of L = 4 states"),
        ("most_likely = 2", "", "probes: expected exactly one of"),
        ("[probes]\nmost_likely = 2\n", "", "[probes]: missing section"),
        ("seed = 1\n", "seed = 1\nextra = true\n", "extra: unknown key"),
        ("T = 1.0", "T = -1.0", "training.T: expected a number > 0"),
    ],
)
def test_errors_name_the_key(old, new, expected):
    text = _with(old, new)
    if expected is None:
        parse_spec(text)
        return
    msg = _error(text)
    assert msg.startswith(expected), msg


def test_invalid_toml_is_one_line():
    msg = _error("seed = \n")
    assert "invalid TOML" in msg


def test_zero_probability_window_is_rejected():
    text = _with("[[0.8, 0.2], [0.3, 0.7]]", "[[0.5, 0.5], [1.0, 0.0]]")
    text = text.replace("most_likely = 2", 'windows = ["0110"]')
    assert _error(text).startswith("probes.windows[0]: window has zero stationary probability")


def test_memory_tol_resolves_L():
    s = parse_spec(_with("L = 4", "memory_tol = 1e-3"))
    assert s.experiment.L == 6  # ceil(log 1e-3 / log 0.3)
    assert s.canonical["training"]["L"] == 6


def test_user_target(tmp_path, monkeypatch):
    (tmp_path / "mytargets.py").write_text("def last(x):\n    return x[:, -1, 0]\n\ndef bad(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = _with('name = "tanh_linear"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]', 'name = "mytargets:last"\nm = 1')
    s = parse_spec(text, allow_code=True)
    assert s.experiment.target.m == 1
    digest = hashlib.sha256((tmp_path / "mytargets.py").read_bytes()).hexdigest()
    assert s.canonical["target"] == {"name": "mytargets:last", "m": 1, "source_sha256": digest}
    with pytest.raises(SpecError) as info:
        parse_spec(text.replace("last", "bad"), allow_code=True)
    assert str(info.value).startswith("target: target mytargets:bad returned shape")
    with pytest.raises(SpecError, match=r"^target.scale: unknown key; a 'module:function' target takes only"):
        parse_spec(text.replace("m = 1", "m = 1\nscale = 2"), allow_code=True)


def test_canonical_hash_ignores_layout_and_names_differences():
    a = parse_spec(BASE)
    b = parse_spec("# comment\n" + BASE.replace("T = 1.0", "T = 1").replace("seed = 1", 'seed = 1\nname = "other"'))
    assert a.hash == b.hash
    c = parse_spec(_with("b_max = 0.3", "b_max = 0.3\nbeta = 0.7").replace("widths = [16]", "widths = [16, 32]"))
    assert spec_diff(a.canonical, c.canonical) == ["model.beta", "replicas.widths"]


def test_shipped_specs_validate():
    q = load_spec(ROOT / "jobs" / "quickstart.toml")
    s = load_spec(ROOT / "jobs" / "sticky-binary.toml")
    for spec in (q, s):
        e = spec.experiment
        assert e.model.b_max == 0.3 and e.model.beta == 0.75 and e.T == 2.0 and e.L == 8
        np.testing.assert_array_equal(e.chain.P, [[0.8, 0.2], [0.3, 0.7]])
    assert max(q.experiment.widths) <= 256
    assert s.experiment.widths[0] == 256 and s.experiment.widths[-1] == 8192


def test_missing_file():
    with pytest.raises(SpecError, match="spec file 'nope.toml' not found"):
        load_spec("nope.toml")
