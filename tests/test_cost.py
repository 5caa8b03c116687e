"""The cost estimate includes the limit: the rule the solve will use is chosen first, and its size is printed
before anything is solved (distntk/cost.py, docs/model.md#kernel).  How close the CPU figure comes to the
measured solve is a benchmark, ``bench/bench_limit_cost.py``, not a test: speed is measured, not asserted."""

import pytest
from raytools import tiny_spec

from distntk import limit as limit_mod
from distntk.chain import window_chain
from distntk.cli import main
from distntk.cost import (
    LIMIT_BASE_SECONDS,
    SECONDS_PER_NODE_STEP,
    SECONDS_PER_PATH_STEP,
    estimate_cost,
    estimate_limit,
    total_cost,
)
from distntk.spec import load_spec

THREE = "inputs = [-1.0, 0.0, 1.0]\ntransition = [[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]]"


def _three_state(tmp_path, extra=""):
    """A three-state chain at L = 4: the longest window under max_histories leaves rho^L > 1e-6 at
    b_max = 0.3, so limit.memory = "auto" resolves to the sampled limit."""
    p = tiny_spec(tmp_path / "three.toml")
    text = p.read_text()
    old = text[text.index("inputs"):text.index("]]", text.index("transition")) + 2]
    p.write_text(text.replace(old, THREE) + extra)
    return p


def test_the_window_estimate_chooses_the_rule_the_solve_then_reuses(tmp_path, monkeypatch):
    exp = load_spec(tiny_spec(tmp_path / "tiny.toml")).experiment
    assert exp.limit.memory == "window"
    limit_mod._RULES.clear()
    lc = estimate_limit(exp)
    H = window_chain(exp.chain, exp.L).n_histories
    assert lc.method == "window" and lc.segments == 1
    assert lc.node_steps == lc.nodes * H * exp.L  # every node through every history of the window
    assert lc.core_seconds == pytest.approx(LIMIT_BASE_SECONDS + SECONDS_PER_NODE_STEP * lc.node_steps)

    def chosen_again(*a, **k):
        raise AssertionError("the solve chose its rule again")

    monkeypatch.setattr(limit_mod, "_choose_rule", chosen_again)
    pred = exp.predictions()
    assert pred.attrs["kernel_nodes"] == lc.nodes


def test_the_cost_of_a_run_adds_the_limit_to_the_replicas(tmp_path):
    exp = load_spec(tiny_spec(tmp_path / "tiny.toml")).experiment
    with_limit, without = estimate_cost(exp), estimate_cost(exp, limit=False)
    assert without.limits == () and len(with_limit.limits) == 1
    assert with_limit.core_hours == pytest.approx(without.core_hours + with_limit.limits[0].core_seconds / 3600)
    both = total_cost([with_limit, with_limit])
    assert len(both.limits) == 2 and both.core_hours == pytest.approx(2 * with_limit.core_hours)
    assert "limit (window, " in with_limit.describe() and "2 limits" in both.describe()


def test_a_sampled_limit_is_costed_and_announced_before_anything_is_solved(tmp_path, capsys):
    spec = _three_state(tmp_path, "\n[limit]\nsegments = 4\nsegment_steps = 512\n")
    exp = load_spec(spec).experiment
    assert exp.limit.memory == "sampled"
    lc = estimate_limit(exp)
    basis = window_chain(exp.chain, exp.limit.basis_L, max_histories=1 << 20)
    assert lc.method == "sampled" and lc.segments == 4
    # 4 segments of 512 steps, each started burn steps early, plus every history of the basis window
    burn = (lc.node_steps / lc.nodes - basis.n_histories * basis.L) / 4 - 512
    assert burn == int(burn) and burn >= exp.limit.l0
    assert lc.core_seconds == pytest.approx(LIMIT_BASE_SECONDS + SECONDS_PER_PATH_STEP * lc.node_steps)
    store = tmp_path / "s.zarr"
    assert main(["run", str(spec), "--store", str(store), "--max-core-hours", "1e-12"]) == 2
    err = capsys.readouterr().err
    said, refusal = err.splitlines()[-2:]
    assert f"limit (sampled, {lc.nodes:,} quadrature nodes over 4 segments) about" in said
    assert refusal.startswith("distntk: error: the estimate is") and not store.exists()
