"""The sampled (infinite-past) limit of distntk.longmem against the exact window solver.

At b_max = 0.3 (rho = 0.3) a window of L = 12 states is exact to rho^12 ~ 5e-7, far below the
Monte Carlo standard errors the tests use (~1e-4), so ``solve_limit(L=12)`` is the truth.  Both
use the same kernel tolerance (1e-6 on the entries: a few 1e-6 on N*Var at most).
"""

import dataclasses

import numpy as np
import pytest
from scipy import stats

from distntk.chain import markov_chain
from distntk.limit import LimitConfig, solve_limit
from distntk.longmem import sample_limit, sampled_problem, solve_sampled
from distntk.rnn import RNNConfig
from distntk.spec import SpecError, parse_spec
from distntk.target import make_target

pytestmark = pytest.mark.timeout(600)

CHAIN = markov_chain([[0.8, 0.2], [0.3, 0.7]], [[-1.0], [1.0]])
TARGET = make_target("tanh_linear", inner=[1.0, 0.8], outer=[0.0, 0.0, 0.3])
CFG = RNNConfig(b_max=0.3)
L = 12
TIMES = [0.5, 2.0]
PROBES = np.array([[0] * L, [1] * L, [0, 1] * (L // 2)])
QUAD = 1e-6


@pytest.fixture(scope="module")
def exact():
    """The window solver at L = 12 on the probes: h, N*Var (Poisson, i.i.d.) and the init coefficient."""
    lim = solve_limit(CFG, CHAIN, TARGET, L=L, limit=LimitConfig(tol=QUAD))
    idx = lim.window.index(PROBES)
    E = np.zeros((len(idx), lim.window.n_histories))
    E[np.arange(len(idx)), idx] = 1.0
    fv = lim.fluctuation_variances(TIMES, E)
    d = lambda a: np.diagonal(a, axis1=1, axis2=2)  # noqa: E731
    return {"h": lim.h(TIMES)[:, idx], "nvar_poisson": d(fv["poisson"]), "nvar_iid": d(fv["iid"]),
            "var_init_coef": d(lim.init_variance(TIMES, E))}


@pytest.fixture(scope="module")
def problem():
    """Basis window L_b = 8 (256 histories), control variate at L0 = 3 (the target's depth)."""
    return sampled_problem(CFG, CHAIN, 8, 3, steps=1024, seed=0, tol=QUAD)


@pytest.fixture(scope="module")
def evaluation(problem):
    return sample_limit(problem, TARGET, 2).evaluation(PROBES, L)


def test_sampled_limit_lands_within_three_standard_errors_of_the_exact_window(problem, evaluation, exact):
    sl = sample_limit(dataclasses.replace(problem, seed=101), TARGET, 16)
    out = sl.predict(TIMES, PROBES, L, evaluation=evaluation)
    assert sl.basis_residual < 1e-9  # the basis holds the infinite-past features
    for name in ("h", "nvar_poisson", "nvar_iid", "var_init_coef"):
        se = out[name + "_se"]
        # the errors are honest Monte Carlo errors: positive, and small against the values
        assert np.all(se > 0) and np.all(se < 1e-3 * np.abs(out[name]).max() + 1e-6), name
        z = (out[name] - exact[name]) / se
        assert np.all(np.abs(z) < 3.0), (name, z)
    # the L0 = 3 window alone misses a memory effect that the paths measure (it is not rho^L)
    assert np.abs(out["nvar_poisson_corr"]).max() > 4 * out["nvar_poisson_se"].max()


def test_ninety_five_percent_intervals_cover_over_fifty_seeds(problem, evaluation, exact):
    """Interval est +- t_{15, 0.975} se (16 segments: a jackknife with 15 degrees of freedom) around
    the Poisson N*Var at the most likely window and t = 2.  Fifty fixed seeds: the count is
    Binomial(50, p); [44, 49] of 50 holds p = 0.95 with probability 0.89 and fails for a p below
    about 0.84 (or intervals so wide that every seed covers)."""
    pb = dataclasses.replace(problem, steps=256)
    q = stats.t.isf(0.025, 15)
    truth = exact["nvar_poisson"][1, 0]
    probes, win, C_p, Cs_p, risk = evaluation
    first = (probes[:1], win, C_p[:1], Cs_p[:1], risk)  # the most likely window (all -1) alone
    cover = []
    for seed in range(50):
        out = sample_limit(dataclasses.replace(pb, seed=1000 + seed), TARGET, 16).predict([2.0], probes[:1], L,
                                                                                            evaluation=first)
        est, se = out["nvar_poisson"][0, 0], out["nvar_poisson_se"][0, 0]
        cover.append(abs(est - truth) <= q * se)
    print(f"coverage of the 95 % intervals: {np.mean(cover):.2f} of {len(cover)} seeds")
    assert 0.88 <= np.mean(cover) <= 0.99, np.mean(cover)


def _agree(a, b, names=("h", "nvar_poisson", "nvar_iid", "var_init_coef", "risk_h", "nvar_risk_poisson")):
    """Every output within 4 combined standard errors (about 30 numbers compared: 4 sigma keeps a false
    alarm below 1 in 500 when all agree)."""
    for name in names:
        se = np.sqrt(a[name + "_se"] ** 2 + b[name + "_se"] ** 2)
        assert np.all(np.abs(a[name] - b[name]) <= 4 * se), (name, a[name] - b[name], se)


def test_results_do_not_depend_on_L0_or_the_segment_split(problem, evaluation):
    base = sample_limit(dataclasses.replace(problem, seed=7), TARGET, 16).predict(TIMES, PROBES, L,
                                                                                  evaluation=evaluation)
    # another control-variate window (the same paths, another estimator)
    other_L0 = sample_limit(dataclasses.replace(problem, seed=7, L0=5), TARGET, 16).predict(
        TIMES, PROBES, L, evaluation=evaluation)
    _agree(base, other_L0)
    # another split of about the same path length: 8 segments of 2048 steps, other seeds
    split = sample_limit(dataclasses.replace(problem, seed=8, steps=2048), TARGET, 8).predict(
        TIMES, PROBES, L, evaluation=evaluation)
    _agree(base, split)


def test_no_memory_makes_the_sampled_limit_the_window_limit():
    """b_max = 0: the memory state is the last input's, so the infinite past equals any window; the paths'
    correction vanishes identically and the result equals the dense window solver to round-off."""
    cfg = RNNConfig(b_max=0.0)
    sl = solve_sampled(cfg, CHAIN, TARGET, LimitConfig(tol=QUAD, memory="sampled", basis_L=4, l0=3, segments=4,
                                                      segment_steps=512), seed=3)
    probes = np.array([[0, 0, 0, 0], [1, 0, 1, 1]])
    out = sl.predict(TIMES, probes, 4)
    lim = solve_limit(cfg, CHAIN, TARGET, L=4, limit=LimitConfig(tol=QUAD), method="dense")
    idx = lim.window.index(probes)
    E = np.zeros((2, lim.window.n_histories))
    E[np.arange(2), idx] = 1.0
    fv = lim.fluctuation_variances(TIMES, E)
    np.testing.assert_allclose(out["h"], lim.h(TIMES)[:, idx], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out["nvar_poisson"], np.diagonal(fv["poisson"], axis1=1, axis2=2), rtol=1e-7)
    np.testing.assert_allclose(out["var_init_coef"], np.diagonal(lim.init_variance(TIMES, E), axis1=1, axis2=2),
                               rtol=1e-7)
    assert np.abs(out["h_corr"]).max() < 1e-12 and np.abs(out["nvar_poisson_se"]).max() < 1e-10


SPEC = """
name = "lm"
seed = 1
[chain]
inputs = [-1.0, 1.0]
transition = [[0.8, 0.2], [0.3, 0.7]]
[target]
name = "tanh_linear"
inner = [1.0, 0.8]
outer = [0.0, 0.0, 0.3]
[model]
b_max = {b_max}
[training]
T = 1.0
times = [1.0]
L = 6
[limit]
{limit}
[replicas]
widths = [16]
n_init = 2
n_data = 4
[probes]
most_likely = 1
"""


def test_spec_memory_mode_auto_window_and_sampled():
    # auto: a window of 4096 histories meets 1e-6 at rho = 0.3 (L = 12), not at rho = 0.9
    low = parse_spec(SPEC.format(b_max=0.3, limit=""))
    high = parse_spec(SPEC.format(b_max=0.9, limit=""))
    assert low.experiment.limit.memory == "window" and "memory" not in low.canonical["limit"]
    assert high.experiment.limit.memory == "sampled"
    assert high.canonical["limit"]["memory"] == "sampled" and high.canonical["limit"]["l0"] == 10
    forced = parse_spec(SPEC.format(b_max=0.3, limit='memory = "sampled"\nl0 = 4\nsegments = 4'))
    lim = forced.experiment.limit
    assert (lim.memory, lim.l0, lim.segments) == ("sampled", 4, 4)
    assert forced.hash != low.hash
    window = parse_spec(SPEC.format(b_max=0.9, limit='memory = "window"'))
    assert window.experiment.limit.memory == "window" and window.canonical["limit"]["memory"] == "window"


@pytest.mark.parametrize("limit, message", [
    ('memory = "infinite"', "limit.memory: expected 'auto', 'window' or 'sampled'"),
    ('memory = "sampled"\nl0 = 2', "limit.l0: expected an integer in [3, 10]"),
    ('memory = "window"\nl0 = 4', "limit.l0: applies only to limit.memory = 'sampled'"),
    ('memory = "sampled"\nsegments = 1', "limit.segments: expected an integer in [2, 4096]"),
    ('memory = "sampled"\nsegment_steps = 10', "limit.segment_steps: expected an integer in [256, "),
])
def test_bad_memory_keys_are_one_line_errors(limit, message):
    with pytest.raises(SpecError) as err:
        parse_spec(SPEC.format(b_max=0.3, limit=limit))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_prediction_errors_widen_the_verdict_intervals(sticky_store):
    """A sampled limit's standard errors enter the verdicts: the ratio interval's log half-width becomes
    q sqrt((within_se / within)^2 + (pred_se / pred)^2), the mean's half-width q sqrt(mean_se^2 + h_se^2)."""
    from distntk.estimator import estimate

    ds = sticky_store.copy()
    plain = estimate(ds)
    ds["nvar_poisson_se"] = 0.2 * ds["nvar_poisson"]
    ds["h_se"] = 0.0 * ds["h"] + 0.05
    wide = estimate(ds)
    q = np.log(plain.ratio_poisson_hi / plain.ratio_poisson)  # q * within_se / within
    rel = plain.within_se / plain.within
    expect = q * np.sqrt(1.0 + (0.2 / rel) ** 2)
    np.testing.assert_allclose(np.log(wide.ratio_poisson_hi / wide.ratio_poisson), expect, rtol=1e-10)
    np.testing.assert_allclose(wide.ratio_iid_hi, plain.ratio_iid_hi, rtol=1e-12)  # no iid error given
    half_plain = plain.mean_error_hi - plain.mean_error
    half_wide = wide.mean_error_hi - wide.mean_error
    np.testing.assert_allclose(half_wide, half_plain * np.sqrt(1 + (0.05 / plain.mean_se) ** 2), rtol=1e-10)
    # wider intervals can only turn verdicts consistent
    assert ((wide.verdict_poisson == "consistent") >= (plain.verdict_poisson == "consistent")).all()
