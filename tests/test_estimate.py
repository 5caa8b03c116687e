"""Tests for distntk.estimator: interval coverage on synthetic data, verdicts, rates, the sticky chain.

Coverage tolerance.  A 95% interval checked on M independent repetitions covers
the truth a Binomial(M, 0.95) number of times; the test accepts the count when
it lies in the central 99.9% range of that law (M = 4000: 93.8%-96.1%), so an
exact interval fails a given check with probability 1e-3 and an interval off
by 2 points of coverage fails it almost surely.  Seeds are fixed, so the tests
are deterministic.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from distntk.estimator import (
    EstimateError,
    convergence_rates,
    estimate,
    missing_units,
    variance_components,
)
from distntk.experiment import Unit
from distntk.memory import memory_contraction
from distntk.rnn import RNNConfig

M = 4000
BINOM = stats.binom.ppf([0.0005, 0.9995], M, 0.95) / M


def _one_way(rng, I, R, sb, sw, het=0.0, mu=1.5):
    """``M`` repetitions of ``y_ij = mu + a_i + e_ij``; ``het`` spreads sigma_w across inits (log-normal)."""
    a = rng.standard_normal((M, I, 1)) * np.sqrt(sb)
    s = np.sqrt(sw * np.exp(het * rng.standard_normal((M, I, 1)) - het**2 / 2))  # E s^2 = sw
    y = mu + a + rng.standard_normal((M, I, R)) * s
    return xr.DataArray(y, dims=("rep", "init", "data"))


def _covers(lo, hi, truth):
    return float(((lo <= truth) & (truth <= hi)).mean())


@pytest.mark.parametrize(
    "I, R, sb, sw",
    [
        (8, 64, 1.0, 1.0),  # between-init term dominates (the regime of the real runs)
        (8, 64, 0.016, 1.0),  # sigma_b^2 about sigma_w^2 / R: Satterthwaite covers ~76% here
        (16, 32, 0.02, 1.0),
        (4, 16, 0.1, 1.0),  # few inits
    ],
)
def test_balanced_intervals_cover_at_nominal_rate(I, R, sb, sw):
    c = variance_components(_one_way(np.random.default_rng(I * 1000 + R), I, R, sb, sw))
    assert BINOM[0] <= _covers(c.within_lo, c.within_hi, sw) <= BINOM[1]
    assert BINOM[0] <= _covers(c.between_lo, c.between_hi, sb) <= BINOM[1]
    half = stats.t.isf(0.025, c.n_init - 1) * c.mean_se
    assert BINOM[0] <= _covers(c["mean"] - half, c["mean"] + half, 1.5) <= BINOM[1]
    assert np.all(c.between >= 0) and np.all(c.between_lo >= 0)
    np.testing.assert_allclose(c.df_within, I * (R - 1))


@pytest.mark.parametrize("I, R, het", [(8, 64, 0.0), (16, 32, 0.0), (16, 32, 0.2)])
def test_init_robust_within_interval_covers(I, R, het):
    """The comparisons' interval: t on the per-init variances; nominal with or without spread of sigma_w."""
    c = variance_components(_one_way(np.random.default_rng(7 + I + int(10 * het)), I, R, 0.05, 1.0, het))
    spread = np.exp(stats.t.isf(0.025, c.n_init_within - 1) * c.within_se / c.within)
    assert BINOM[0] <= _covers(c.within / spread, c.within * spread, 1.0) <= BINOM[1]


def test_chi_square_interval_undercovers_when_var_g_given_theta_varies():
    """Why the comparisons use the init-robust interval: 40% spread of sigma_w across inits."""
    c = variance_components(_one_way(np.random.default_rng(3), 16, 32, 0.05, 1.0, het=0.4))
    spread = np.exp(stats.t.isf(0.025, c.n_init_within - 1) * c.within_se / c.within)
    assert _covers(c.within_lo, c.within_hi, 1.0) < 0.8
    assert _covers(c.within / spread, c.within * spread, 1.0) > 0.92
    assert float(c.within_dispersion.median()) > 2.0


@pytest.mark.parametrize("sb", [1.0, 0.05])
def test_unbalanced_intervals_cover(sb):
    """Partial store: some inits miss whole blocks.  Within stays exact; the between
    interval (unweighted means + MLS) is approximate, so its band is widened to [0.92, 0.975]."""
    mask = np.ones((8, 64), bool)
    mask[1, 48:] = mask[3, 32:] = mask[6, 16:] = mask[7, 48:] = False
    done = xr.DataArray(mask, dims=("init", "data"))
    y = _one_way(np.random.default_rng(int(100 * sb)), 8, 64, sb, 1.0)
    y = y.where(done)  # NaN where not done, as in a store
    c = variance_components(y, done)
    assert float(c.n_obs[0]) == mask.sum()
    assert BINOM[0] <= _covers(c.within_lo, c.within_hi, 1.0) <= BINOM[1]
    assert 0.92 <= _covers(c.between_lo, c.between_hi, sb) <= 0.975


def test_components_by_hand():
    y = xr.DataArray([[1.0, 2.0, 3.0], [4.0, 6.0, np.nan]], dims=("init", "data"))
    c = variance_components(y)
    # within: (2 + 2) / (2 + 1); init means 2, 5; n~ = 2 / (1/3 + 1/2) = 2.4
    assert float(c.within) == pytest.approx(4 / 3)
    assert float(c["mean"]) == pytest.approx(3.5)
    assert float(c.mean_se) == pytest.approx(np.sqrt(4.5 / 2))
    assert float(c.ms_between) == pytest.approx(2.4 * 4.5)
    assert float(c.between_raw) == pytest.approx((2.4 * 4.5 - 4 / 3) / 2.4)
    assert int(c.df_within) == 3 and int(c.n_init) == 2


def test_bad_input_says_what_was_expected():
    with pytest.raises(EstimateError, match="expected an 'init' dim"):
        variance_components(xr.DataArray(np.zeros((3, 4)), dims=("x", "data")))
    with pytest.raises(EstimateError, match="no variable 'output'"):
        estimate(xr.Dataset())


# --------------------------------------------------------------------------- synthetic stores


def _synthetic_store(rng, widths=(64, 256, 1024), I=16, R=64, n_t=3, P=4, beta=0.75, bias=None):
    """A store-schema dataset whose components are exactly the predictions (optionally a mean bias b N^s)."""
    t = np.linspace(0.5, 2.0, n_t)
    h = rng.normal(size=(n_t, P))
    nvar = rng.uniform(0.2, 0.5, (n_t, P))
    var0 = rng.uniform(0.05, 0.15, (n_t, P))
    W = len(widths)
    out = np.empty((W, I, R, n_t, P))
    for k, N in enumerate(widths):
        a = rng.standard_normal((I, 1, n_t, P)) * np.sqrt(N ** (1 - 2 * beta) * var0)
        e = rng.standard_normal((I, R, n_t, P)) * np.sqrt(nvar / N)
        out[k] = h + a + e + (0.0 if bias is None else bias[0] * N ** bias[1])
    return xr.Dataset(
        {
            "output": (("width", "init", "data", "time", "probe"), out),
            "done": (("width", "init", "data"), np.ones((W, I, R), bool)),
            "h": (("time", "probe"), h),
            "nvar_poisson": (("time", "probe"), nvar),
            "nvar_iid": (("time", "probe"), nvar / 4),
            "var_init_coef": (("time", "probe"), var0),
        },
        coords={"width": np.array(widths), "init": np.arange(I), "data": np.arange(R), "time": t,
                "probe": [f"p{j}" for j in range(P)]},
        attrs={"beta": beta, "block": 16},
    )


def test_verdicts_on_a_store_with_exact_predictions():
    ds = _synthetic_store(np.random.default_rng(5))
    est = estimate(ds)
    n = est.verdict_poisson.size  # 36 cells; 99% intervals -> expect ~0.4 inconsistent
    assert (est.verdict_poisson == "consistent").sum() >= n - 3
    assert (est.verdict_init == "consistent").sum() >= n - 3
    assert (est.verdict_mean == "consistent").sum() >= n - 3
    assert (est.verdict_iid == "inconsistent").all()  # truth is 4x the "iid" prediction
    np.testing.assert_allclose(est.ratio_iid, 4 * est.ratio_poisson)
    # the width scalings: N Var and N^{1-2beta}
    np.testing.assert_allclose(est.pred_within_poisson.sel(width=256), ds.nvar_poisson / 256)
    np.testing.assert_allclose(est.pred_between.sel(width=1024), 1024**-0.5 * ds.var_init_coef)


def test_wrong_prediction_is_rejected():
    ds = _synthetic_store(np.random.default_rng(6))
    ds["nvar_poisson"] = ds.nvar_poisson * 2
    ds["var_init_coef"] = ds.var_init_coef * 10
    ds["h"] = ds.h + 0.5
    est = estimate(ds)
    assert (est.verdict_poisson == "inconsistent").all()
    assert (est.verdict_mean == "inconsistent").all()
    assert (est.verdict_init == "inconsistent").mean() > 0.9


def test_rates_recover_a_known_slope():
    """Mean bias 2 N^{-1/2}, far above the noise: the fitted slope's 95% interval holds -1/2, excludes 0."""
    ds = _synthetic_store(np.random.default_rng(8), widths=(64, 128, 256, 512, 1024), I=64, R=16, bias=(2.0, -0.5))
    rates = convergence_rates(estimate(ds))
    s = rates.sel(quantity="mean_error")
    assert (s.n_used == 5).all()
    inside = (s.slope_lo <= -0.5) & (-0.5 <= s.slope_hi)
    assert int(inside.sum()) >= inside.size - 1  # 12 cells at 95%
    assert (s.slope_hi < -0.3).all()
    assert rates.attrs["order_init"] == pytest.approx(-0.25)


def test_fluctuation_sizes_scale_with_the_model_orders():
    """Exact synthetic store: sqrt(within) ~ N^{-1/2}, sqrt(between) ~ N^{1/2-beta}; 36 cells at 99%."""
    rates = convergence_rates(estimate(_synthetic_store(np.random.default_rng(10))))
    for q, expected in (("sd_within", -0.5), ("sd_between", -0.25)):
        r = rates.sel(quantity=q)
        assert float(r.expected_slope) == pytest.approx(expected)
        assert int((r.slope_verdict == "consistent").sum()) >= r.slope.size - 2


def test_rates_leave_noise_out():
    """No bias: |mean - h| is noise at every width, so no slope is claimed for most cells."""
    rates = convergence_rates(estimate(_synthetic_store(np.random.default_rng(9))))
    s = rates.sel(quantity="mean_error")
    assert int(np.isnan(s.slope).sum()) >= s.slope.size // 2


def test_missing_units_names_the_undone_blocks():
    ds = _synthetic_store(np.random.default_rng(1), widths=(64, 256), I=4, R=40)
    ds["done"][1, 2, 16:32] = False
    ds["done"][0, 0, 39] = False
    assert missing_units(ds) == [Unit(64, 0, 32, 40), Unit(256, 2, 16, 32)]
    assert missing_units(_synthetic_store(np.random.default_rng(1), I=2, R=8)) == []


def test_estimate_uses_only_done_replicas():
    ds = _synthetic_store(np.random.default_rng(2), widths=(64,), I=4, R=32)
    ref = estimate(ds)
    ds["output"][0, :, 16:] = 1e6  # garbage in replicas that are not done
    ds["done"][0, :, 16:] = False
    est = estimate(ds)
    assert float(est.within.max()) < 1.0
    assert est.attrs["n_done"] == 64
    assert int(est.df_within.max()) == 4 * 15 and int(ref.df_within.max()) == 4 * 31


def test_package_exports_the_estimator():
    """``distntk.estimate`` is the function, one name for one thing: the module is ``distntk.estimator``."""
    import distntk

    mod = sys.modules["distntk.estimator"]
    import importlib.util
    assert importlib.util.find_spec("distntk.estimate") is None
    assert distntk.estimate is mod.estimate and callable(distntk.estimate)
    for name in ("EstimateError", "convergence_rates", "missing_units", "variance_components"):
        assert getattr(distntk, name) is getattr(mod, name) and name in distntk.__all__
    # the memory contraction simulates a network: its own module, beside rnn.py's seed keys (not the estimator's)
    assert distntk.memory_contraction is sys.modules["distntk.memory"].memory_contraction
    assert "memory_contraction" in distntk.__all__ and not hasattr(mod, "memory_contraction")


# --------------------------------------------------------------------------- memory fixed point


def test_memory_contraction_decays_at_most_like_rho():
    from distntk.chain import markov_chain

    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    mem = memory_contraction(RNNConfig(b_max=0.3), chain, 256, seed=1)
    assert mem.attrs["bound_holds"]
    assert mem.distance.values[0] > 0.5
    # per-unit factor |b sigma'| <= |b| <= b_max: the fitted rate is at most log rho (plus fit noise)
    assert mem.attrs["rate"] <= mem.attrs["log_rho"] + 3 * mem.attrs["rate_se"]
    assert mem.attrs["rate"] > mem.attrs["log_rho"] - 0.5  # and close to it: the slowest unit has |b| ~ b_max
    slow = memory_contraction(RNNConfig(b_max=0.8), chain, 256, seed=1)
    assert slow.attrs["bound_holds"] and slow.attrs["rate"] > mem.attrs["rate"] + 0.5


# ---------------------------------------------------------------------- the sticky chain (docs/model.md#reference-case)


def test_sticky_chain_poisson_consistent_iid_rejected(sticky_store):
    """N = 512, 16 inits x 32 data, in-process.  At this width the finite-N bias of N Var is a few
    percent (lead's runs and ours), well inside the ~20% half-width of the 99% interval.

    Declared checks: at the most likely window and t = T the headline ratio's 99% interval holds 1;
    over the 12 (time, probe) cells at most 2 are inconsistent (3 or more has probability < 3e-4 for
    an exact prediction with independent cells); every i.i.d. interval excludes 1 (ratio ~3.5)."""
    est = estimate(sticky_store)
    big = est.sel(width=512)
    head = big.sel(probe=big.probe.values[int(np.argmax(big.pi_probe.values))], time=2.0)
    assert head.ratio_poisson_lo <= 1.0 <= head.ratio_poisson_hi
    assert head.verdict_poisson == "consistent"
    assert int((big.verdict_poisson == "inconsistent").sum()) <= 2
    assert (big.verdict_iid == "inconsistent").all()
    assert (big.ratio_iid_lo > 2.0).all()
    # the risk is estimated too (its verdicts are reported, not asserted: biased up at small N)
    assert np.isfinite(est.risk_ratio_poisson).all() and est.risk_within.dims == ("width", "time")


def test_sticky_chain_rates_dataset(sticky_store):
    rates = convergence_rates(estimate(sticky_store))
    assert set(rates.quantity.values) == {"mean_error", "ratio_poisson", "ratio_init", "sd_within", "sd_between"}
    assert rates.value.dims == ("quantity", "width", "time", "probe")
    assert rates.risk_slope.dims == ("quantity", "time")
    # data fluctuations shrink like N^{-1/2} (docs/model.md (5.8)) at the most likely window, t = T
    sd = rates.sel(quantity="sd_within", time=2.0, probe=rates.probe.values[0])
    assert sd.slope_verdict == "consistent" and sd.slope_hi < -0.3
    assert int((rates.sel(quantity="sd_within").slope_verdict == "consistent").sum()) >= 9
    ok = np.isfinite(rates.slope)
    assert ((rates.slope_lo <= rates.slope) & (rates.slope <= rates.slope_hi)).where(ok, True).all()
