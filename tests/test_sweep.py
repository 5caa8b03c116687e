"""Sweep expansion: grid and zipped axes, member names and hashes, and bad sweeps refused in one line."""

from __future__ import annotations

import json

import pytest
from raytools import section6_toml

from distntk.spec import SpecError, parse_spec, spec_diff
from distntk.sweep import parse_sweep

BASE = section6_toml(name="base", seed=3, widths=(16, 32), n_init=2, n_data=8, block=4)
ANTI = "[[0.2, 0.8], [0.7, 0.3]]"
STICKY = "[[0.8, 0.2], [0.3, 0.7]]"


def _sweep(table: str):
    return parse_sweep(BASE + table, default_name="base", source="s.toml")


def test_spec_without_sweep_is_not_a_sweep():
    assert parse_sweep(BASE) is None


def test_grid_is_the_cartesian_product_last_key_fastest():
    s = _sweep('[sweep]\n"model.beta" = [0.6, 0.8]\n"model.b_max" = [0.2, 0.4, 0.5]\n')
    assert [m.name for m in s.members][:4] == ["model.beta=0.6,model.b_max=0.2", "model.beta=0.6,model.b_max=0.4",
                                               "model.beta=0.6,model.b_max=0.5", "model.beta=0.8,model.b_max=0.2"]
    assert len(s.members) == 6 and s.keys == ("model.beta", "model.b_max")
    assert len({m.spec.hash for m in s.members}) == 6
    base = parse_spec(BASE)
    for m in s.members:
        # each member is the base with exactly the swept keys changed, to the values its name says
        # (limit.memory = "auto" takes the infinite past from b_max = 0.4 on: rho^12 > 1e-6; limit.* follows)
        assert [k for k in spec_diff(base.canonical, m.spec.canonical) if not k.startswith("limit.")] == sorted(
            k for k, v in {"model.beta": 0.75, "model.b_max": 0.3}.items() if m.values[k] != v)
        assert m.spec.experiment.limit.memory == ("window" if m.values["model.b_max"] < 0.4 else "sampled")
        assert m.spec.canonical["model"]["beta"] == m.values["model.beta"]
        assert m.spec.canonical["model"]["b_max"] == m.values["model.b_max"]
        assert m.spec.experiment.model.beta == m.values["model.beta"]


def test_a_member_equal_to_the_base_hashes_like_the_base():
    s = _sweep('[sweep]\n"model.beta" = [0.75, 0.8]\n')
    assert s.members[0].spec.hash == parse_spec(BASE).hash
    assert s.members[1].spec.hash != parse_spec(BASE).hash


def test_zipped_keys_vary_together_with_labels():
    s = _sweep(f'[sweep]\n"model.beta" = [0.6, 0.8]\n[sweep.zip]\nname = ["sticky", "anti"]\n'
               f'"chain.transition" = [{STICKY}, {ANTI}]\n"chain.inputs" = [[-1.0, 1.0], [-1.0, 2.0]]\n')
    assert [m.name for m in s.members] == ["model.beta=0.6,sticky", "model.beta=0.6,anti",
                                           "model.beta=0.8,sticky", "model.beta=0.8,anti"]
    anti = s.members[1].spec.experiment.chain
    assert anti.P.tolist() == json.loads(ANTI) and anti.inputs.ravel().tolist() == [-1.0, 2.0]
    assert s.members[0].spec.experiment.chain.P.tolist() == json.loads(STICKY)


def test_zipped_without_labels_and_long_values_are_named_by_index():
    s = _sweep(f'[sweep]\n"chain.transition" = [{STICKY}, {ANTI}]\n')
    assert [m.name for m in s.members] == ["chain.transition@0", "chain.transition@1"]
    s = _sweep(f'[sweep.zip]\n"chain.transition" = [{STICKY}, {ANTI}]\n"model.beta" = [0.6, 0.7]\n')
    assert [m.name for m in s.members] == ["zip@0", "zip@1"]


def test_member_names_are_escaped_for_object_keys():
    s = _sweep('[sweep]\n"model.activation" = ["tanh", "sigmoid"]\n"seed" = [1, 2]\n')
    for m in s.members:
        assert all(c.isalnum() or c in "=,+-._%@" for c in m.name), m.name
    s = _sweep('[sweep.zip]\nname = ["a b/c", "d"]\n"model.beta" = [0.6, 0.7]\n')
    assert s.members[0].name == "a%20b%2Fc"


@pytest.mark.parametrize("table, expected", [
    ('[sweep]\n"model.bta" = [0.6]\n', "sweep member model.bta=0.6: model.bta"),
    ('[sweep]\n"model.beta" = [0.6, 1.5]\n', "sweep member model.beta=1.5: model.beta"),
    ('[sweep]\n"model.beta" = 0.6\n', 'sweep."model.beta": expected a non-empty list'),
    ('[sweep]\n"model.beta" = []\n', 'sweep."model.beta": expected a non-empty list'),
    ('[sweep]\n', "sweep: expected at least one"),
    ('[sweep]\n"store" = ["a", "b"]\n', 'sweep: key "store" cannot be swept'),
    ('[sweep]\n"name" = ["a", "b"]\n', 'sweep: key "name" cannot be swept'),
    ('[sweep]\n"seed.x" = [1]\n', "'seed' is not a table"),
    ('[sweep]\n"model..beta" = [1]\n', "expected a dotted spec key"),
    ('[sweep]\n"model.beta" = [0.6, 0.6]\n', "two members are both named"),
    ('[sweep]\n"model.beta" = [0.6]\n[sweep.zip]\n"model.beta" = [0.7]\n', "both a grid axis and in sweep.zip"),
    ('[sweep.zip]\n"model.beta" = [0.6, 0.7]\n"model.b_max" = [0.2]\n', "sweep.zip: the lists must have one length"),
    ('[sweep.zip]\nname = ["a"]\n"model.beta" = [0.6, 0.7]\n', "sweep.zip: the lists must have one length"),
    ('[sweep.zip]\nname = ["a", 3]\n"model.beta" = [0.6, 0.7]\n', "sweep.zip.name: expected a list of non-empty"),
    ('sweep = 3\n', "sweep: expected a table"),
])
def test_bad_sweeps_are_one_line(table, expected):
    text = BASE + table if not table.startswith("sweep =") else table + BASE
    with pytest.raises(SpecError) as err:
        parse_sweep(text, default_name="base")
    msg = str(err.value)
    assert expected in msg and "\n" not in msg, msg


def test_too_many_members_refused_before_building_them():
    axis = ", ".join(str(0.5 + i * 1e-4) for i in range(1, 101))
    with pytest.raises(SpecError, match="sweep: 1000000 members; expected at most"):
        _sweep(f'[sweep]\n"model.beta" = [{axis}]\n"model.b_max" = [{axis}]\n"model.alpha" = [{axis}]\n')
