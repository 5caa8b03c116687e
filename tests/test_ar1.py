"""The AR(1) chain, its Rouwenhorst discretisation and the continuous limit (docs/model.md#ar1)."""

import time

import numpy as np
import pytest

from distntk.ar1 import ar1, ar1_limit, default_probes, probe_label, reference_chain
from distntk.chain import ChainError, rouwenhorst, window_chain
from distntk.limit import LimitConfig, solve_limit
from distntk.rnn import RNNConfig
from distntk.target import make_target


@pytest.mark.parametrize("n", [2, 3, 5, 9, 17])
@pytest.mark.parametrize("phi", [-0.4, 0.0, 0.7])
def test_rouwenhorst_moments(n, phi):
    """Mean, variance and lag-1 autocorrelation of the stationary chain match the AR(1) (to round-off)."""
    sigma = 0.8
    ch = rouwenhorst(n, phi, sigma)
    x = ch.inputs[:, 0]
    var = sigma**2 / (1 - phi**2)
    assert abs(ch.pi @ x) < 1e-12
    assert ch.pi @ x**2 == pytest.approx(var, rel=1e-12)
    assert (ch.pi * x) @ (ch.P @ x) == pytest.approx(phi * var, rel=1e-12, abs=1e-12)
    # conditional mean phi x: every lag's autocorrelation is phi^j
    assert np.allclose(ch.P @ x, phi * x, atol=1e-12)


@pytest.mark.parametrize("bad", [(1.0, 1.0), (0.5, 0.0), ([0.5, 0.2], [1.0]), (float("nan"), 1.0)])
def test_ar1_validation(bad):
    with pytest.raises(ChainError) as e:
        ar1(*bad)
    assert "\n" not in str(e.value)


def test_ar1_simulation_is_stationary():
    """Sample variance and lag-1 autocovariance of a long path within 5 standard errors (the estimators'
    spread from the AR(1) closed form: var of the sample variance ~ 2 s^4 (1 + phi^2) / ((1 - phi^2) n))."""
    ar = ar1([0.6, -0.3], [1.0, 0.5])
    n = 200_000
    x = ar.simulate(n, np.random.default_rng(np.random.SeedSequence([7, 1])))
    for i in range(2):
        phi, s2 = ar.phi[i], ar.sd[i] ** 2
        se = np.sqrt(2 * s2**2 * (1 + phi**2) / ((1 - phi**2) * n))
        assert abs(np.mean(x[:, i] ** 2) - s2) < 5 * se
        assert abs(np.mean(x[1:, i] * x[:-1, i]) - phi * s2) < 5 * se * 1.5
    ref = reference_chain(ar, 3)
    assert ref.n_states == 9 and ref.dim == 2
    labels = [probe_label(w) for w in default_probes(ar, 2)]
    assert len(set(labels)) == 3


@pytest.mark.slow
def test_rouwenhorst_limit_approaches_ar1_limit():
    """The exact finite-chain limit of the n-state Rouwenhorst chain approaches the AR(1) limit.

    Same quadrature rule (tensor Gauss, fixed resolution) on both sides, so the kernel is the same
    function and only the data law differs.  Quantities: h, nvar_poisson, nvar_iid, var_init_coef at the
    all-zero window (a grid point for every odd n) and the risk with its three variances.  Checks:
    (i) the discrepancy of the finite limit from the continuous estimate, in units of its Monte Carlo
    standard error, summed over the quantities (chi-square), is smaller at n = 17 than at n = 3;
    (ii) at n = 17 every quantity is within 4 standard errors.  Why 4: the finite limit is exact, so the
    only randomness is the continuous estimate's; its jackknife SE over 16 segments is a t-type scale with
    15 degrees of freedom, P(|t_15| > 4) ~ 1e-3 per quantity, ~1% over the 8 quantities, while the
    Rouwenhorst bias at n = 17 (spacing sd/2, moments exact to second order) is far below one SE here.
    """
    t0 = time.perf_counter()
    cfg = RNNConfig(noise_std=0.1)
    phi, sigma, L, R, times = 0.5, 0.6, 2, 6, [0.5, 2.0]
    tg = make_target("product", m=2)
    al = ar1_limit(cfg, ar1(phi, sigma), tg, L, LimitConfig(resolution=R, segments=16, segment_steps=2048),
                   n_basis=512)
    cont = al.predict(times, np.zeros((1, L)))
    assert al.basis_residual < 1e-4
    names = ["h", "nvar_poisson", "nvar_iid", "var_init_coef", "risk_h", "nvar_risk_poisson", "nvar_risk_iid",
             "var_risk_init_coef"]
    chi2 = {}
    for n in (3, 5, 9, 17):
        lim = solve_limit(cfg, rouwenhorst(n, phi, sigma), tg, L=L, limit=LimitConfig(resolution=R))
        win = lim.window
        E = np.zeros((1, win.n_histories))
        E[0, win.index([[(n - 1) // 2] * L])] = 1.0
        fv = lim.fluctuation_variances(times, E)
        r = lim.residual(times)
        ell = -win.pi * r
        risk = [lim.fluctuation_variances([t], ell[i:i + 1]) for i, t in enumerate(times)]
        fin = {
            "h": lim.h(times) @ E.T,
            "nvar_poisson": fv["poisson"][:, :, 0], "nvar_iid": fv["iid"][:, :, 0],
            "var_init_coef": lim.init_variance(times, E)[:, :, 0],
            "risk_h": 0.5 * (r**2) @ win.pi,
            "nvar_risk_poisson": np.array([v["poisson"][0, 0, 0] for v in risk]),
            "nvar_risk_iid": np.array([v["iid"][0, 0, 0] for v in risk]),
            "var_risk_init_coef": np.array([lim.init_variance([t], ell[i:i + 1])[0, 0, 0]
                                            for i, t in enumerate(times)]),
        }
        z = {k: (np.ravel(fin[k]) - np.ravel(cont[k])) / np.ravel(cont[k + "_se"]) for k in names}
        chi2[n] = sum(float(np.sum(v**2)) for v in z.values())
        if n == 17:
            for k, v in z.items():
                assert np.all(np.abs(v) < 4), (k, v, fin[k], cont[k], cont[k + "_se"])
    assert chi2[17] < chi2[3], chi2
    assert time.perf_counter() - t0 < 300
    assert window_chain(rouwenhorst(3, phi, sigma), L).n_histories == 9


def test_ar1_stream_pieces_and_replicas():
    """The stream's pieces concatenate to one stationary path (any piece sizes), and run_replicas trains on
    the AR(1) with value-window probes: reproducible, independent of the data chunk size."""
    from distntk.ar1 import _AR1Stream, ar1_inputs
    from distntk.rnn import RNNConfig, run_replicas

    ar = ar1(0.7, 0.5)
    tg = make_target("linear", weights=[1.0, 0.5])
    cfg = RNNConfig(noise_std=0.1)
    seed = np.random.SeedSequence(5, spawn_key=(3, 1))
    s = _AR1Stream(ar, tg, cfg, 4, 100, seed)
    parts = [s.burn_in()] + [s.train(n)[0] for n in (1, 37, 62)]
    whole = ar.simulate(104, np.random.Generator(np.random.PCG64(seed)))
    assert np.allclose(np.concatenate(parts), whole, rtol=1e-14, atol=1e-14)
    s2 = _AR1Stream(ar, tg, cfg, 4, 100, seed)
    s2.burn_in()
    x, y = s2.train(100)
    resid = y - tg(np.lib.stride_tricks.sliding_window_view(whole[3:], 2, axis=0).transpose(0, 2, 1))
    assert np.max(np.abs(resid)) < 0.6 and 0.05 < np.std(resid) < 0.15  # the noise alone (sd 0.1)
    L = 3
    inp = ar1_inputs(ar, tg, default_probes(ar, L), L, risk_windows=64, seed=1)
    kw = dict(root=1, width_key=32, init=0, data=[0, 1], L=L, risk=inp.risk)
    a = run_replicas(cfg, inp, tg, 32, 1.0, [0.0, 0.5, 1.0], inp.probes, chunk=7, **kw)
    b = run_replicas(cfg, inp, tg, 32, 1.0, [0.0, 0.5, 1.0], inp.probes, chunk=1000, **kw)
    assert a[0].shape == (2, 3, 3) and a[1].shape == (2, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.all(np.isfinite(a[0])) and not np.array_equal(a[0][0], a[0][1])


_SPEC = """
name = "ar1-tiny"
seed = 3
[chain]
kind = "ar1"
phi = 0.5
sigma = 0.6
[target]
name = "linear"
weights = [1.0, 0.5]
[training]
T = 1.0
times = [0.5, 1.0]
L = 3
[limit]
resolution = 5
segments = 4
segment_steps = 256
[replicas]
widths = [16]
n_init = 2
n_data = 2
block = 2
"""


def test_ar1_spec_and_experiment():
    """``[chain] kind = "ar1"``: default probes with readable unique labels, a unit computed on the AR(1)
    stream, predictions with their standard errors; bad parameters are one-line errors."""
    from distntk.spec import SpecError, parse_spec

    sp = parse_spec(_SPEC)
    exp = sp.experiment
    assert sp.canonical["chain"] == {"kind": "ar1", "phi": [0.5], "sigma": [0.6]}
    assert exp.probes.shape == (3, 3, 1)
    labels = exp.probe_labels()
    assert len(set(labels)) == 3 and labels[0] == "0,0,0"
    out = exp.compute(exp.units()[0])
    assert out["output"].shape == (2, 2, 3) and out["risk"].shape == (2, 2)
    ds = exp.predictions()
    assert ds["h"].shape == (2, 3) and np.all(ds["nvar_poisson_se"].values > 0)
    assert list(ds["probe"].values) == labels
    # the linear target is odd: h at the zero window is 0, at -z it is -h(z) up to the Monte Carlo error
    h = ds["h"].values
    assert np.all(np.abs(h[:, 1] + h[:, 2]) < 4 * np.hypot(ds["h_se"].values[:, 1], ds["h_se"].values[:, 2]) + 1e-9)
    sp2 = parse_spec(_SPEC + "[probes]\nwindows = [[0.0, 0.1, -0.2], [1, 1, 1]]\n")
    assert sp2.experiment.probe_labels() == ["0,0.1,-0.2", "1,1,1"] and sp2.hash != sp.hash
    assert parse_spec(_SPEC.replace("segments = 4", "segments = 5")).hash != sp.hash
    for bad, needle in [("phi = 0.5", "phi = 1.0"), ("sigma = 0.6", "sigma = -1"),
                        ("phi = 0.5", "phi = [0.5, 0.1]"), ('kind = "ar1"', 'kind = "ar2"')]:
        with pytest.raises(SpecError) as e:
            parse_spec(_SPEC.replace(bad, needle))
        assert "\n" not in str(e.value)
    with pytest.raises(SpecError, match="probes.windows"):
        parse_spec(_SPEC + "[probes]\nwindows = [[0.0, 0.1]]\n")


@pytest.mark.timeout(300)
def test_ar1_store_end_to_end_through_ray(tmp_path, capsys):
    """``distntk run`` on an AR(1) spec through a real embedded local Ray (a subprocess), then ``query`` (json),
    ``verify``, ``report`` and a second run that computes nothing; the store holds value windows, NaN
    ``pi_probe`` and the ``_se`` predictions.  The NaN ``pi_probe`` is no damage, finite values there are."""
    import json
    import shutil
    import subprocess
    import sys

    import zarr
    from raytools import cleanup, new_mark, scoped_env, short_tmp

    from distntk import open_store
    from distntk.cli import main
    from distntk.spec import load_spec
    from distntk.store import open_result_store

    t0 = time.perf_counter()
    spec_path = tmp_path / "ar1.toml"
    spec_path.write_text(_SPEC)
    exp = load_spec(spec_path).experiment
    store = tmp_path / "ar1.zarr"
    mark, temp = new_mark(), short_tmp("dnar1")
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp)
    cmd = [sys.executable, "-m", "distntk", "run", str(spec_path), "--store", str(store), "--actors", "1",
           "--no-progress"]
    try:
        first = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "2 units (4 replicas) computed, 0 already done" in first.stderr
        second = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        cleanup(mark, temp)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "all 2 units already done" in second.stderr and "computed" not in second.stderr

    ds = open_store(store).load()
    assert ds["probe_window"].dims == ("probe", "lag", "input") and ds["probe_window"].dtype == np.float64
    np.testing.assert_array_equal(ds["probe_window"].values, exp.probes)
    assert list(ds["probe"].values) == exp.probe_labels() and np.isnan(ds["pi_probe"].values).all()
    for name in ("h", "nvar_poisson", "nvar_iid", "var_init_coef", "risk_h", "nvar_risk_poisson"):
        assert ds[name + "_se"].shape == ds[name].shape and (ds[name + "_se"].values > 0).all()
    assert ds["done"].values.all() and (ds["unit_writes"].values == 1).all()  # the second run wrote nothing
    assert ds.attrs["memory_method"] == "ar1"
    for u in exp.units():  # bit for bit what the experiment computes in-process
        np.testing.assert_array_equal(ds["output"].values[0, u.init, u.data_start:u.data_stop],
                                      exp.compute(u)["output"])

    capsys.readouterr()
    assert main(["query", str(store), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["time"], r["probe"]) for r in doc["rows"]] == [(t, p) for t in exp.times for p in exp.probe_labels()]
    assert all(r["n"] == 4 and np.isfinite(r["mean"]) for r in doc["rows"])
    assert [r["h"] for r in doc["rows"]] == pytest.approx(ds["h"].values.ravel().tolist())
    assert main(["query", str(store)]) == 0
    assert "AR(1) input" in capsys.readouterr().out
    assert main(["verify", str(store)]) == 0
    assert "every done unit intact" in capsys.readouterr().err
    assert main(["report", str(store), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**AR(1) input (continuous state).**" in md and "Complete store" in md and "Not computed" not in md

    edited = tmp_path / "edited.zarr"  # a finite pi_probe is an edit of the predictions
    shutil.copytree(store, edited)
    zarr.open_array(str(edited / "pi_probe"), mode="r+")[...] = 0.5
    capsys.readouterr()
    assert main(["verify", str(edited)]) == 1
    assert "'pi_probe' has values where the store's spec defines none" in capsys.readouterr().out
    assert open_result_store(edited, "r").lost_predictions() == ["pi_probe"]
    assert time.perf_counter() - t0 < 120  # about 35 s on 2 cores


def test_the_ar1_campaign_sweep_parses():
    """jobs/ar1.toml (issue 21): four AR(1) members, phi up to 0.9 at unit stationary variance, beta = 3/4,
    L = 5 (the longest the AR(1) limit's quadrature allows: a longer L is a one-line error)."""
    from pathlib import Path

    from distntk.spec import parse_spec
    from distntk.sweep import load_sweep

    path = Path(__file__).resolve().parents[1] / "jobs" / "ar1.toml"
    sweep = load_sweep(path)
    assert [m.name for m in sweep.members] == ["phi0", "phi0.5", "phi0.7", "phi0.9"]
    phis = []
    for m in sweep.members:
        e = m.spec.experiment
        assert m.spec.canonical["chain"]["kind"] == "ar1" and e.model.beta == 0.75 and e.L == 5
        assert e.ar.sd == pytest.approx([1.0], rel=1e-12) and e.probes.shape == (3, 5, 1)
        phis.append(float(e.ar.phi[0]))
    assert phis == [0.0, 0.5, 0.7, 0.9] and len({m.spec.hash for m in sweep.members}) == 4
    # a window longer than 5 values: the rule is chosen on the 9^5 windows of length 5 (at most 2^16)
    from distntk.ar1 import rule_window

    assert parse_spec(_SPEC.replace("L = 3", "L = 6")).experiment.L == 6
    assert [rule_window(L, 1) for L in (3, 5, 6, 12)] == [3, 5, 5, 5] and rule_window(12, 2) == 2
