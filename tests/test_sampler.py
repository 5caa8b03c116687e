"""``[chain] kind = "sampler"``: a continuous-state chain given as code (issue 21, item 3; docs/model.md#sampler).

The sampler is code like a code target (refused without ``--allow-code``, its module's source hashed into
the spec), its output is checked against the contract with one-line errors naming ``chain.sampler``, and
its limit is the AR(1)'s sampled machinery (:mod:`distntk.continuous`).  The acceptance test: a sampler
that draws the AR(1) of ``kind = "ar1"`` from other random bits gives the same predictions within their
Monte Carlo errors.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distntk.cli import main
from distntk.spec import SpecError, parse_spec, spec_diff

SAMPLERS = Path(__file__).resolve().parent / "samplers"

_SPEC = """
name = "sampler-tiny"
seed = 3
[chain]
kind = "sampler"
sampler = "ar1_sampler:ar1"
params = {phi = 0.5, sigma = 0.6}
[target]
name = "linear"
weights = [1.0, 0.5]
[training]
T = 1.0
times = [0.5, 1.0]
L = 3
[limit]
resolution = 4
segments = 4
segment_steps = 256
[replicas]
widths = [16]
n_init = 2
n_data = 2
block = 2
"""


@pytest.fixture
def samplers(monkeypatch):
    """``tests/samplers`` on ``sys.path``: ``ar1_sampler:ar1`` and the contract breakers beside it."""
    monkeypatch.syspath_prepend(str(SAMPLERS))


def _chain(text: str, new: str) -> str:
    old = 'kind = "sampler"\nsampler = "ar1_sampler:ar1"\nparams = {phi = 0.5, sigma = 0.6}'
    assert old in text
    return text.replace(old, new)


def test_sampler_spec_defaults_and_stream(samplers):
    """The canonical chain, the default probes (the pilot's median and Phi(+-1) quantiles, 4 significant
    digits), explicit value-window probes, the stand-in chain, and the replicas' stream: one call per
    replica, the same bits whatever the piece sizes, reproducible units."""
    from distntk.continuous import ContinuousStream
    from distntk.rnn import RNNConfig

    sp = parse_spec(_SPEC, allow_code=True)
    c = sp.canonical["chain"]
    assert c["kind"] == "sampler" and c["sampler"] == "ar1_sampler:ar1" and len(c["source_sha256"]) == 64
    assert (c["dim"], c["params"], c["warmup"]) == (1, {"phi": 0.5, "sigma": 0.6}, 0) and "mixing" not in c
    assert sp.canonical["limit"] == {"resolution": 4, "segments": 4, "segment_steps": 256}
    exp = sp.experiment
    sd = 0.6 / np.sqrt(1 - 0.25)
    med, hi, lo = exp.probes[:, 0, 0]
    assert exp.probes.shape == (3, 3, 1) and np.all(exp.probes == exp.probes[:, :1])  # constant windows
    assert abs(med) < 0.05 and hi == pytest.approx(sd, abs=0.05) and lo == pytest.approx(-sd, abs=0.05)
    assert all(float(f"{v:.4g}") == v for v in exp.probes.ravel())
    assert sp.canonical["probes"]["windows"] == exp.probes[:, :, 0].tolist()
    assert len(set(exp.probe_labels())) == 3 and exp.chain.n_states == 2 and exp.chain.dim == 1
    sp2 = parse_spec(_SPEC + "[probes]\nwindows = [[0.0, 0.1, -0.2], [1, 1, 1]]\n", allow_code=True)
    assert sp2.experiment.probe_labels() == ["0,0.1,-0.2", "1,1,1"] and sp2.hash != sp.hash
    assert parse_spec(_SPEC, allow_code=True).hash == sp.hash  # the pilot is seeded: the same spec, the same hash
    assert parse_spec(_SPEC.replace("seed = 3", "seed = 4"), allow_code=True).experiment.probes.shape == (3, 3, 1)

    src, tg, cfg = exp.source, exp.target, RNNConfig(noise_std=0.1)
    seed = np.random.SeedSequence(5, spawn_key=(1, 16, 0, 1))
    s = ContinuousStream(src, tg, cfg, 4, 100, seed)
    parts = [s.burn_in()] + [s.train(n)[0] for n in (1, 37, 62)]
    whole = src.simulate(104, np.random.Generator(np.random.PCG64(seed)))
    assert np.array_equal(np.concatenate(parts), whole)
    u = exp.units()[0]
    a, b = exp.compute(u), exp.compute(u)
    assert a["output"].shape == (2, 2, 3) and np.array_equal(a["output"], b["output"])
    assert not np.array_equal(a["output"][0], a["output"][1])  # per-replica seeds: two data sequences

    # d = 2: default probes per coordinate, labels with ';' between coordinates, a unit computed
    two = parse_spec(_chain(_SPEC, 'kind = "sampler"\nsampler = "ar1_sampler:ar1_2d"\ndim = 2\n'
                                   'params = {phi = [0.5, -0.3], sigma = [1.0, 0.5]}'), allow_code=True)
    e2 = two.experiment
    assert e2.probes.shape == (3, 3, 2) and np.array(two.canonical["probes"]["windows"]).shape == (3, 3, 2)
    assert e2.probes[1, 0] == pytest.approx([1 / np.sqrt(0.75), 0.5 / np.sqrt(0.91)], abs=0.1)
    assert ";" in e2.probe_labels()[0] and e2.chain.n_states == 4
    assert e2.compute(e2.units()[0])["output"].shape == (2, 2, 3)
    with pytest.raises(SpecError, match=r"^probes.windows: value windows are given for d = 1 only"):
        parse_spec(two.text + "[probes]\nwindows = [[0.0, 0.1, -0.2]]\n", allow_code=True)

    # a chain that cannot start stationary: chain.warmup steps drawn and dropped at the start of every path
    w = parse_spec(_chain(_SPEC, 'kind = "sampler"\nsampler = "ar1_sampler:ar1_from_zero"\nwarmup = 64\nmixing = 0.5'),
                   allow_code=True)
    assert w.canonical["chain"]["warmup"] == 64 and w.canonical["chain"]["mixing"] == 0.5
    x = w.experiment.source.sample_windows(4000, 3, np.random.default_rng(0))
    assert x.shape == (4000, 3, 1) and np.var(x) == pytest.approx(sd**2, rel=0.1)  # stationary, not started at 0


@pytest.mark.parametrize("chain, expected", [
    ('sampler = "ar1_sampler:wrong_shape"',
     "chain.sampler: 'ar1_sampler:wrong_shape' returned shape (2, 16); expected (n_paths, n_steps, d) = (2, 16, 1)"),
    ('sampler = "ar1_sampler:not_finite"', "chain.sampler: 'ar1_sampler:not_finite' returned values that are not "
                                           "finite"),
    ('sampler = "ar1_sampler:complex_values"', "chain.sampler: 'ar1_sampler:complex_values' returned dtype complex128"),
    ('sampler = "ar1_sampler:global_state"', "chain.sampler: 'ar1_sampler:global_state' is not deterministic"),
    ('sampler = "ar1_sampler:raises"', "chain.sampler: 'ar1_sampler:raises' failed: RuntimeError: no data today"),
    ('sampler = "ar1_sampler:nothing"', "chain.sampler: cannot import 'ar1_sampler:nothing'"),
    ('sampler = "ar1_sampler:ar1"\ndim = 2', "chain.sampler: 'ar1_sampler:ar1' returned shape (2, 16, 1); expected "
                                            "(n_paths, n_steps, d) = (2, 16, 2)"),
    ('sampler = "ar1_sampler:ar1"\nparams = {rho = 0.5}', "chain.params: 'ar1_sampler:ar1' does not take these"),
    ('sampler = "ar1_sampler:ar1"\nparams = {rng = 0.5}', "chain.params: 'rng' is not a keyword argument"),
    ('sampler = "ar1_sampler:ar1"\nparams = {phi = {a = 1}}', "chain.params: expected a table of keyword arguments"),
    ('sampler = "ar1_sampler:ar1"\nmixing = 1.0', "chain.mixing: expected a number in [0, 1)"),
    ('sampler = "ar1_sampler:ar1"\nwarmup = -1', "chain.warmup: expected an integer in [0, 2**20]"),
    ('sampler = "ar1_sampler"', "chain.sampler: expected 'module:function'"),
    ('sampler = "no_such_module_xyz:f"', "chain.sampler: cannot find the source of module 'no_such_module_xyz'"),
    ('sampler = "ar1_sampler:ar1"\nphi = 0.5', "chain.phi: unknown key"),
])
def test_bad_samplers_are_one_line_errors_naming_the_key(samplers, chain, expected):
    with pytest.raises(SpecError) as e:
        parse_spec(_chain(_SPEC, f'kind = "sampler"\n{chain}'), allow_code=True)
    msg = str(e.value)
    assert msg.startswith(expected) and "\n" not in msg, msg


def test_a_sampler_is_code(tmp_path, monkeypatch, capsys):
    """Refused without --allow-code before it is imported (parser and CLI: one line, exit 2, no store);
    allowed, its module's source is hashed: a changed sampler is another spec (a store made from the first
    refuses it: the end-to-end test below)."""
    marker = tmp_path / "imported"
    mod = tmp_path / "evil_sampler.py"
    mod.write_text(f"open({str(marker)!r}, 'w').close()\n" + (SAMPLERS / "ar1_sampler.py").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    text = _chain(_SPEC, 'kind = "sampler"\nsampler = "evil_sampler:ar1"')
    with pytest.raises(SpecError, match=r"^chain.sampler: 'evil_sampler:ar1' is code .* distntk run --allow-code$"):
        parse_spec(text)
    spec_file, store = tmp_path / "s.toml", tmp_path / "s.zarr"
    spec_file.write_text(text)
    capsys.readouterr()
    assert main(["run", str(spec_file), "--store", str(store)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("distntk: error: chain.sampler: 'evil_sampler:ar1' is code (a 'module:function' sampler "
                          "runs that module); refused unless allowed explicitly: distntk run --allow-code")
    assert not marker.exists() and not store.exists()

    first = parse_spec(text, allow_code=True)
    assert marker.exists()
    mod.write_text(mod.read_text() + "# changed\n")
    again = parse_spec(text, allow_code=True)
    assert again.hash != first.hash and spec_diff(first.canonical, again.canonical) == ["chain.source_sha256"]


def test_sampler_of_the_ar1_agrees_with_kind_ar1(samplers):
    """The acceptance test: ``ar1_sampler:ar1`` (the AR(1) with phi = 0.5, sigma = 0.6, drawn by inversion of
    uniforms) and ``kind = "ar1"`` (ziggurat normals, windows from the exact Gaussian law) give the same h,
    Poisson and i.i.d. N·Var, between-init coefficient and risk predictions within their Monte Carlo errors.

    Tolerance: |diff| <= 4 sqrt(se_ar1^2 + se_sampler^2) for every (quantity, time, probe).  The two estimates
    use independent random bits, so their difference has variance se_ar1^2 + se_sampler^2 to first order; each
    se is a delete-one jackknife over 8 segments (a t scale with 7 df, about 14 for the pair), so a single
    cell exceeds 4 of them with probability about 1e-3.  What the errors do not hold is far smaller: the
    quadrature nodes are the same (a fixed tensor rule), the bases differ (windows drawn from the two
    samplers; basis residuals below 1e-7) and so do the lag windows (33 from max|phi| = 0.5; about 36 from
    the sampler's estimated rate), which truncate correlations below 1e-9.  The test has power: a sampler
    with phi = 0.7 is found inconsistent by the same rule.
    """
    from distntk.continuous import continuous_limit
    from distntk.limit import LimitConfig

    t0 = time.perf_counter()
    base = _SPEC.replace("[limit]\nresolution = 4\nsegments = 4\nsegment_steps = 256\n", "") + \
        "[model]\nnoise_std = 0.1\n[probes]\nwindows = [[0.0, 0.0, 0.0], [0.7, 0.7, 0.7], [-0.7, -0.3, 0.5]]\n"
    names = ("h", "nvar_poisson", "nvar_iid", "var_init_coef", "risk_h", "nvar_risk_poisson", "nvar_risk_iid",
             "var_risk_init_coef")

    def predict(chain):
        e = parse_spec(_chain(base, chain), allow_code=True).experiment
        lim = continuous_limit(e.model, e.source, e.target, e.L, LimitConfig(resolution=4, segments=8,
                                                                             segment_steps=512),
                               n_basis=512, seed=e.seed)
        assert lim.basis_residual < 1e-6
        return lim.predict(e.times, e.probes), lim

    ar, ar_lim = predict('kind = "ar1"\nphi = 0.5\nsigma = 0.6')
    sa, sa_lim = predict('kind = "sampler"\nsampler = "ar1_sampler:ar1"\nparams = {phi = 0.5, sigma = 0.6}')
    assert ar_lim.lag_window == 33 and 0.45 < sa_lim.mixing < 0.6 and sa_lim.source.kind == "sampler"
    z = {n: (ar[n] - sa[n]) / np.hypot(ar[n + "_se"], sa[n + "_se"]) for n in names}
    for n in names:
        assert np.all(ar[n + "_se"] > 0) and np.all(sa[n + "_se"] > 0), n
        assert not np.array_equal(ar[n], sa[n]), n  # independent estimates, not the same bits
        assert np.all(np.abs(z[n]) <= 4), (n, ar[n], sa[n], z[n])
    assert np.all(sa["nvar_poisson_se"] < 0.25 * sa["nvar_poisson"])  # errors small enough to mean something
    print("\nmax |z| per quantity:", {n: round(float(np.max(np.abs(v))), 2) for n, v in z.items()})
    other, _ = predict('kind = "sampler"\nsampler = "ar1_sampler:ar1"\nparams = {phi = 0.7, sigma = 0.6}')
    worst = max(float(np.max(np.abs((ar[n] - other[n]) / np.hypot(ar[n + "_se"], other[n + "_se"])))) for n in names)
    assert worst > 4, worst
    assert time.perf_counter() - t0 < 120  # about 40 s on 2 loaded cores


@pytest.mark.timeout(300)
def test_sampler_store_end_to_end_through_ray(tmp_path, capsys, monkeypatch):
    """``distntk run --allow-code`` on a sampler spec through a real embedded local Ray (a subprocess; the
    sampler's module reaches the actors on PYTHONPATH), then ``query`` (json and table), ``verify`` and
    ``report``: value-window probes, NaN ``pi_probe``, ``_se`` predictions, the mixing rate, and a report
    that does not run the sampler (its memory-contraction figure is not computed).  Then the sampler's
    source changes: the store refuses the spec as a changed spec, naming chain.source_sha256."""
    from raytools import cleanup, new_mark, scoped_env, short_tmp

    from distntk import open_store
    from distntk.store import SpecChanged, open_or_create

    t0 = time.perf_counter()
    mods = tmp_path / "mods"
    mods.mkdir()
    shutil.copy(SAMPLERS / "ar1_sampler.py", mods / "e2e_sampler.py")
    monkeypatch.syspath_prepend(str(mods))
    spec_path = tmp_path / "sampler.toml"
    spec_path.write_text(_chain(_SPEC, 'kind = "sampler"\nsampler = "e2e_sampler:ar1"\nparams = {phi = 0.5, '
                                       'sigma = 0.6}'))
    exp = parse_spec(spec_path.read_text(), allow_code=True).experiment
    store = tmp_path / "sampler.zarr"
    mark, temp = new_mark(), short_tmp("dnsmp")
    path = ":".join(p for p in [str(mods), os.environ.get("PYTHONPATH", "")] if p)
    env = scoped_env(tmp_path / "home", mark, RAY_TMPDIR=temp, PYTHONPATH=path)
    cmd = [sys.executable, "-m", "distntk", "run", str(spec_path), "--store", str(store), "--actors", "1",
           "--no-progress", "--allow-code"]
    try:
        run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    finally:
        cleanup(mark, temp)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 units (4 replicas) computed, 0 already done" in run.stderr

    ds = open_store(store).load()
    assert ds["probe_window"].dims == ("probe", "lag", "input") and ds["probe_window"].dtype == np.float64
    np.testing.assert_array_equal(ds["probe_window"].values, exp.probes)
    assert list(ds["probe"].values) == exp.probe_labels() and np.isnan(ds["pi_probe"].values).all()
    for name in ("h", "nvar_poisson", "nvar_iid", "var_init_coef", "risk_h", "nvar_risk_poisson"):
        assert (ds[name + "_se"].values > 0).all(), name
    assert ds.attrs["memory_method"] == "sampler" and ds.attrs["memory_mixing_from"] == "autocorrelation"
    assert 0.3 < ds.attrs["memory_mixing"] < 0.7
    for u in exp.units():  # bit for bit what the experiment computes in-process
        np.testing.assert_array_equal(ds["output"].values[0, u.init, u.data_start:u.data_stop],
                                      exp.compute(u)["output"])

    capsys.readouterr()
    assert main(["query", str(store), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(r["time"], r["probe"]) for r in doc["rows"]] == [(t, p) for t in exp.times for p in exp.probe_labels()]
    assert all(r["n"] == 4 and np.isfinite(r["mean"]) for r in doc["rows"])
    assert main(["query", str(store)]) == 0
    assert "sampler input (chain.sampler" in capsys.readouterr().out
    assert main(["verify", str(store)]) == 0
    assert "every done unit intact" in capsys.readouterr().err
    assert main(["report", str(store), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**Sampler input (continuous state).**" in md and "Complete store" in md
    assert "is a sampler (code, chain.sampler), which a store never runs" in md

    (mods / "e2e_sampler.py").write_text((mods / "e2e_sampler.py").read_text() + "# changed\n")
    changed = parse_spec(spec_path.read_text(), allow_code=True)
    with pytest.raises(SpecChanged, match=r"^spec differs from the store's in keys: chain.source_sha256 "):
        open_or_create(store, changed, lambda: pytest.fail("an existing store's predictions are not recomputed"))
    assert time.perf_counter() - t0 < 150  # about 60 s on 2 loaded cores


def test_the_cost_estimate_counts_the_samplers_own_time(samplers):
    """A sampler's own CPU is in the estimate: a sampler that spins 200 us of CPU per value costs at least
    200 us per value of each replica's one-path draw (B + floor(T N) values) and of the limit's segments,
    in core-hours and in the line ``distntk run`` prints.  The busy wait is on the process clock, which
    the measurement reads, so the lower bound holds at any load."""
    from distntk.cost import estimate_cost
    from distntk.sampler import PILOT_STEPS

    spin = 2e-4
    fast = parse_spec(_SPEC, allow_code=True).experiment
    slow = parse_spec(_chain(_SPEC, 'kind = "sampler"\nsampler = "ar1_sampler:ar1_spin"\n'
                                    f"params = {{phi = 0.5, sigma = 0.6, spin = {spin}}}"), allow_code=True).experiment
    assert slow.source.seconds_per_step >= spin * PILOT_STEPS / (PILOT_STEPS + slow.source.warmup)
    cf, cs = estimate_cost(fast), estimate_cost(slow)
    B = slow.L if slow.model.burn_in is None else slow.model.burn_in
    values = slow.replicas.n_init * slow.replicas.n_data * sum(B + int(slow.T * N) for N in slow.replicas.widths)
    assert cs.draw_seconds >= spin * values and cs.draw_seconds > 10 * cf.draw_seconds
    segment_values = slow.limit.segments * (slow.limit.segment_steps + slow.L - 1)
    # the fast sampler's own cost (a few us per value) is measured separately: 10 % of spin covers it
    assert cs.limits[0].core_seconds - cf.limits[0].core_seconds >= 0.9 * spin * segment_values
    assert (cs.core_hours - cf.core_hours) * 3600 >= 0.9 * spin * (values + segment_values)
    assert "the sampler's draws" in cs.describe() and "the sampler's draws" in cf.describe()


def test_address_ships_the_code_of_every_member(samplers, tmp_path, monkeypatch):
    """``--address`` ships (Ray ``py_modules``) the module of every code target and sampler of the run, a
    sweep's members included, each once: a sweep used to ship its first member's modules only."""
    from distntk.cli import _shipped_code

    for name in ("mod_a", "mod_b"):
        (tmp_path / f"{name}.py").write_text("import numpy as np\n\ndef f(x):\n    return np.tanh(x[:, -1, 0])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    old = '[target]\nname = "linear"\nweights = [1.0, 0.5]'
    assert old in _SPEC
    specs = [parse_spec(_SPEC.replace(old, f'[target]\nname = "{m}:f"\nm = 1'), allow_code=True)
             for m in ("mod_a", "mod_b", "mod_a")]
    assert _shipped_code(specs) == {"py_modules": [str(tmp_path / "mod_a.py"), str(SAMPLERS / "ar1_sampler.py"),
                                                   str(tmp_path / "mod_b.py")]}
    assert _shipped_code(specs[1:2]) == {"py_modules": [str(tmp_path / "mod_b.py"), str(SAMPLERS / "ar1_sampler.py")]}
