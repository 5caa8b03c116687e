"""Finite-width extrapolation (distntk.estimator.extrapolate): coverage at known r_inf, c and gamma.

The simulations draw per-width ratios the way the estimator produces them: a log-normal ratio around
``r_inf (1 + c N^-gamma)`` whose log-scale standard error is itself estimated with 31 degrees of freedom
(32 initialisations), and a mean difference ``c N^-gamma`` with a Gaussian error whose standard error is
estimated the same way.  4,000 repetitions ride along the ``probe`` axis, so one call does them all.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from distntk.estimator import EstimateError, estimate, extrapolate

WIDTHS = [128, 256, 512, 1024, 2048, 4096]


def _synthetic(rng, reps, widths, r_inf, c, gamma, sig=0.08, df=31, beta=0.75) -> xr.Dataset:
    N = np.asarray(widths, float)[:, None]
    shape = (len(widths), reps)
    ratio = r_inf * (1 + c * N**-gamma) * np.exp(sig * rng.standard_normal(shape))
    s_hat = sig * np.sqrt(rng.chisquare(df, shape) / df)
    m_se = 0.02
    mean_err = c * N**-gamma + m_se * rng.standard_normal(shape)
    ones = np.ones(shape)
    dims = ("width", "time", "probe")
    v = {"ratio_poisson": ratio, "within": ones, "within_se": s_hat, "ratio_init": ratio,
         "between_se": ratio * s_hat, "pred_between": ones, "mean_error": mean_err,
         "mean_se": m_se * np.sqrt(rng.chisquare(df, shape) / df), "n_init_within": ones * (df + 1),
         "n_init": ones * (df + 1), "pred_within_poisson": ones}
    return xr.Dataset({k: (dims, a[:, None, :]) for k, a in v.items()},
                      coords={"width": widths, "time": [2.0], "probe": np.arange(reps)}, attrs={"beta": beta})


def _coverage(ex, quantity, target) -> float:
    e = ex.sel(quantity=quantity, time=2.0)
    return float(((e.r_inf_lo <= target) & (target <= e.r_inf_hi)).mean())


@pytest.mark.parametrize("gamma", ["drift", 0.25])
def test_a_fixed_exponent_covers_at_its_level(gamma):
    """95 % intervals with the exponent of the mechanism that made the data (drift: 1 - beta = 0.25).

    With 4,000 repetitions the binomial standard deviation of a coverage near 0.95 is 0.0035.  The
    interval is inflated by sqrt(chi2/dof) when a fit is worse than its errors, which makes it
    conservative by design (0.96-0.97 when measured); [0.94, 0.98] is about 3 standard deviations
    around that either way: under-coverage below 0.94 fails, and so would intervals so wide as to say nothing.
    """
    ex = extrapolate(_synthetic(np.random.default_rng(1), 4000, WIDTHS, 1.0, -0.8, 0.25), gamma=gamma)
    for quantity, target in (("poisson", 1.0), ("init", 1.0), ("mean", 0.0)):
        assert 0.94 <= _coverage(ex, quantity, target) <= 0.98, quantity
    assert (ex.gamma.values == 0.25).all()


@pytest.mark.parametrize("gamma_true", [0.05, 0.5, 1.0])
def test_a_fitted_exponent_covers_at_least_at_its_level(gamma_true):
    """The fitted exponent's interval (a union over the exponents the profile keeps) is conservative: >= 0.94."""
    ex = extrapolate(_synthetic(np.random.default_rng(2), 4000, WIDTHS, 1.0, -0.8, gamma_true), gamma="fitted")
    for quantity, target in (("poisson", 1.0), ("mean", 0.0)):
        assert _coverage(ex, quantity, target) >= 0.94, quantity


def test_noise_free_data_give_back_r_inf_c_and_gamma():
    ds = _synthetic(np.random.default_rng(3), 3, WIDTHS, 0.8, 0.5, 0.5, sig=1e-9)
    ex = extrapolate(ds, gamma="mc")
    e = ex.sel(quantity="poisson")
    np.testing.assert_allclose(e.r_inf.values, 0.8, rtol=1e-6)
    np.testing.assert_allclose(e.c.values, 0.5, rtol=1e-5)
    assert (e.verdict_limit.values == "inconsistent in the limit").all()
    fitted = extrapolate(ds, gamma="fitted").sel(quantity="poisson")
    np.testing.assert_allclose(fitted.gamma.values, 0.5, atol=0.011)  # the grid's step is 0.01
    assert (fitted.verdict_limit.values == "inconsistent in the limit").all()


def test_what_cannot_be_fitted_is_na_and_bad_input_is_one_line():
    two = extrapolate(_synthetic(np.random.default_rng(4), 5, [256, 512], 1.0, 0.1, 0.5), gamma="fitted")
    assert (two.verdict_limit.values == "n/a").all() and np.isnan(two.r_inf.values).all()
    fixed = extrapolate(_synthetic(np.random.default_rng(4), 5, [256, 512], 1.0, 0.1, 0.5), gamma="init")
    assert np.isfinite(fixed.r_inf.values).all()  # two widths determine a line of known exponent
    with pytest.raises(EstimateError, match="gamma 'slow': expected 'fitted', 'drift', 'init', 'mc' or a number"):
        extrapolate(_synthetic(np.random.default_rng(4), 5, WIDTHS, 1.0, 0.1, 0.5), gamma="slow")


def test_on_a_store_estimate(sticky):
    """On a real store's estimate (3 widths): every cell of every quantity gets a limit and a verdict."""
    import tempfile
    from pathlib import Path

    from conftest import write_store

    with tempfile.TemporaryDirectory() as tmp:
        ds = write_store(Path(tmp) / "s.zarr", sticky.spec, sticky.results).load()
    est = estimate(ds)
    ex = extrapolate(est, gamma="drift")
    live = ~est.deterministic.any("width").values  # t = 0 cells have no variance to compare
    assert np.isfinite(ex.r_inf.sel(quantity="poisson").values[live]).all()
    assert set(np.unique(ex.verdict_limit.values)) <= {"consistent in the limit", "inconsistent in the limit", "n/a"}
    assert (ex.n_widths.values <= 3).all() and ex.attrs["gamma_mode"] == "drift"


def test_query_rows_carry_the_extrapolation_of_the_one_estimator(tmp_path, capsys):
    """`distntk query --format json` rows hold r_inf, its interval, gamma and the limit verdict of the
    Poisson ratio: the numbers of extrapolate(estimate(store)), the same in every row of a cell; a store of
    two widths says n/a (a fitted exponent needs three)."""
    import json

    from conftest import write_store
    from raytools import tiny_spec

    from distntk.cli import main
    from distntk.spec import load_spec
    from distntk.store import open_store

    sp = load_spec(tiny_spec(tmp_path / "t.toml", widths=(16, 32, 64), n_init=4, n_data=8))
    e = sp.experiment
    write_store(tmp_path / "s.zarr", sp, {u: e.compute(u) for u in e.units()})
    assert main(["query", str(tmp_path / "s.zarr"), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    ext = extrapolate(estimate(open_store(tmp_path / "s.zarr"))).sel(quantity="poisson")
    assert len(rows) == 3 * len(e.times) * len(e.probes)
    for r in rows:
        x = ext.sel(time=r["time"], probe=r["probe"])
        for k in ("r_inf", "r_inf_lo", "r_inf_hi", "gamma"):
            assert r[k] == pytest.approx(float(x[k]), rel=1e-12, abs=0), k
        assert r["limit"] == str(x["verdict_limit"].values).replace(" in the limit", "")
        assert r["r_inf_lo"] <= r["r_inf"] <= r["r_inf_hi"]
    two = load_spec(tiny_spec(tmp_path / "two.toml", widths=(16, 32), n_init=2, n_data=4))
    write_store(tmp_path / "two.zarr", two, {u: two.experiment.compute(u) for u in two.experiment.units()})
    assert main(["query", str(tmp_path / "two.zarr"), "--format", "json"]) == 0
    assert {(r["r_inf"], r["gamma"], r["limit"]) for r in json.loads(capsys.readouterr().out)["rows"]} == \
        {(None, None, "n/a")}


def test_the_store_report_shows_the_extrapolation(tmp_path):
    """The store report's extrapolation: a figure and one table row per (t, probe, quantity) with the numbers
    of extrapolate(estimate(store)); with two widths it says that three are needed."""
    from conftest import write_store
    from raytools import tiny_spec

    from distntk.report import write_report
    from distntk.spec import load_spec
    from distntk.store import open_store

    sp = load_spec(tiny_spec(tmp_path / "t.toml", widths=(16, 32, 64), n_init=4, n_data=8))
    e = sp.experiment
    write_store(tmp_path / "s.zarr", sp, {u: e.compute(u) for u in e.units()})
    md = write_report(tmp_path / "s.zarr", tmp_path / "rep", memory=None).read_text()
    assert (tmp_path / "rep" / "extrapolation.png").stat().st_size > 10_000
    section = md[md.index("## 5b. Extrapolation to infinite width"):md.index("## 6.")]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| t ")]
    assert len(rows) == len(e.times) * len(e.probes) * 3
    ext = extrapolate(estimate(open_store(tmp_path / "s.zarr")))
    x = ext.sel(quantity="poisson", time=e.times[-1], probe=e.probe_labels()[0])
    assert f"| {e.times[-1]:g} | {e.probe_labels()[0]} | N·Var / V_t (Poisson) | {float(x['r_inf']):.3g} [" in section
    two = load_spec(tiny_spec(tmp_path / "two.toml", widths=(16, 32), n_init=2, n_data=4))
    write_store(tmp_path / "two.zarr", two, {u: two.experiment.compute(u) for u in two.experiment.units()})
    md = write_report(tmp_path / "two.zarr", tmp_path / "rep2", memory=None).read_text()
    assert "Needs at least three widths with data." in md and not (tmp_path / "rep2" / "extrapolation.png").exists()
