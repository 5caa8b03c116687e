"""Chains, window chains and the Poisson equation against closed forms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from distntk.chain import (
    ChainError,
    asymptotic_covariance,
    markov_chain,
    poisson,
    window_chain,
)


def two_state(p, q):
    return markov_chain([[1 - p, p], [q, 1 - q]], [-1.0, 1.0])


def random_chain(rng, S, d=1):
    P = rng.random((S, S)) + 0.05
    P /= P.sum(axis=1, keepdims=True)
    return markov_chain(P, rng.standard_normal((S, d)))


@pytest.mark.parametrize("p,q", [(0.2, 0.3), (0.05, 0.9), (0.5, 0.5)])
def test_two_state_stationary_and_poisson_closed_form(p, q):
    ch = two_state(p, q)
    np.testing.assert_allclose(ch.pi, [q / (p + q), p / (p + q)], rtol=1e-14)
    F = np.array([1.7, -0.4])
    u = poisson(ch.P, ch.pi, F)
    Ft = F - ch.pi @ F
    # (I - P) u = F~ is solved by u = F~ / (p + q), which has pi(u) = 0
    np.testing.assert_allclose(u, Ft / (p + q), rtol=1e-12, atol=1e-15)
    lam = 1 - p - q
    var_pi = ch.pi[0] * ch.pi[1] * (F[0] - F[1]) ** 2
    assert asymptotic_covariance(ch.P, ch.pi, F) == pytest.approx(var_pi * (1 + lam) / (1 - lam), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(S=st.integers(2, 7), seed=st.integers(0, 2**32 - 1))
def test_stationary_law_is_invariant(S, seed):
    ch = random_chain(np.random.default_rng(seed), S)
    np.testing.assert_allclose(ch.pi @ ch.P, ch.pi, atol=1e-13)
    assert ch.pi.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.all(ch.pi > 0)


def test_poisson_matches_truncated_series():
    ch = random_chain(np.random.default_rng(1), 5)
    F = np.random.default_rng(2).standard_normal((5, 3))
    Ft = F - ch.pi @ F
    series = np.zeros_like(F)
    term = Ft.copy()
    for _ in range(400):  # P^j F~ -> 0 geometrically (random dense chain mixes fast)
        series += term
        term = ch.P @ term
    u = poisson(ch.P, ch.pi, F)
    np.testing.assert_allclose(u, series, atol=1e-12)
    np.testing.assert_allclose(ch.pi @ u, 0.0, atol=1e-13)
    np.testing.assert_allclose(u - ch.P @ u, Ft, atol=1e-12)


def test_asymptotic_covariance_matches_autocovariance_sum():
    ch = random_chain(np.random.default_rng(3), 4)
    F = np.random.default_rng(4).standard_normal((4, 2))
    Ft = F - ch.pi @ F
    # sum_{j in Z} Cov(F(s_0), F(s_j)) = C_0 + sum_{j>=1} (C_j + C_j^T), C_j = E_pi[F~(s_0) (P^j F~)(s_0)^T]
    cov = (Ft * ch.pi[:, None]).T @ Ft
    PjF = Ft.copy()
    for _ in range(300):
        PjF = ch.P @ PjF
        Cj = (Ft * ch.pi[:, None]).T @ PjF
        cov += Cj + Cj.T
    np.testing.assert_allclose(asymptotic_covariance(ch.P, ch.pi, F), cov, atol=1e-12)


def test_asymptotic_variance_against_batch_means():
    """Batch means of a long sticky chain.

    With b = 1000 batches of length 4000 (>> mixing time 1/(p+q) = 2), the
    batch-means estimate is approximately sigma^2 chi2(b-1)/(b-1); we require it in
    that law's 99.9% interval (about +-15%).  The i.i.d. variance is 3x smaller and
    fails the same check, so the test separates the two.
    """
    ch = two_state(0.2, 0.3)
    F = np.array([-1.0, 1.0])
    b, m = 1000, 4000
    path = ch.simulate(b * m, np.random.default_rng(12345))
    means = F[path].reshape(b, m).mean(axis=1)
    est = m * means.var(ddof=1)
    sigma2 = asymptotic_covariance(ch.P, ch.pi, F)
    lo, hi = chi2.ppf([0.0005, 0.9995], b - 1) / (b - 1)
    assert lo <= est / sigma2 <= hi
    iid = ch.pi @ F**2 - (ch.pi @ F) ** 2
    assert not lo <= est / iid <= hi


def test_simulate_visits_states_at_stationary_frequency():
    ch = random_chain(np.random.default_rng(5), 3)
    n = 200_000
    path = ch.simulate(n, np.random.default_rng(6))
    freq = np.bincount(path, minlength=3) / n
    # sd of a frequency <= sqrt(tau_int pi(1-pi)/n) ~ 2e-3 here; 1e-2 is 5 sd
    np.testing.assert_allclose(freq, ch.pi, atol=1e-2)
    # same generator state -> same path; the path depends only on the generator
    np.testing.assert_array_equal(ch.simulate(100, np.random.default_rng(7)),
                                  ch.simulate(100, np.random.default_rng(7)))


def test_window_chain_is_the_chain_of_windows():
    ch = markov_chain([[0.0, 0.5, 0.5], [0.3, 0.0, 0.7], [0.5, 0.25, 0.25]], [0.0, 1.0, 2.0])
    L = 3
    w = window_chain(ch, L)
    # histories with positive probability only: transitions 0->0 and 1->1 are forbidden
    for z in w.histories:
        assert all(ch.P[z[j], z[j + 1]] > 0 for j in range(L - 1))
    n_expected = int(np.ones(3) @ np.linalg.matrix_power((ch.P > 0).astype(int), L - 1) @ np.ones(3))
    assert w.n_histories == n_expected
    for i, z in enumerate(w.histories):
        expected = ch.pi[z[0]] * np.prod([ch.P[z[j], z[j + 1]] for j in range(L - 1)])
        assert w.pi[i] == pytest.approx(expected, rel=1e-12)
    PL = w.P.toarray()
    np.testing.assert_allclose(PL.sum(axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(w.pi @ PL, w.pi, atol=1e-14)
    i = w.index([[2, 0, 1]])[0]
    j = w.index([[0, 1, 2]])[0]
    assert PL[i, j] == pytest.approx(ch.P[1, 2])
    with pytest.raises(ChainError, match="zero stationary probability"):
        w.index([[0, 0, 1]])


def test_window_poisson_equals_chain_poisson_for_last_state_functions():
    """A function of the last state has the same CLT variance on the window chain."""
    ch = random_chain(np.random.default_rng(8), 3)
    w = window_chain(ch, 3)
    F = np.array([0.3, -1.2, 2.0])
    a = asymptotic_covariance(ch.P, ch.pi, F)
    b = asymptotic_covariance(w.P, w.pi, F[w.histories[:, -1]])
    assert b == pytest.approx(a, rel=1e-10)


@pytest.mark.parametrize(
    "P,inputs,message",
    [
        ([[0.5, 0.5, 0.0]], None, "expected a non-empty square"),
        ([[1.2, -0.2], [0.5, 0.5]], None, r"entry \(0, 1\) is -0.2; entries must be >= 0"),
        ([[0.5, 0.5], [0.5, 0.5], ], [[1.0], [2.0], [3.0]], r"state inputs have shape \(3, 1\); expected \(2, d\)"),
        ([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.1, 0.2, 0.67]], None, "row 2 sums to 0.97; rows must sum to 1"),
        ([[1.0, 0.0], [0.5, 0.5]], None, "reducible"),
        ([[0.0, 1.0], [1.0, 0.0]], None, "periodic with period 2"),
        ([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], None, "periodic with period 3"),
        ([[np.nan, 1.0], [0.5, 0.5]], None, "non-finite"),
    ],
)
def test_invalid_chains_get_one_line_errors(P, inputs, message):
    with pytest.raises(ChainError, match=message) as exc:
        markov_chain(P, inputs)
    assert "\n" not in str(exc.value)


def test_aperiodic_chain_with_long_cycles_is_accepted():
    # cycles of length 2 and 3 through state 0: gcd 1
    P = [[0.0, 0.5, 0.5, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]
    ch = markov_chain(P)
    np.testing.assert_allclose(ch.pi @ ch.P, ch.pi, atol=1e-14)


@pytest.mark.parametrize("P", [
    [[0.8, 0.2], [0.3, 0.7]],
    [[0.0, 0.5, 0.5], [0.3, 0.0, 0.7], [0.6, 0.4, 0.0]],  # zeros in P
    [[0.2, 0.8, 0.0], [0.0, 0.1, 0.9], [0.5, 0.0, 0.5]],
])
@pytest.mark.parametrize("L", [1, 2, 5])
def test_poisson_lag_sum_equals_the_fundamental_matrix(P, L):
    """docs/model.md (6.9): the lag sum with the base chain's Z solves the window chain's Poisson equation exactly."""
    win = window_chain(markov_chain(P), L)
    rng = np.random.default_rng(L)
    F = rng.standard_normal((win.n_histories, 3))
    v = F - win.pi @ F
    expected = poisson(win.P, win.pi, F)
    got = win.poisson_lag(v)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(win.poisson_lag(v[:, 0]), expected[:, 0], rtol=0, atol=1e-12 * np.abs(expected).max())
