"""The limit solver against Monte Carlo and direct ODE integration."""

import numpy as np
import pytest
import scipy.linalg
from scipy.integrate import solve_ivp

from distntk.chain import asymptotic_covariance, markov_chain, window_chain
from distntk.limit import LimitConfig, ntk, solve_limit, window_length
from distntk.rnn import RNNConfig, memory_and_jacobian
from distntk.target import make_target


def _mc_kernel(cfg, win, M, seed):
    """Plain Monte Carlo over theta ~ mu_0 (c sampled too): K and per-entry standard errors."""
    rng = np.random.default_rng(seed)
    d = win.chain.dim
    xs = win.chain.inputs[win.histories]
    c = rng.uniform(-1, 1, M)
    w = rng.standard_normal((M, d)) * cfg.sigma_w
    a = rng.standard_normal(M) * cfg.sigma_a
    b = rng.uniform(-cfg.b_max, cfg.b_max, M)
    s, J = memory_and_jacobian(w, a, b, xs, cfg.activation, cfg.gradient == "rtrl")
    samples = s[:, :, None] * s[:, None, :] + (c**2)[:, None, None] * np.einsum("qhk,qgk->qhg", J, J)
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / np.sqrt(M)


@pytest.mark.parametrize(
    "P,inputs,cfg",
    [
        ([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0], RNNConfig()),  # 3 coordinates: tensor Gauss
        ([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0], RNNConfig(activation="sigmoid", b_max=2.0, gradient="truncated")),
        ([[0.6, 0.4], [0.5, 0.5]], [[1.0, -0.5, 0.2], [-0.3, 0.4, 1.0]], RNNConfig(b_max=0.5)),  # 5: Sobol
    ],
)
def test_kernel_quadrature_matches_monte_carlo(P, inputs, cfg):
    """|K_quad - K_MC| <= 5 standard errors + the quadrature's own error estimate, entrywise.

    36 distinct entries at 5 sd: a false alarm has probability < 1e-4.
    """
    win = window_chain(markov_chain(P, inputs), 3)
    kern = ntk(cfg, win, tol=1e-4)
    assert kern.method == ("sobol" if np.shape(inputs)[-1] == 3 else "trapezoid")
    K_mc, se = _mc_kernel(cfg, win, 40_000, seed=11)
    assert np.all(np.abs(kern.K - K_mc) <= 5 * se + kern.error)
    np.testing.assert_allclose(kern.K, kern.K.T, atol=0)
    assert np.linalg.eigvalsh(kern.K).min() > -1e-12
    assert np.linalg.eigvalsh(kern.C0).min() > -1e-12
    # the estimate is informative: not zero, and not larger than the kernel itself
    assert 0 < kern.error < 0.05 * np.abs(kern.K).max()


def _small_limit(noise=0.0, L=3, alpha=1.3):
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1.0, 0.8], outer=[0.0, 0.0, 0.3])
    cfg = RNNConfig(alpha=alpha, noise_std=noise)
    return solve_limit(cfg, chain, target, L=L, limit=LimitConfig(resolution=12), method="dense")


def test_h_matches_ode_integration():
    lim = _small_limit()
    K, Pi, f, alpha = lim.kernel.K, np.diag(lim.window.pi), lim.f, lim.cfg.alpha
    times = np.linspace(0, 3, 7)
    sol = solve_ivp(lambda t, h: alpha * K @ Pi @ (f - h), (0, 3), np.zeros_like(f), t_eval=times,
                    rtol=1e-12, atol=1e-13, method="DOP853")
    np.testing.assert_allclose(lim.h(times), sol.y.T, atol=1e-10)


def _sigma_brute(lim, g, iid=False):
    """Sigma(g) from its definition (docs/model.md (5.4)) with the generic chain CLT solver."""
    K, pi, f, alpha = lim.kernel.K, lim.window.pi, lim.f, lim.cfg.alpha
    F = alpha * (f - g)[:, None] * K.T  # row z' is F(g, z') = alpha (f - g)(z') K(., z')
    if iid:
        Ft = F - pi @ F
        cov = (Ft * pi[:, None]).T @ Ft
    else:
        cov = asymptotic_covariance(lim.window.P, pi, F)
    return cov + alpha**2 * lim.cfg.noise_std**2 * (K * pi) @ K


@pytest.mark.parametrize("noise", [0.0, 0.4])
@pytest.mark.parametrize("kind", ["poisson", "iid"])
def test_fluctuation_covariance_matches_lyapunov_ode(noise, kind):
    lim = _small_limit(noise=noise)
    H = lim.window.n_histories
    K, Pi, f, alpha = lim.kernel.K, np.diag(lim.window.pi), lim.f, lim.cfg.alpha
    A = -alpha * K @ Pi

    def rhs(t, y):
        h, V = y[:H], y[H:].reshape(H, H)
        dV = A @ V + V @ A.T + _sigma_brute(lim, h, iid=(kind == "iid"))
        return np.concatenate([alpha * K @ Pi @ (f - h), dV.ravel()])

    times = np.array([0.0, 0.4, 1.0, 2.5])
    sol = solve_ivp(rhs, (0, times[-1]), np.zeros(H + H * H), t_eval=times, rtol=1e-11, atol=1e-13,
                    method="DOP853")
    V_ode = sol.y[H:].T.reshape(len(times), H, H)
    V = lim.fluctuation_variances(times, np.eye(H))[kind]
    np.testing.assert_allclose(V, V_ode, atol=1e-9 * np.abs(V_ode).max())
    # functionals: l^T V l for random l
    ell = np.random.default_rng(0).standard_normal((3, H))
    got = lim.fluctuation_variances(times, ell)[kind]
    np.testing.assert_allclose(got, np.einsum("ph,thk,qk->tpq", ell, V_ode, ell), rtol=1e-8, atol=1e-12)


def test_poisson_prediction_exceeds_iid_for_a_sticky_chain():
    lim = _small_limit()
    fv = lim.fluctuation_variances([2.0], np.eye(lim.window.n_histories))
    ratio = np.diagonal(fv["poisson"][0]) / np.diagonal(fv["iid"][0])
    assert np.all(ratio > 2.0)  # positive autocorrelation of the sticky chain inflates the variance


def test_init_variance_matches_matrix_exponential():
    lim = _small_limit()
    K, Pi, alpha = lim.kernel.K, np.diag(lim.window.pi), lim.cfg.alpha
    ell = np.random.default_rng(1).standard_normal((2, lim.window.n_histories))
    for t in (0.0, 0.7, 2.0):
        E = scipy.linalg.expm(-alpha * t * K @ Pi)
        expected = ell @ E @ lim.kernel.C0 @ E.T @ ell.T
        np.testing.assert_allclose(lim.init_variance([t], ell)[0], expected, rtol=1e-9, atol=1e-14)


def test_window_length_from_tolerance_and_cap():
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    L, bound = window_length(RNNConfig(b_max=0.3), chain, m=3, tol=1e-6)
    assert L == int(np.ceil(np.log(1e-6) / np.log(0.3))) == 12
    assert bound == pytest.approx(0.3**12) and bound <= 1e-6
    L, bound = window_length(RNNConfig(b_max=0.3), chain, m=3, tol=1e-6, max_histories=256)
    assert L == 8 and bound == pytest.approx(0.3**8)  # capped: 2^8 windows; the bound says so
    L, _ = window_length(RNNConfig(b_max=0.0), chain, m=3)
    assert L == 3  # no memory: the target depth decides
    with pytest.raises(ValueError, match="expected 0 < tol < 1"):
        window_length(RNNConfig(), chain, tol=2.0)


def test_memory_window_truncation_error_is_within_rho_to_the_L():
    """s(theta; z) from a window of length L differs from the infinite-past fixed point by <= rho^L."""
    rng = np.random.default_rng(4)
    cfg = RNNConfig(b_max=0.6)
    Q = 200
    w, a, b = rng.standard_normal((Q, 1)), rng.standard_normal(Q), rng.uniform(-0.6, 0.6, Q)
    xs = rng.choice([-1.0, 1.0], size=(1, 60, 1))
    s_long, _ = memory_and_jacobian(w, a, b, xs, cfg.activation)  # 60 steps: converged to 0.6^60
    for L in (2, 5, 10):
        s_L, _ = memory_and_jacobian(w, a, b, xs[:, -L:], cfg.activation)
        assert np.max(np.abs(s_L - s_long)) <= cfg.rho**L
