"""The kernel limit, the memory fixed point and the fluctuation predictions.

docs/model.md sections 3-6.

Memory window (section 3).  For fixed ``theta`` the memory recursion contracts
with factor ``rho = b_max sup|sigma'|``; a window of length ``L`` started from 0
errs by at most ``rho^L``.  :func:`window_length` picks
``L = ceil(log(tol) / log(rho))`` (at least the target depth ``m``), capped so
that the window chain has at most ``max_histories`` histories, and reports the
bound ``rho^L`` actually achieved.

Kernel (4.1)-(4.2).  ``K(z, z') = E[s(z) s(z') + c^2 J(z).J(z')]`` over ``theta ~ mu_0``
with ``E[c^2] = 1/3``; ``C_0(z, z') = E[c^2] E[s(z) s(z')]``.  The expectation
over the random coordinates ``(w, a, b)`` (those with positive scale) meets a
tolerance ``tol`` on every entry (docs/model.md#kernel):

* Gaussian coordinates ``v = (w, a)``: the integrand is sharpest along the
  ridges ``w.x_s + a = 0`` (pre-activation 0, where ``|b| sigma'`` is
  largest), sharper as ``rho -> 1``.  Where the states' functionals
  ``w.x_s + a`` are linearly independent they become coordinates ``u``
  (:func:`_ridge_frame`), and each ``u_i = sd_i c sinh(t)`` is integrated by
  the trapezoid rule in ``t`` (nodes crowd at the ridge, ``c = 1 - rho``).  The
  integrand is analytic in a strip around the real ``t`` axis, so the error
  falls like ``exp(-2 pi delta / h)`` in the step ``h`` (Gauss-Hermite gains
  only ``exp(-c sqrt(n))``).  The box ``|u_i| <= X sd_i`` drops Gaussian mass
  whose contribution is at most ``tol / 4``: ``X`` from the integrand bound
  ``B`` (``|s| <= 1``, ``|J_j| <= g |x_j| / (1 - rho)``).
* Uniform ``b``: Gauss-Legendre, geometric in the order (the integrand is
  analytic in ``b`` inside ``|b| sup|sigma'| < 1``).

The step and the order are refined by 3/2 per direction until the changes they
cause, ``e_g`` and ``e_u``, plus the tail bound total at most ``tol`` (checked
on up to 64 histories: the most likely quarter and a seeded sample).  The
rule returned is refined by 6/5 in both directions; with geometric
convergence its error is far below ``e_g + e_u``, which is reported as
``error`` (a bound, not an estimate of the same size).  With more than 4
random coordinates: scrambled Sobol, 8 independent scrambles, ``error`` = 4
standard errors of the mean.  Legacy ``resolution``: a fixed tensor
Gauss-Hermite/Legendre rule, ``error`` from two resolutions (an estimate that
can be far too small at long memory).

Limit ODE (4.5).  ``dh/dt = alpha K Pi (f - h)``, ``h_0 = 0``.  With
``M = Pi^{1/2} K Pi^{1/2} = Q Lambda Q^T`` and ``A = -alpha K Pi``::

    r_t = f - h_t = Pi^{-1/2} Q e^{-alpha t Lambda} Q^T Pi^{1/2} f = e^{A t} f

Fluctuations (5.4)-(5.8).  ``V_t = int_0^t e^{A(t-u)} Sigma(u) e^{A^T(t-u)} du`` solves
``dV/dt = A V + V A^T + Sigma(h_t)``, ``V_0 = 0``, with
``Sigma(u) = alpha^2 K [diag(r_u) W~ diag(r_u) + sigma_eps^2 Pi] K`` and the
constant ``W~ = (I - pi 1^T) W (I - 1 pi^T)``, ``W = Pi Z + Z^T Pi - Pi``
(``Z`` the fundamental matrix of the window chain; this is the data term
``K D_r W D_r^T K`` of docs/model.md (5.6) with ``D_r = diag(r)(I - pi 1^T)``).  The i.i.d.
prediction replaces ``W`` by ``Pi``.  For functionals ``l`` (rows of ``Lmat``)
we need ``l^T V_t l'``; in the eigenbasis ``K e^{A^T tau} l =
Pi^{-1/2} Q (lambda e^{-alpha lambda tau} * Q^T Pi^{-1/2} l)``, so each
integrand evaluation costs two ``H x H`` products per functional and no ``H^3``
work.  The integral over ``u`` is computed, for each ``t``, by composite
Gauss-Legendre whose node count is chosen from the largest decay rate
``4 alpha lambda_max`` so that the rule's error bound is below 1e-14 relative:
the integrand is a finite sum of exponentials, so this is exact to round-off.

Feature space (docs/model.md#features, the default).  The rule makes ``K = Phi Phi^T`` exactly
(``Phi`` is ``H x Q (d + 3)``), so ``M = Pi^{1/2} K Pi^{1/2}`` has the range of
``Pi^{1/2} Phi``, whose spectrum decays fast.  :func:`ntk_features` finds its
top eigenpairs ``U (H, k), lam (k,)`` by a randomized range finder streamed
over node blocks (no ``H x H`` array), and everything above runs with ``Q = U``:
``h_t = Pi^{-1/2} U (1 - e^{-alpha t lam}) U^T Pi^{1/2} f`` (the null space of
``K`` does not move), ``K e^{A^T tau} l`` and ``E_t C_0 E_t^T`` in the ``k``
eigen-directions, and ``Z v`` by the lag sum of
:meth:`~distntk.chain.WindowChain.poisson_lag`.  The dense path (``K``, ``Z``,
``H^3`` eigendecomposition) stays as the oracle for small ``H``.

Initialisation (5.11)-(5.12).  ``Var_theta E[g | theta] ~ N^{1-2beta} l^T E_t C_0 E_t^T l``
with ``E_t = e^{A t}``.

Shapes: ``H`` histories; functionals ``(P, H)``; times ``(n_t,)``; results
``(n_t, P)`` for variances and ``(n_t, H)`` for ``h``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from math import factorial

import numpy as np
import scipy.linalg
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from numpy.typing import ArrayLike
from scipy.linalg.blas import dsyrk as _syrk
from scipy.stats import norm, qmc

from . import _fast
from .chain import ChainError, MarkovChain, WindowChain, window_chain
from .rnn import RNNConfig
from .target import Target

__all__ = ["Kernel", "FeatureKernel", "Limit", "LimitConfig", "MAX_HISTORIES", "window_length", "ntk", "ntk_features",
           "solve_limit"]

E_C2 = 1.0 / 3.0  # E[c^2] for c ~ U[-1, 1]
MAX_HISTORIES = 1 << 20  # the feature-space solver's reach: windows enumerated and held in memory
_MAX_GROW = 1 << 16  # window_length never looks past this L (rho^L is then reported as it is)


def _count_histories(chain: MarkovChain, L: int) -> int:
    A = (chain.P > 0).astype(float)
    v = (chain.pi > 0).astype(float)
    for _ in range(L - 1):
        v = v @ A
    return int(round(v.sum()))


@dataclass(frozen=True)
class LimitConfig:
    """The spec's ``[limit]`` table: one name per key, from the TOML file to the solver.

    Frozen, like ``RNNConfig``; ``Experiment.limit`` holds it and ``solve_limit``,
    ``distntk.longmem.solve_sampled`` and ``distntk.ar1.ar1_limit`` take it.  Ranges are checked
    where the spec is read (``distntk.spec``), each error naming its key.

    Parameters
    ----------
    tol : float, optional
        The tolerance on the kernel entries: the quadrature is refined until it is met
        (docs/model.md#kernel).
    resolution : int or None, optional
        Legacy: fixed Gauss points per coordinate instead of ``tol``; ``None``: adaptive.
    max_histories : int, optional
        The most length-``L`` histories a window chain may have.
    memory : {"window", "sampled"}, optional
        The limit's training side: length-``L`` windows, or the infinite past estimated along
        simulated paths (``distntk.longmem``); the spec's ``"auto"`` resolved.
    basis_L : int or None, optional
        The sampled limit's basis window.
    l0 : int or None, optional
        The sampled limit's control-variate window (``None``: the basis window).
    segments : int, optional
        Independent path segments of a Monte Carlo limit (sampled or AR(1)).
    segment_steps : int, optional
        Steps per path segment.
    """

    tol: float = 1e-6
    resolution: int | None = None
    max_histories: int = 4096
    memory: str = "window"
    basis_L: int | None = None
    l0: int | None = None
    segments: int = 16
    segment_steps: int = 4096


def window_length(cfg: RNNConfig, chain: MarkovChain, m: int = 1, tol: float = 1e-6,
                  max_histories: int = 4096) -> tuple[int, float]:
    """``(L, rho^L)``: the window length for tolerance ``tol`` and the bound achieved."""
    if not 0 < tol < 1:
        raise ValueError(f"memory tolerance is {tol}; expected 0 < tol < 1")
    rho = cfg.rho
    L = 1 if rho == 0 else int(np.ceil(np.log(tol) / np.log(rho)))
    L = max(L, m, 1)
    if _count_histories(chain, m) > max_histories:
        raise ChainError(f"target depth m = {m} already needs more than {max_histories} histories")
    # grow from m: the counts never decrease with L (every window of an irreducible chain has a successor),
    # so the first L whose successor is too many is the longest affordable one; at most _MAX_GROW steps
    A = (chain.P > 0).astype(float)
    v = (chain.pi > 0).astype(float)
    for _ in range(m - 1):
        v = v @ A
    Lc = m
    while Lc < min(L, _MAX_GROW):
        nv = v @ A
        if nv.sum() > max_histories:
            break
        v, Lc = nv, Lc + 1
    return Lc, rho**Lc


@dataclass(frozen=True, eq=False)
class Kernel:
    """NTK ``K`` and initial covariance ``C_0`` on the histories, ``(H, H)`` each."""

    K: np.ndarray
    C0: np.ndarray
    error: float  # bound on max |K - K_exact| (and on C_0); see the module docstring
    method: str  # "trapezoid", "gauss" (legacy resolution), "sobol" or "exact"
    n_nodes: int  # nodes of the rule that gave K
    seconds: float = 0.0  # wall time of the rule choice and the kernel
    tol: float | None = None  # requested tolerance on the kernel entries (None: fixed resolution)


def _rule_gauss(scales, n):
    """Tensor Gauss nodes for coordinates ``[(kind, scale), ...]``; returns (points (Q, k), weights (Q,))."""
    return _tensor([hermegauss(n) if kind == "normal" else leggauss(n) for kind, _ in scales], scales)


def _tensor(rules, scales):
    """Tensor product of 1-d rules ``(x, w)`` on the standard variables (normal: weight ``e^{-x^2/2}``,
    uniform: ``[-1, 1]``), scaled to the coordinates; weights normalised to probability."""
    pts, wts = [], []
    for (x, w), (kind, scale) in zip(rules, scales, strict=True):
        pts.append(scale * x)
        wts.append(w / np.sqrt(2 * np.pi) if kind == "normal" else w / 2.0)
    grids = np.meshgrid(*pts, indexing="ij")
    wgrid = np.meshgrid(*wts, indexing="ij")
    P = np.stack([g.ravel() for g in grids], axis=1)
    W = np.prod(np.stack([g.ravel() for g in wgrid], axis=1), axis=1)
    return P, W


def _ridge_frame(chain: MarkovChain, cfg: RNNConfig, n_normal: int):
    """Coordinates ``u = A v`` for the Gaussian block ``v`` (the ``w_j`` then ``a`` with positive scale).

    The integrand is sharpest along the ridges ``w.x_s + a = 0`` (a pre-activation
    at 0, where ``|b| sigma'`` is largest).  When the functionals ``v -> w.x_s + a``
    of the ``S`` states are linearly independent (``S <= `` the block size, e.g.
    the binary chain with ``d = 1``), they become the first coordinates of ``u``
    (the rest an orthonormal complement) so that each ridge is a coordinate
    plane; otherwise ``A = I``.  Returns ``(A^{-1}, sd(u), Sigma_u^{-1},
    normaliser)`` with ``u ~ N(0, Sigma_u)``, ``Sigma_u = A D A^T``.
    """
    d = chain.dim
    scale = ([cfg.sigma_w] * d if cfg.sigma_w > 0 else []) + ([cfg.sigma_a] if cfg.sigma_a > 0 else [])
    D = np.diag(np.square(scale))
    A = np.eye(n_normal)
    if cfg.sigma_w > 0 and cfg.sigma_a > 0:
        rows = np.hstack([chain.inputs, np.ones((chain.n_states, 1))])
        if chain.n_states <= n_normal and np.linalg.matrix_rank(rows) == chain.n_states:
            A = np.vstack([rows, scipy.linalg.null_space(rows).T])
    S_u = A @ D @ A.T
    norm_c = 1.0 / np.sqrt((2 * np.pi) ** n_normal * np.linalg.det(S_u))
    return np.linalg.inv(A), np.sqrt(np.diag(S_u)), np.linalg.inv(S_u), norm_c


def _rule_graded(scales, frame, m, n, X, c):
    """Sinh-graded trapezoid in the ridge coordinates ``u`` times Gauss-Legendre (``n``) in ``b``.

    Per Gaussian coordinate ``u_i = sd_i c sinh(t)``, ``t`` on ``2m + 1`` equal
    steps of ``[-T, T]``, ``T = asinh(X / c)`` (so ``|u_i| <= X sd_i``): nodes
    crowd near the ridge ``u_i = 0`` at spacing ``~ c h`` and thin out
    geometrically away from it; the map is analytic, so the trapezoid rule in
    ``t`` keeps its geometric convergence.  Weights: ``prod_i sd_i c cosh(t) h``
    times the Gaussian density of ``u``.  Points come back as ``(w, a, b)``
    columns in the order of ``scales``.
    """
    Ainv, sd, S_inv, norm_c = frame
    k = len(sd)
    n_unif = len(scales) - k
    axes, dws = [], []
    if k:
        T = float(np.arcsinh(X / c))
        t = np.linspace(-T, T, 2 * m + 1)
        z, dz = c * np.sinh(t), (T / m) * c * np.cosh(t)
        axes += [sd[i] * z for i in range(k)]
        dws += [sd[i] * dz for i in range(k)]
    for _kind, scale in scales[k:]:
        x, w = leggauss(n)
        axes.append(scale * x)
        dws.append(w / 2.0)
    grids = [g.ravel() for g in np.meshgrid(*axes, indexing="ij")]
    W = np.prod(np.stack([g.ravel() for g in np.meshgrid(*dws, indexing="ij")], axis=1), axis=1)
    U = np.stack(grids[:k], axis=1) if k else np.zeros((len(W), 0))
    if k:
        W = W * norm_c * np.exp(-0.5 * np.einsum("qi,ij,qj->q", U, S_inv, U))
    pts = np.hstack([U @ Ainv.T] + [g[:, None] for g in grids[k:]]) if n_unif else U @ Ainv.T
    keep = W > 0  # nodes far out in the corners of the box carry no weight in double precision
    return pts[keep], W[keep]


def _rule_sobol(scales, m, seed):
    if isinstance(seed, np.random.SeedSequence):
        seed = np.random.default_rng(seed)
    U = qmc.Sobol(len(scales), scramble=True, seed=seed).random_base2(m)
    U = np.clip(U, 1e-12, 1 - 1e-12)
    cols = []
    for j, (kind, scale) in enumerate(scales):
        cols.append(scale * norm.ppf(U[:, j]) if kind == "normal" else scale * (2 * U[:, j] - 1))
    return np.stack(cols, axis=1), np.full(len(U), 1.0 / len(U))


def _kernel_from_rule(cfg, chain, hist, coords, pts, wts, block=512):
    """Accumulate ``K`` and ``C_0`` on sorted histories ``hist`` over quadrature nodes, ``block`` at a time.

    Per block, the compiled kernel walks the sorted histories depth first (each
    distinct prefix once) for all nodes at once, and the weighted Gram matrices
    are rank-``block (d + 3)`` symmetric updates (BLAS ``syrk``, upper triangle).
    """
    d, H = chain.dim, len(hist)
    hist = np.ascontiguousarray(hist, dtype=np.int64)
    lcp = _fast.common_prefix(hist)
    run = _fast.memory_jacobian_kernel(d, cfg.gradient == "rtrl", cfg.activation == "sigmoid")
    Kmat = np.zeros((H, H), order="F")
    C = np.zeros((H, H), order="F")
    full = np.zeros((len(pts), d + 2))  # columns (w_1..w_d, a, b)
    for j, col in enumerate(coords):
        full[:, col] = pts[:, j]
    for lo in range(0, len(pts), block):
        sl = slice(lo, lo + block)
        q = len(full[sl])
        s = np.empty((H, q))
        J = np.empty((H, d + 2, q))
        run(np.ascontiguousarray(full[sl, :d].T), np.ascontiguousarray(full[sl, d]),
            np.ascontiguousarray(full[sl, d + 1]), chain.inputs, hist, lcp, s, J)
        s *= np.sqrt(wts[sl])
        J *= np.sqrt(E_C2 * wts[sl])
        # s.T and J.reshape(H, -1).T are Fortran-ordered views: syrk(trans=1) forms s s^T without copies
        C = _syrk(1.0, s.T, beta=1.0, c=C, trans=1, overwrite_c=1)
        Kmat = _syrk(1.0, J.reshape(H, -1).T, beta=1.0, c=Kmat, trans=1, overwrite_c=1)
    Kmat += C
    Kmat = np.triu(Kmat) + np.triu(Kmat, 1).T
    C = E_C2 * (np.triu(C) + np.triu(C, 1).T)
    return np.ascontiguousarray(Kmat), np.ascontiguousarray(C)


def _integrand_bound(cfg, chain) -> float:
    """``sup |s s' + c^2 J.J'|`` over all parameters and windows.

    ``|s| <= sup|sigma|`` and each Jacobian entry is a geometric sum with ratio
    ``rho``: ``|dS/dw_j| <= g |x_j| / (1 - rho)``, ``|dS/da| <= g / (1 - rho)``,
    ``|dS/db| <= g sup|sigma| / (1 - rho)`` with ``g = sup|sigma'|``.
    """
    smax, g = (1.0, 0.25) if cfg.activation == "sigmoid" else (1.0, 1.0)
    x2 = float(np.max(np.sum(chain.inputs**2, axis=1)))
    J2 = (g / (1.0 - cfg.rho)) ** 2 * (x2 + 1.0 + smax**2)
    return smax**2 + E_C2 * J2


def _rule_sample(window: WindowChain, size: int, seed: int) -> np.ndarray:
    """Sorted histories on which the rule is chosen: all of them, or the ``size // 4`` most likely
    plus a seeded uniform sample of the rest (the integrand's smoothness in ``theta`` is shared)."""
    H = window.n_histories
    if H <= size:
        return window.histories
    top = window.most_likely(size // 4)
    rest = np.setdiff1d(np.arange(H), top)
    rng = np.random.default_rng(np.random.SeedSequence([seed, H, window.L]))
    pick = np.concatenate([top, rng.choice(rest, size - len(top), replace=False)])
    return window.histories[np.sort(pick)]


def _adaptive_rule(cfg, chain, hist, coords, scales, tol, max_nodes):
    """Choose the trapezoid/Gauss-Legendre rule for ``tol``: ``(pts, wts, error_bound)``.

    The Gaussian coordinates are truncated at ``|z| <= X`` with ``X`` such that
    ``n_gauss * B * P(|Z| > X) <= tol / 4`` (``B`` the integrand bound, so the
    dropped mass costs at most ``tol / 4``).  Both 1-d rules converge
    geometrically for the analytic integrand, so refining a direction by 3/2
    changes the kernel by about the coarser rule's error in that direction.  The
    loop refines each direction until the changes ``e_g`` (trapezoid step) and
    ``e_u`` (Legendre order) plus the tail bound total at most ``tol``; it then
    returns the rule refined by 6/5 in *both* directions (error ``~ E^{6/5}`` for
    a direction whose coarse error is ``E ~ e``: far below ``e_g + e_u``), and
    reports the bound ``e_g + e_u + tail``.
    """
    n_normal = sum(kind == "normal" for kind, _ in scales)
    tail = 0.0
    X = 1.0
    if n_normal:
        B = _integrand_bound(cfg, chain)
        X = max(float(norm.isf(tol / (8.0 * n_normal * B))), 3.0)
        tail = n_normal * B * 2.0 * norm.sf(X)
    frame = _ridge_frame(chain, cfg, n_normal)
    c = float(np.clip(1.0 - cfg.rho, 0.05, 1.0))  # ridge width shrinks like 1 - rho
    m, n = 6, 6
    up = lambda k: int(np.ceil(1.5 * k))  # noqa: E731

    def rule(mm, nn):
        return _rule_graded(scales, frame, mm, nn, X, c)

    def kern(mm, nn):
        pts, wts = rule(mm, nn)
        K, C = _kernel_from_rule(cfg, chain, hist, coords, pts, wts)
        return K, C, len(pts)

    def diff(A, B):
        return max(float(np.max(np.abs(A[0] - B[0]))), float(np.max(np.abs(A[1] - B[1]))))

    base = kern(m, n)
    while True:
        fine_g = kern(up(m), n) if n_normal else base
        fine_u = kern(m, up(n)) if n_normal < len(scales) else base
        e_g, e_u = diff(fine_g, base), diff(fine_u, base)
        bound = e_g + e_u + tail
        final_nodes = (2 * up(m) + 1) ** n_normal * up(n) ** (len(scales) - n_normal)
        if bound <= tol or final_nodes > max_nodes:
            # a geometric rule refined by any factor r > 1 errs like E^r < e: 6/5 keeps the node count low
            pts, wts = rule(int(np.ceil(1.2 * m)) if n_normal else m, int(np.ceil(1.2 * n)))
            return pts, wts, bound
        # refine the direction(s) that carry most of the error
        ref_g = n_normal and e_g >= 0.25 * (tol - tail)
        ref_u = n_normal < len(scales) and e_u >= 0.25 * (tol - tail)
        if ref_g and ref_u:
            m, n = up(m), up(n)
            base = kern(m, n)
        elif ref_g:
            m, base = up(m), fine_g
        else:
            n, base = up(n), fine_u


def _sobol_rule(cfg, chain, hist, coords, scales, tol, max_nodes, seed):
    """Randomised QMC: 8 independent scrambles of ``2^k`` points, ``k`` raised until 4 standard errors
    of the mean (entrywise max over ``hist``, of ``K`` and ``C_0``) are below ``tol`` or the node budget
    is spent.  Returns the pooled points (their mean is the estimate), weights and the error."""
    reps = 8
    ss = np.random.SeedSequence([seed, 0x50B01])
    k = 10
    while True:
        rules = [_rule_sobol(scales, k, s) for s in ss.spawn(reps)]
        runs = [_kernel_from_rule(cfg, chain, hist, coords, *r) for r in rules]
        K = np.stack([r[0] for r in runs])
        C = np.stack([r[1] for r in runs])
        se = max(float(np.max(K.std(axis=0, ddof=1))), float(np.max(C.std(axis=0, ddof=1)))) / np.sqrt(reps)
        if 4 * se <= tol or reps * 2 ** (k + 1) > max_nodes:
            pts = np.concatenate([r[0] for r in rules])
            return pts, np.full(len(pts), 1.0 / len(pts)), 4 * se
        k += 1


@dataclass(frozen=True)
class _Rule:
    coords: list  # columns of (w_1..w_d, a, b) that are random
    pts: np.ndarray  # (Q, len(coords))
    wts: np.ndarray  # (Q,)
    error: float
    method: str
    tol: float | None


_RULES: dict = {}  # the last few rules chosen in this process (the cost estimate chooses the solve's rule)


def quadrature_rule(cfg, window, resolution, seed, tol, max_nodes, sample) -> _Rule:
    """The rule for ``K`` (module docstring): adaptive, legacy fixed, Sobol or exact.

    Deterministic in its inputs, so a rule chosen once in a process (by :func:`distntk.cost.estimate_cost`,
    before the run) is reused by the solve; the key holds the chain's bytes and the window, not object ids."""
    h = window.histories
    key = (cfg, window.chain.P.tobytes(), window.chain.inputs.tobytes(), h.shape, h.tobytes(),
           resolution, seed, tol, max_nodes, sample)
    rule = _RULES.get(key)
    if rule is None:
        rule = _choose_rule(cfg, window, resolution, seed, tol, max_nodes, sample)
        if len(_RULES) >= 4:
            _RULES.pop(next(iter(_RULES)))
        _RULES[key] = rule
    return rule


def _choose_rule(cfg, window, resolution, seed, tol, max_nodes, sample) -> _Rule:
    chain = window.chain
    d = chain.dim
    coords, scales = [], []
    for j in range(d):
        if cfg.sigma_w > 0:
            coords.append(j)
            scales.append(("normal", cfg.sigma_w))
    if cfg.sigma_a > 0:
        coords.append(d)
        scales.append(("normal", cfg.sigma_a))
    if cfg.b_max > 0:
        coords.append(d + 1)
        scales.append(("uniform", cfg.b_max))
    if not scales:
        return _Rule(coords, np.zeros((1, 0)), np.ones(1), 0.0, "exact", tol)
    hist = window.histories
    if resolution is not None:
        if len(scales) <= 4:
            coarse = _kernel_from_rule(cfg, chain, hist, coords, *_rule_gauss(scales, max(resolution - 6, 2)))
            pts, wts = _rule_gauss(scales, resolution)
            method = "gauss"
        else:
            coarse = _kernel_from_rule(cfg, chain, hist, coords, *_rule_sobol(scales, resolution - 1, seed + 1))
            pts, wts = _rule_sobol(scales, resolution, seed)
            method = "sobol"
        fine = _kernel_from_rule(cfg, chain, hist, coords, pts, wts)
        return _Rule(coords, pts, wts, float(np.max(np.abs(fine[0] - coarse[0]))), method, None)
    if not 0 < tol < 1:
        raise ValueError(f"quadrature tolerance is {tol}; expected 0 < tol < 1")
    sub = _rule_sample(window, sample, seed)
    if len(scales) <= 4:
        pts, wts, err = _adaptive_rule(cfg, chain, sub, coords, scales, tol, max_nodes)
        return _Rule(coords, pts, wts, err, "trapezoid", tol)
    pts, wts, err = _sobol_rule(cfg, chain, sub, coords, scales, tol, max_nodes, seed)
    return _Rule(coords, pts, wts, err, "sobol", tol)


def ntk(cfg: RNNConfig, window: WindowChain, resolution: int | None = None, seed: int = 0,
        tol: float = 1e-6, max_nodes: int = 1 << 21, sample: int = 64) -> Kernel:
    """Kernel ``K`` and ``C_0`` on the histories of ``window`` (docs/model.md (4.1)-(4.2)), dense ``(H, H)``.

    Default: a rule chosen to meet ``tol`` on every entry of ``K`` and ``C_0``
    (module docstring), checked on at most ``sample`` histories.  ``error`` is
    the bound; it exceeds ``tol`` only when ``max_nodes`` stopped the refinement.

    ``resolution`` (legacy, ``limit.resolution`` in old specs) fixes the Gauss
    points per coordinate (error from ``resolution - 6``) or, for Sobol, ``log2``
    of the point count (error from ``resolution - 1``).
    """
    t0 = time.perf_counter()
    rule = quadrature_rule(cfg, window, resolution, seed, tol, max_nodes, sample)
    Kmat, C = _kernel_from_rule(cfg, window.chain, window.histories, rule.coords, rule.pts, rule.wts)
    return Kernel(Kmat, C, rule.error, rule.method, len(rule.pts), time.perf_counter() - t0, rule.tol)


@dataclass(frozen=True, eq=False)
class FeatureKernel:
    """``K = Phi Phi^T`` kept as the eigenpairs of ``M = Pi^{1/2} K Pi^{1/2} ~ U diag(lam) U^T`` (docs/model.md (6.8)).

    ``U`` is ``(H, k)``, ``lam`` ``(k,)``; ``C0_eig = U^T Pi^{1/2} C_0 Pi^{1/2} U``
    (``(k, k)``).  ``truncation`` is the discarded trace ``tr M - sum(lam)``
    (``>= 0``; the squared Frobenius norm of the part of ``Pi^{1/2} Phi`` outside
    ``range(U)``); see :func:`ntk_features` for the after-the-fact check.
    """

    U: np.ndarray
    lam: np.ndarray
    C0_eig: np.ndarray
    trace: float
    truncation: float
    error: float
    method: str
    n_nodes: int
    seconds: float = 0.0
    tol: float | None = None
    nodes: np.ndarray | None = None  # (Q, d + 2) the rule's nodes (w_1..w_d, a, b), for the sampled limit
    weights: np.ndarray | None = None  # (Q,)


# Histories per feature task: fixed, so the features and ``tr M`` (summed task by task, in order) are the
# same bits whatever the thread count; a task restarts its windows from the zero state (a few levels).
_ROWS_PER_TASK = 1 << 14


def _threads() -> int:
    """Threads for the feature passes: as many as OpenBLAS uses for the GEMMs (``OPENBLAS_NUM_THREADS``, else
    ``OMP_NUM_THREADS``, else the cores this process may run on), so one setting governs the whole solver."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def feature_pass(run, chain, hist, lcp, full, wts, sl, sq, out=None, trace=False):
    """``Pi^{1/2} Phi`` on the nodes ``sl`` (``(H, (d + 3) q)``) and its ``s`` part (``(H, q)``, a view).

    ``run`` is :func:`distntk._fast.memory_features_kernel`; the kernel writes the
    weighted features straight into ``X`` (``out`` when given: a buffer of at least
    ``H (d + 3) q`` doubles, reused across blocks), in tasks of :data:`_ROWS_PER_TASK`
    histories run on :func:`_threads` threads.  With ``trace`` also returns
    ``sum(X**2)`` (the block's part of ``tr M``), from the same pass.
    """
    d, H = chain.dim, len(hist)
    nodes = full[sl]
    q = len(nodes)
    n = H * (d + 3) * q
    X = (np.empty(n) if out is None else out[:n]).reshape(H, (d + 3) * q)
    args = (np.ascontiguousarray(nodes[:, :d].T), np.ascontiguousarray(nodes[:, d]),
            np.ascontiguousarray(nodes[:, d + 1]), chain.inputs)
    scale = (np.sqrt(wts[sl]), np.sqrt(E_C2 * wts[sl]))
    sq = np.ascontiguousarray(sq, dtype=float)

    def task(lo):
        hi = min(lo + _ROWS_PER_TASK, H)
        return run(*args, hist[lo:hi], lcp[lo:hi], *scale, sq[lo:hi], X[lo:hi])

    starts = range(0, H, _ROWS_PER_TASK)
    threads = min(_threads(), len(starts))
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(task, starts))
    else:
        parts = [task(lo) for lo in starts]
    tr = sum(parts)
    return (X, X[:, :q], tr) if trace else (X, X[:, :q])


def _gemm_acc(A, B, C):
    """``C += A @ B`` in place (``C`` Fortran-ordered; BLAS ``beta = 1``, no temporary)."""
    if C.flags.f_contiguous and C.dtype == np.float64 and A.flags.c_contiguous:
        out = scipy.linalg.blas.dgemm(1.0, A.T, B, beta=1.0, c=C, trans_a=True, overwrite_c=True)
        if out is not C:
            C[...] = out
    else:
        C += A @ B


# Pass 2 runs the next chunk's pass 1 ahead when the new part of M Omega has a singular value above this
# multiple of ``rank_rtol`` (relative to the first chunk's largest): a guess, wrong only at a cost (the
# pass done ahead is discarded, or one more feature pass runs); the result does not depend on it beyond
# round-off.
_AHEAD_RATIO = 10.0


def _sketch_columns(seed: int, k: int, H: int, n: int) -> np.ndarray:
    """The ``n`` Gaussian columns that bring the sketch to ``k`` columns (seeded by ``k``, so a grown sketch
    has the columns a fresh one of its size would have in its first chunks)."""
    return np.random.default_rng(np.random.SeedSequence([seed, 0xFEA7, k])).standard_normal((H, n))


def ntk_features(cfg: RNNConfig, window: WindowChain, resolution: int | None = None, seed: int = 0,
                 tol: float = 1e-6, max_nodes: int = 1 << 21, sample: int = 64, rank: int = 128,
                 rank_rtol: float = 1e-15, block: int | None = None) -> FeatureKernel:
    """The kernel in feature form by a randomized range finder streamed over node blocks (docs/model.md#features).

    With ``X_b = Pi^{1/2} Phi_b`` the features of node block ``b``: pass 1 forms
    ``Y = M Omega = sum_b X_b (X_b^T Omega)`` (Gaussian ``Omega``, ``(H, k)``,
    seeded) and ``tr M``; ``Q = orth(Y)``.  Pass 2: ``B B^T = sum_b (Q^T X_b)(...)^T``
    and the same for the ``s`` features (``C_0``).  Then ``M ~ Q (B B^T) Q^T``.
    Checked after the fact: the smallest eigenvalue of ``B B^T`` is below
    ``rank_rtol`` times the largest (the sketch has run into round-off, so no
    direction above it is missing) and the discarded trace ``tr M - tr(B B^T)``
    is below ``1e-12 tr M``; else the sketch doubles: ``k`` new columns of
    ``Omega`` (pass 1 for them only; their ``Y`` orthogonalised against ``Q``)
    and pass 2 for the new rows of ``B`` (the old rows are kept), so a grown
    sketch costs what one of its final size costs, plus two feature passes.  When
    the new part of ``Y`` shows that the spectrum goes on well above the check's
    threshold, pass 2 runs the next chunk's pass 1 on the same features (one
    product ``[Q_n Omega_next]^T X_b``), saving one feature pass per growth step;
    this changes only the order of work (the result agrees to round-off).  No
    ``H x H`` array is formed; memory is ``O(H (k + block (d + 3)) + k Q (d + 3))``.

    Cost: the GEMMs ``X_b^T Omega``, ``X_b Z`` and ``Q^T X_b`` (``6 H k (d + 3) Q``
    flops in all) and one or two compiled feature passes per growth step, each
    writing ``X_b`` once (weights and ``Pi^{1/2}`` fused, ``tr M`` summed in the
    same pass) into one buffer of at most 2^27 doubles reused across blocks, on
    :func:`_threads` threads (the GEMMs on as many BLAS threads).
    """
    t0 = time.perf_counter()
    rule = quadrature_rule(cfg, window, resolution, seed, tol, max_nodes, sample)
    chain, H = window.chain, window.n_histories
    d = chain.dim
    hist = np.ascontiguousarray(window.histories, dtype=np.int64)
    lcp = _fast.common_prefix(hist)
    run = _fast.memory_features_kernel(d, cfg.gradient == "rtrl", cfg.activation == "sigmoid")
    full = np.zeros((len(rule.pts), d + 2))
    for j, col in enumerate(rule.coords):
        full[:, col] = rule.pts[:, j]
    sq = np.sqrt(window.pi)
    if block is None:  # a feature block of at most 2^27 doubles (1 GiB): long GEMMs, few passes over Y and Q
        block = int(np.clip((1 << 27) // (H * (d + 3)), 16, 512))
    blocks = [slice(lo, lo + block) for lo in range(0, len(full), block)]
    buf = np.empty(H * (d + 3) * min(block, len(full)))  # one feature buffer for all blocks
    # The sketch grows in chunks of columns; a chunk reuses all earlier work: its pass 1 sketches only
    # the new columns, which are orthogonalised against the basis so far, and pass 2 adds their rows
    # of B.  Chunk j's Omega is seeded by the column count it brings the sketch to, so the first chunk
    # is the (rank)-column sketch and a grown sketch has the columns a fresh one of its size would have
    # in the first chunks.
    Q = np.zeros((H, 0))
    Bs = [np.zeros((0, (d + 3) * len(full[sl]))) for sl in blocks]  # B = Q^T X_b per block, kept (k x R)
    trace = None
    k_new = min(rank, H)
    Y = None  # the next chunk's pass 1, when the last pass 2 did it ahead
    top = None  # the first chunk's largest singular value of Y = M Omega
    while True:
        k = Q.shape[1] + k_new
        if Y is None:
            # pass 1: Y = M Omega = sum_b X_b (X_b^T Omega), Omega (H, k_new) Gaussian: one power step, so the
            # range error in M is ~ lambda_{k+1} rather than sqrt(lambda_{k+1} lambda_1); tr M from the first
            # pass
            Omega = _sketch_columns(seed, k, H, k_new)
            Y = np.zeros((H, k_new), order="F")
            tr_sum = 0.0
            for sl in blocks:
                X, _, tr = feature_pass(run, chain, hist, lcp, full, rule.wts, sl, sq, out=buf, trace=True)
                tr_sum += tr
                _gemm_acc(X, X.T @ Omega, Y)
            trace = tr_sum if trace is None else trace
            del Omega
        if Q.shape[1]:  # block Gram-Schmidt against the basis so far, twice (the new part may be round-off)
            Y -= Q @ (Q.T @ Y)
            Qn, R = np.linalg.qr(Y)
            Qn -= Q @ (Q.T @ Qn)
            Qn, _ = np.linalg.qr(Qn)
        else:
            Qn, R = np.linalg.qr(Y)
        Y = None
        # Will this chunk leave the sketch short of the round-off floor?  Its smallest singular value (of
        # M Omega's new part) against the first chunk's largest is far above the check's threshold when
        # the spectrum goes on (measured: 6e-14 on a 3-state chain that needed 256 columns; 1e-17 on binary
        # chains that need 128): then pass 2 also runs the next chunk's pass 1 on the same features.
        sv = np.linalg.svd(R, compute_uv=False)
        top = sv[0] if top is None else top
        k_next = min(k, H - k)
        ahead = k_next > 0 and sv[-1] > _AHEAD_RATIO * rank_rtol * top
        # pass 2: the new rows Q_n^T X_b of B = Q^T Pi^{1/2} Phi (then B B^T, and the s-part, B's first q
        # columns of each block, for C_0); ahead: with Omega_next^T X_b in the same product, and
        # Y_next += X_b (X_b^T Omega_next)
        rows = Qn.T
        if ahead:
            Omega = _sketch_columns(seed, k + k_next, H, k_next)
            rows = np.vstack([rows, Omega.T])
            del Omega
            Y = np.zeros((H, k_next), order="F")
        rows = np.ascontiguousarray(rows)
        for ib, sl in enumerate(blocks):
            X, _ = feature_pass(run, chain, hist, lcp, full, rule.wts, sl, sq, out=buf)
            P = rows @ X
            Bs[ib] = np.vstack([Bs[ib], P[: Qn.shape[1]]])
            if ahead:
                _gemm_acc(X, P[Qn.shape[1]:].T, Y)
        del rows, P
        Q = np.hstack([Q, Qn])
        BB = np.zeros((k, k))
        CC = np.zeros((k, k))
        for B, sl in zip(Bs, blocks, strict=True):
            BB += B @ B.T
            Cs = B[:, : len(full[sl])]
            CC += Cs @ Cs.T
        ev = np.linalg.eigvalsh(BB)
        truncation = max(trace - float(np.sum(ev)), 0.0)
        # after the fact: the sketch reached the round-off floor (its smallest eigenvalue is negligible)
        # and the discarded trace is negligible
        if k >= H or (ev[0] <= rank_rtol * ev[-1] and truncation <= 1e-12 * trace):
            break
        k_new = k_next  # double the sketch
    lam, V = np.linalg.eigh(BB)
    lam = np.clip(lam, 0.0, None)
    U = Q @ V
    C0_eig = E_C2 * (V.T @ CC @ V)
    return FeatureKernel(U, lam, C0_eig, trace, truncation, rule.error, rule.method, len(rule.pts),
                         time.perf_counter() - t0, rule.tol, full, rule.wts)


def gl_nodes(t: float, rate: float, tol: float = 1e-14, n_max: int = 40):
    """Composite Gauss-Legendre nodes/weights on ``[0, t]`` for exponentials of rate <= ``rate``."""
    if t <= 0:
        return np.zeros(0), np.zeros(0)
    pieces = max(1, int(np.ceil(rate * t / 8.0)))
    h = t / pieces
    x = rate * h / 2.0
    n = 4
    while n < n_max and x ** (2 * n) / factorial(2 * n) * 4 > tol:
        n += 1
    xg, wg = leggauss(n)
    nodes = np.concatenate([h * (i + (xg + 1) / 2) for i in range(pieces)])
    weights = np.concatenate([h / 2 * wg for _ in range(pieces)])
    return nodes, weights


@dataclass(frozen=True, eq=False)
class Limit:
    """The solved limit for one (chain, target, model, L).

    Build it with ``solve_limit``.  Its methods evaluate the limit ``h_t`` (docs/model.md (4.5))
    and the predicted fluctuations (docs/model.md section 5) on the window chain's histories,
    from one eigendecomposition computed on first use.

    Parameters
    ----------
    cfg : RNNConfig
        Model and training hyper-parameters.
    window : distntk.chain.WindowChain
        The chain of length-``L`` windows: the ``H`` histories, ``pi_L`` and ``P_L``.
    kernel : distntk.limit.Kernel or distntk.limit.FeatureKernel
        The NTK ``K`` and the initial covariance ``C_0`` on the histories: dense ``(H, H)``
        arrays (small ``H``, the oracle) or in feature form (docs/model.md#features).
    f : numpy.ndarray
        The target on the histories, ``(H,)``.
    memory_bound : float
        ``rho^L``, the bound on what the window forgets.
    """

    cfg: RNNConfig
    window: WindowChain
    kernel: Kernel | FeatureKernel  # dense (small H, the oracle) or feature form (docs/model.md#features)
    f: np.ndarray  # (H,) target on histories
    memory_bound: float  # rho^L

    # --- factorisations, each computed once --------------------------------
    @property
    def dense(self) -> bool:
        """Whether the kernel is the dense ``Kernel`` (``method="dense"``), not the feature form."""
        return isinstance(self.kernel, Kernel)

    @cached_property
    def _eig(self):
        sq = np.sqrt(self.window.pi)
        if not self.dense:
            return self.kernel.lam, self.kernel.U, sq
        M = sq[:, None] * self.kernel.K * sq[None, :]
        lam, Q = scipy.linalg.eigh(M, check_finite=False)
        lam = np.clip(lam, 0.0, None)  # K is PSD; drop round-off negatives
        return lam, Q, sq

    @cached_property
    def _coef_f(self):
        lam, Q, sq = self._eig
        return Q.T @ (sq * self.f)

    @cached_property
    def _C0_eig(self):
        """``C_0`` in the eigenbasis, ``(Pi^{1/2} Q)^T C_0 (Pi^{1/2} Q)`` (two ``H^3`` products, once)."""
        if not self.dense:
            return self.kernel.C0_eig
        lam, Q, sq = self._eig
        B = Q * sq[:, None]
        return B.T @ self.kernel.C0 @ B

    def _poisson(self, v: np.ndarray) -> np.ndarray:
        """``Z v`` for centred rows ``v`` (``(n, H)``): dense ``Z`` (oracle) or the lag sum (docs/model.md (6.9))."""
        if self.dense:
            return v @ self.window.fundamental.T
        return self.window.poisson_lag(np.ascontiguousarray(v.T)).T  # (H, n) rows contiguous for P_L @

    @property
    def eigenvalues(self) -> np.ndarray:
        """Spectrum of ``Pi^{1/2} K Pi^{1/2}`` (the limit's relaxation rates / alpha), ascending, ``(k,)``."""
        return self._eig[0]

    # --- docs/model.md (4.5) -------------------------------------------------
    def residual(self, times: ArrayLike) -> np.ndarray:
        """The residual ``r_t = f - h_t`` on all histories.

        Parameters
        ----------
        times : array_like
            Training times ``t``, a number or a 1-d sequence.

        Returns
        -------
        numpy.ndarray
            ``(n_t, H)``: one row per time, one column per history.
        """
        lam, Q, sq = self._eig
        t = np.atleast_1d(np.asarray(times, dtype=float))
        grow = -np.expm1(-self.cfg.alpha * np.outer(t, lam))  # (n_t, k): 1 - e^{-alpha t lambda}
        # f - h_t with h_t = Pi^{-1/2} Q (1 - e^{-alpha t Lambda}) Q^T Pi^{1/2} f: also right when Q has
        # fewer than H columns (the null space of K does not move)
        return self.f - ((grow * self._coef_f) @ Q.T) / sq

    def h(self, times: ArrayLike) -> np.ndarray:
        """The limit ``h_t`` on all histories (docs/model.md (4.5)).

        Parameters
        ----------
        times : array_like
            Training times ``t``, a number or a 1-d sequence.

        Returns
        -------
        numpy.ndarray
            ``(n_t, H)``: one row per time, one column per history.
        """
        return self.f - self.residual(times)

    # --- docs/model.md section 5 --------------------------------------------------
    def fluctuation_variances(self, times: ArrayLike, functionals: ArrayLike) -> dict[str, np.ndarray]:
        """``l^T V_t l'`` for the Poisson and i.i.d. data terms (docs/model.md (5.8)).

        The time integral is by Gauss-Legendre quadrature; with ``noise_std > 0`` both terms
        include the label noise.

        Parameters
        ----------
        times : array_like
            Training times ``t``, a number or a 1-d sequence.
        functionals : array_like
            The linear functionals ``l`` of ``g``, ``(P, H)`` (or ``(H,)`` for one): the unit
            vector of history ``z`` gives ``g(z)``.

        Returns
        -------
        dict of str to numpy.ndarray
            ``{"poisson": (n_t, P, P), "iid": (n_t, P, P)}``; divide by ``N`` for the finite-N
            prediction of the variance across data sequences.
        """
        Lmat = np.atleast_2d(np.asarray(functionals, dtype=float))
        lam, Q, sq = self._eig
        alpha = self.cfg.alpha
        pi = self.window.pi
        # rows Q^T Pi^{-1/2} l; Pi^{-1/2} Q is never formed (an H x k array per call): the scalings go on the
        # P x H and n_u P x H sides
        Acoef = (Lmat / sq) @ Q
        noise2 = self.cfg.noise_std**2
        rate = 4 * alpha * (lam.max() if lam.size else 0.0)
        t_all = np.atleast_1d(np.asarray(times, dtype=float))
        P = Lmat.shape[0]
        out_p = np.zeros((len(t_all), P, P))
        out_i = np.zeros((len(t_all), P, P))
        for it, t in enumerate(t_all):
            nodes, wts = gl_nodes(t, rate)
            if len(nodes) == 0:
                continue
            r = self.residual(nodes)  # (n_u, H)
            tau = t - nodes
            # y_{u,p} = Pi^{-1/2} Q (lambda e^{-alpha lambda tau} * a_p): K e^{A^T tau} l_p
            coef = (lam * np.exp(-alpha * np.outer(tau, lam)))[:, None, :] * Acoef[None]  # (n_u, P, H)
            Y = (coef.reshape(-1, len(lam)) @ Q.T) / sq  # (n_u P, H): rows of Pi^{-1/2} Q coef
            v = Y.reshape(len(nodes), P, -1) * r[:, None, :]
            v = v - (v @ pi)[..., None]  # (I - 1 pi^T) v
            vw = v * pi  # Pi v
            Zv = np.ascontiguousarray(self._poisson(v.reshape(-1, len(pi)))).reshape(v.shape)  # Z v
            iid = np.einsum("uph,uqh->upq", vw, v)
            cross = np.einsum("uph,uqh->upq", vw, Zv)
            pois = cross + cross.transpose(0, 2, 1) - iid
            extra = 0.0
            if noise2 > 0:
                Yr = Y.reshape(len(nodes), P, -1)
                extra = noise2 * np.einsum("uph,uqh->upq", Yr * pi, Yr)
            w2 = (alpha**2) * wts[:, None, None]
            out_p[it] = np.sum(w2 * (pois + extra), axis=0)
            out_i[it] = np.sum(w2 * (iid + extra), axis=0)
        return {"poisson": out_p, "iid": out_i}

    def init_variance(self, times: ArrayLike, functionals: ArrayLike) -> np.ndarray:
        """``l^T E_t C_0 E_t^T l'``, the initialisation's term (docs/model.md (5.12)).

        Parameters
        ----------
        times : array_like
            Training times ``t``, a number or a 1-d sequence.
        functionals : array_like
            The linear functionals ``l`` of ``g``, ``(P, H)`` (or ``(H,)`` for one).

        Returns
        -------
        numpy.ndarray
            ``(n_t, P, P)``; multiply by ``N^{1-2beta}`` for the finite-N prediction of the
            variance across initialisations.
        """
        Lmat = np.atleast_2d(np.asarray(functionals, dtype=float))
        lam, Q, sq = self._eig
        Acoef = (Lmat / sq) @ Q
        Ct = self._C0_eig
        t = np.atleast_1d(np.asarray(times, dtype=float))
        B = np.exp(-self.cfg.alpha * np.outer(t, lam))[:, None, :] * Acoef[None]  # (n_t, P, H)
        return np.einsum("tph,hk,tqk->tpq", B, Ct, B)


def solve_limit(cfg: RNNConfig, chain: MarkovChain, target: Target, L: int | None = None, *,
                limit: LimitConfig | None = None, memory_tol: float = 1e-6, method: str = "features") -> Limit:
    """Window chain, kernel and target values for the limit problem.

    Parameters
    ----------
    cfg : RNNConfig
        Model and training hyper-parameters.
    chain : MarkovChain
        The data chain.
    target : Target
        The target ``f``.
    L : int or None, optional
        The window length, at least the target's memory ``m``.  ``None``: picked from
        ``memory_tol`` (the shortest ``L`` with ``rho^L <= memory_tol``, or the longest window with
        at most ``limit.max_histories`` histories if that is shorter).  An explicit ``L`` may exceed
        ``limit.max_histories``' window only up to ``MAX_HISTORIES`` (``2**20``) histories.
    limit : LimitConfig or None, optional
        The spec's ``[limit]`` table: ``limit.tol`` the tolerance on the kernel entries
        (docs/model.md#kernel), ``limit.resolution`` (legacy) a fixed quadrature instead,
        ``limit.max_histories`` the most histories of a window picked from ``memory_tol``.
        ``None``: ``LimitConfig()``.
    memory_tol : float, optional
        The memory tolerance on ``rho^L`` (the spec's ``training.memory_tol``), in ``(0, 1)``; used
        only when ``L`` is not given.
    method : {"features", "dense"}, optional
        ``"features"``: docs/model.md#features, no ``H x H`` array, exact up to the checked rank
        truncation; ``"dense"``: ``K``, ``Z`` and an ``H^3`` eigendecomposition, the oracle for
        small ``H``.

    Returns
    -------
    Limit
        The solved limit; ``memory_bound`` is ``rho^L``.

    Raises
    ------
    distntk.chain.ChainError
        If ``L`` is shorter than the target's memory, or the window has too many histories.
    ValueError
        If ``method`` or ``memory_tol`` is out of range.
    """
    limit = LimitConfig() if limit is None else limit
    max_histories = limit.max_histories
    if method not in ("features", "dense"):
        raise ValueError(f"limit method is {method!r}; expected 'features' or 'dense'")
    if L is None:
        L, bound = window_length(cfg, chain, target.m, memory_tol, max_histories)
    else:
        if L < target.m:
            raise ChainError(f"window length L = {L} is shorter than the target memory m = {target.m}")
        bound = cfg.rho**L
    win = window_chain(chain, L, max_histories=max(max_histories, MAX_HISTORIES))
    if method == "dense":
        kern = ntk(cfg, win, limit.resolution, tol=limit.tol)
    else:
        kern = ntk_features(cfg, win, limit.resolution, tol=limit.tol)
    f = target.on_windows(chain.inputs, win.histories)
    return Limit(cfg=cfg, window=win, kernel=kern, f=f, memory_bound=bound)
