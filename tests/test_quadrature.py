"""The kernel quadrature meets its tolerance, and its reported error bounds the true error.

The reference is an independent, far finer rule of another family: composite
Gauss-Legendre (12 points per panel of width 0.5) on ``[-8.5, 8.5]`` in each
Gaussian coordinate, times 80-point Gauss-Legendre in ``b``.  Its own error is
below 1e-10 on these integrands (the narrowest analyticity strip, at b_max =
0.9, is about 0.3 wide; a panel of half-width 0.25 then converges like
``2.9^{-24}``) plus the Gaussian mass beyond 8.5 (``1e-16``), far below the
errors compared here.
"""

import numpy as np
import pytest
from numpy.polynomial.legendre import leggauss

from distntk.chain import markov_chain, window_chain
from distntk.limit import _kernel_from_rule, _rule_sample, ntk
from distntk.rnn import RNNConfig

CHAIN = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])


def _reference(cfg, hist, panels=34, per_panel=12, X=8.5, n_b=80):
    x, w = leggauss(per_panel)
    edges = np.linspace(-X, X, panels + 1)
    zs = np.concatenate([(lo + hi) / 2 + (hi - lo) / 2 * x for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    wz = np.concatenate([(hi - lo) / 2 * w for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    wz = wz * np.exp(-0.5 * zs**2) / np.sqrt(2 * np.pi)
    xb, wb = leggauss(n_b)
    W, A, B = np.meshgrid(cfg.sigma_w * zs, cfg.sigma_a * zs, cfg.b_max * xb, indexing="ij")
    ww = np.einsum("i,j,k->ijk", wz, wz, wb / 2)
    pts = np.stack([W.ravel(), A.ravel(), B.ravel()], axis=1)
    return _kernel_from_rule(cfg, CHAIN, hist, [0, 1, 2], pts, ww.ravel())


CASES = [RNNConfig(b_max=0.3), RNNConfig(b_max=0.6), RNNConfig(b_max=0.9),
         RNNConfig(b_max=2.0, activation="sigmoid")]


@pytest.mark.parametrize("cfg", CASES, ids=["tanh-0.3", "tanh-0.6", "tanh-0.9", "sigmoid-2.0"])
def test_reported_error_bounds_the_true_error(cfg):
    win = window_chain(CHAIN, 3)
    K_ref, C_ref = _reference(cfg, win.histories)
    nodes = []
    for tol in (1e-3, 1e-5, 1e-7):
        k = ntk(cfg, win, tol=tol)
        assert k.method == "trapezoid" and k.tol == tol
        true = max(np.abs(k.K - K_ref).max(), np.abs(k.C0 - C_ref).max())
        assert true <= k.error <= tol
        nodes.append(k.n_nodes)
    assert nodes == sorted(nodes) and nodes[0] < nodes[-1]  # a tighter tolerance costs nodes


def test_legacy_gauss_hermite_understates_its_error_at_long_memory():
    """Why the default changed (issue 14): the fixed 20-point rule at b_max = 0.9 reports less than its error."""
    cfg = RNNConfig(b_max=0.9)
    win = window_chain(CHAIN, 3)
    K_ref, _ = _reference(cfg, win.histories)
    legacy = ntk(cfg, win, resolution=20)
    assert legacy.method == "gauss" and legacy.tol is None
    assert np.abs(legacy.K - K_ref).max() > legacy.error


def test_rule_chosen_on_a_sample_bounds_entries_outside_it():
    """With more histories than the sample, the rule is chosen on a subset; other entries obey the bound too."""
    cfg = RNNConfig(b_max=0.6)
    win = window_chain(CHAIN, 5)  # 32 histories, rule chosen on 8 of them
    k = ntk(cfg, win, tol=1e-5, sample=8)
    chosen = {tuple(h) for h in _rule_sample(win, 8, 0)}
    outside = np.array([i for i, h in enumerate(win.histories) if tuple(h) not in chosen])
    assert len(outside) == 24
    # b_max = 0.6 leaves a wider strip: 24 panels of width 0.71 and 50 Legendre points still err < 1e-10
    K_ref, C_ref = _reference(cfg, win.histories[outside], panels=24, n_b=50)
    sub = np.ix_(outside, outside)
    assert max(np.abs(k.K[sub] - K_ref).max(), np.abs(k.C0[sub] - C_ref).max()) <= k.error <= 1e-5


def test_tolerance_is_validated():
    with pytest.raises(ValueError, match="expected 0 < tol < 1"):
        ntk(RNNConfig(), window_chain(CHAIN, 2), tol=0.0)


# -- the spec key limit.tol and the store attrs -------------------------------------------------------


def _spec_text(limit_section: str) -> str:
    from raytools import section6_toml

    return section6_toml(seed=1, widths=(16,), n_init=1, n_data=2, L=3) + limit_section


def test_spec_limit_tol_reaches_the_kernel_and_the_store(tmp_path):
    from distntk import open_store
    from distntk.spec import parse_spec
    from distntk.store import create_store

    s = parse_spec(_spec_text("[limit]\ntol = 1e-4\n"))
    assert s.experiment.limit.tol == 1e-4 and s.canonical["limit"] == {"resolution": None, "tol": 1e-4}
    default = parse_spec(_spec_text(""))
    # the default tolerance is left out of the canonical form: specs written before limit.tol keep their hash
    assert default.experiment.limit.tol == 1e-6 and default.canonical["limit"] == {"resolution": None}
    assert parse_spec(_spec_text("[limit]\ntol = 1e-6\n")).hash == default.hash
    assert default.hash != s.hash  # a different tolerance is a different prediction
    create_store(tmp_path / "s.zarr", s, s.experiment.predictions(), command="pytest")
    attrs = open_store(tmp_path / "s.zarr").attrs
    kern = s.experiment.solve().kernel
    assert attrs["kernel_tol"] == 1e-4 and attrs["kernel_method"] == "trapezoid"
    assert attrs["kernel_nodes"] == kern.n_nodes > 0 and attrs["kernel_seconds"] == kern.seconds > 0
    assert 0 < attrs["kernel_error"] <= 1e-4


def test_spec_legacy_resolution_still_works():
    from distntk.spec import parse_spec

    s = parse_spec(_spec_text("[limit]\nresolution = 12\n"))
    assert s.experiment.limit.resolution == 12 and s.canonical["limit"] == {"resolution": 12}
    kern = s.experiment.solve().kernel
    assert kern.method == "gauss" and kern.n_nodes == 12**3


@pytest.mark.parametrize("section,expected", [
    ("[limit]\ntol = 0.0\n", "limit.tol: expected a number in [1e-12, 1), got 0"),
    ("[limit]\ntol = 1e-300\n", "limit.tol: expected a number in [1e-12, 1), got 1e-300"),
    ("[limit]\ntol = 'x'\n", "limit.tol: expected a number, got 'x'"),
    ("[limit]\ntol = 1e-5\nresolution = 20\n", "limit.tol: give either limit.tol or limit.resolution, not both"),
])
def test_spec_limit_tol_errors(section, expected):
    from distntk.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as info:
        parse_spec(_spec_text(section))
    assert str(info.value).startswith(expected), str(info.value)
