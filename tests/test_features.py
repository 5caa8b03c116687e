"""The feature-space limit solver (docs/model.md#features) equals the dense solver, the oracle for small H."""

import numpy as np
import pytest

from distntk.chain import markov_chain
from distntk.limit import FeatureKernel, Kernel, LimitConfig, solve_limit
from distntk.rnn import RNNConfig
from distntk.target import make_target


def _random_chain(S, seed, zeros):
    """A random ergodic chain on S states with 1-d inputs; ``zeros`` puts one zero in each row."""
    rng = np.random.default_rng(seed)
    while True:
        P = rng.dirichlet(np.ones(S), size=S)
        if zeros:
            for i in range(S):
                P[i, (i + 1) % S] = 0.0
            P /= P.sum(axis=1, keepdims=True)
        try:
            return markov_chain(P, rng.standard_normal(S))
        except ValueError:  # reducible or periodic draw: try again
            continue


CASES = [
    # (states, chain seed, zeros in P, L, model)
    (2, 1, False, 7, RNNConfig(noise_std=0.3)),
    (2, 2, False, 6, RNNConfig(b_max=0.4, gradient="truncated")),
    (3, 3, True, 5, RNNConfig(activation="sigmoid", b_max=2.0)),
    (3, 4, False, 4, RNNConfig(b_max=0.5, noise_std=0.2, gradient="truncated")),
]


@pytest.mark.parametrize("S,seed,zeros,L,cfg", CASES, ids=["binary-noise", "binary-truncated",
                                                          "3-state-zeros-sigmoid", "3-state-noise-truncated"])
def test_feature_solver_equals_dense_solver(S, seed, zeros, L, cfg):
    """h, risk, Poisson/i.i.d. variances and the initialisation term agree to 1e-10 relative.

    Both use the same quadrature rule, so they differ only by the range finder's rank truncation and
    by the lag-sum Poisson solution instead of the window chain's fundamental matrix; round-off
    (1e-15 relative per operation, amplified by at most the chain's mixing) is far below 1e-10.
    """
    chain = _random_chain(S, seed, zeros)
    target = make_target("tanh_linear", inner=[1.0, -0.5], outer=[0.2, 0.0])
    dense = solve_limit(cfg, chain, target, L=L, limit=LimitConfig(tol=1e-4), method="dense")
    feat = solve_limit(cfg, chain, target, L=L, limit=LimitConfig(tol=1e-4), method="features")
    assert isinstance(dense.kernel, Kernel) and isinstance(feat.kernel, FeatureKernel)
    H = dense.window.n_histories
    assert feat.kernel.n_nodes == dense.kernel.n_nodes and feat.kernel.error == dense.kernel.error
    assert feat.kernel.U.shape[0] == H and feat.kernel.truncation <= 1e-12 * feat.kernel.trace
    t = np.array([0.0, 0.3, 1.0, 2.5])
    rng = np.random.default_rng(seed)
    ell = np.vstack([np.eye(H)[dense.window.most_likely(3)], rng.standard_normal((2, H)) * dense.window.pi])

    def rel(a, b):
        return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)

    assert rel(feat.h(t), dense.h(t)) <= 1e-10
    r_f, r_d = feat.residual(t), dense.residual(t)
    assert rel((r_f**2) @ feat.window.pi, (r_d**2) @ dense.window.pi) <= 1e-10  # stationary risk
    fv_f, fv_d = feat.fluctuation_variances(t, ell), dense.fluctuation_variances(t, ell)
    for kind in ("poisson", "iid"):
        assert rel(fv_f[kind], fv_d[kind]) <= 1e-10, kind
    assert rel(feat.init_variance(t, ell), dense.init_variance(t, ell)) <= 1e-10
    # the rank is what the spectrum needs, not H: section-6-like chains have far fewer relevant directions
    np.testing.assert_allclose(np.sort(feat.eigenvalues)[::-1][:5], np.sort(dense.eigenvalues)[::-1][:5],
                               rtol=1e-10)


@pytest.mark.parametrize("rank", [8, 24])
def test_grown_sketch_equals_dense_kernel(rank):
    """A sketch started far below the spectrum's rank grows in chunks (reusing earlier passes) to the same M.

    3 states, L = 6 (729 histories): the numerical rank is several times 8 and 24, so the sketch grows
    more than once.  ``U diag(lam) U^T`` equals ``Pi^{1/2} K Pi^{1/2}`` and ``U C0_eig U^T`` equals
    ``Pi^{1/2} C_0 Pi^{1/2}`` of the dense kernel on the same rule to 1e-10 relative (round-off only).
    ``C_0`` is measured on ``M``'s scale: it is read in the sketch of ``M`` (``C_0 <= E[c^2] K``), whose
    round-off is relative to ``M`` (measured: 5e-13 with two BLAS threads, on a ``C_0`` whose largest entry is
    3.9e-3 against 1.9e-2 for ``M``).
    """
    from distntk.chain import window_chain
    from distntk.limit import ntk, ntk_features

    chain = _random_chain(3, 5, False)
    cfg = RNNConfig(b_max=0.5)
    win = window_chain(chain, 6)
    dense = ntk(cfg, win, tol=1e-4)
    feat = ntk_features(cfg, win, tol=1e-4, rank=rank)
    k = feat.U.shape[1]
    assert 2 * rank < k < win.n_histories  # grew (doubling) at least twice, stopped by the check
    np.testing.assert_allclose(feat.U.T @ feat.U, np.eye(k), atol=1e-12)
    sq = np.sqrt(win.pi)
    M = sq[:, None] * dense.K * sq[None, :]
    C = sq[:, None] * dense.C0 * sq[None, :]
    assert np.max(np.abs((feat.U * feat.lam) @ feat.U.T - M)) <= 1e-10 * np.max(np.abs(M))
    assert np.max(np.abs(feat.U @ feat.C0_eig @ feat.U.T - C)) <= 1e-10 * np.max(np.abs(M))
    assert abs(feat.trace - np.trace(M)) <= 1e-12 * np.trace(M)


def test_unknown_method_is_an_error():
    chain = _random_chain(2, 1, False)
    target = make_target("tanh_linear", inner=[1.0], outer=[0.0])
    with pytest.raises(ValueError, match="expected 'features' or 'dense'"):
        solve_limit(RNNConfig(), chain, target, L=2, method="qr")


def test_beyond_4096_histories_agrees_with_the_shorter_window():
    """The cap is lifted: L = 13 (8192 histories, no dense oracle affordable) solves in feature space, and
    h there agrees with L = 12 on the common most recent 12 states to 1e-4.

    Tolerance: the window truncation moves the kernel by at most ~rho^12 = 5e-7 (b_max = 0.3) and each
    kernel by at most its reported error (<= 1e-6); through the ODE over t <= 2 with eigenvalues
    <= 0.5 that moves h by well under 1e-4, while h differs by ~0.1 between neighbouring windows.
    """
    chain = markov_chain([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0])
    target = make_target("tanh_linear", inner=[1.0, 0.8], outer=[0.0, 0.0, 0.3])
    short = solve_limit(RNNConfig(), chain, target, L=12)
    long = solve_limit(RNNConfig(), chain, target, L=13)
    assert long.window.n_histories == 8192 and long.kernel.error <= 1e-6
    h12, h13 = short.h([2.0])[0], long.h([2.0])[0]
    drop_oldest = short.window.index(long.window.histories[:, 1:])
    np.testing.assert_allclose(h13, h12[drop_oldest], rtol=0, atol=1e-4)
    assert np.ptp(h12) > 0.1  # the check is not vacuous


@pytest.mark.parametrize("threads", ["1", "2"])
def test_feature_tasks_and_threads_give_the_same_bits(monkeypatch, threads):
    """The feature pass runs in tasks of ``_ROWS_PER_TASK`` histories on several threads (a task restarts
    its windows from the zero state): the features are the same bits as one task on one thread, and
    ``tr M`` (summed task by task) agrees to round-off.  3 states, L = 6 (729 histories) in tasks of 100.
    """
    from distntk import _fast, limit
    from distntk.chain import window_chain

    chain = _random_chain(3, 7, True)
    win = window_chain(chain, 6)
    hist = np.ascontiguousarray(win.histories, dtype=np.int64)
    lcp = _fast.common_prefix(hist)
    run = _fast.memory_features_kernel(chain.dim, True, False)
    rng = np.random.default_rng(3)
    full = np.column_stack([rng.normal(size=(50, chain.dim)), rng.normal(size=50), rng.uniform(-0.5, 0.5, 50)])
    wts = rng.uniform(0.5, 1.0, 50) / 50
    sq = np.sqrt(win.pi)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    X1, _, tr1 = limit.feature_pass(run, chain, hist, lcp, full, wts, slice(0, 50), sq, trace=True)
    monkeypatch.setattr(limit, "_ROWS_PER_TASK", 100)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", threads)
    X2, _, tr2 = limit.feature_pass(run, chain, hist, lcp, full, wts, slice(0, 50), sq, trace=True)
    assert np.array_equal(X1, X2) and np.all(np.isfinite(X1)) and np.ptp(X1) > 0
    assert abs(tr2 - tr1) <= 1e-13 * tr1 and np.isclose(tr1, np.sum(X1**2), rtol=1e-13, atol=0)
