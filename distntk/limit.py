"""The kernel limit, the memory fixed point and the fluctuation predictions.

MODEL.md sections 3, 4 and 5.

Memory window (section 3).  For fixed ``theta`` the memory recursion contracts
with factor ``rho = b_max sup|sigma'|``; a window of length ``L`` started from 0
errs by at most ``rho^L``.  :func:`window_length` picks
``L = ceil(log(tol) / log(rho))`` (at least the target depth ``m``), capped so
that the window chain has at most ``max_histories`` histories, and reports the
bound ``rho^L`` actually achieved.

Kernel (4.2).  ``K(z, z') = E[s(z) s(z') + c^2 J(z).J(z')]`` over ``theta ~ mu_0``
with ``E[c^2] = 1/3``; ``C_0(z, z') = E[c^2] E[s(z) s(z')]``.  The expectation
over the random coordinates ``(w, a, b)`` (those with positive scale) uses a
tensor Gauss rule (Gauss-Hermite for Gaussian, Gauss-Legendre for uniform
coordinates) when there are at most 4 of them, else scrambled Sobol points;
``error`` is the max-abs difference between two resolutions.

Limit ODE (4.3).  ``dh/dt = alpha K Pi (f - h)``, ``h_0 = 0``.  With
``M = Pi^{1/2} K Pi^{1/2} = Q Lambda Q^T`` and ``A = -alpha K Pi``::

    r_t = f - h_t = Pi^{-1/2} Q e^{-alpha t Lambda} Q^T Pi^{1/2} f = e^{A t} f

Fluctuations (5.1).  ``V_t = int_0^t e^{A(t-u)} Sigma(u) e^{A^T(t-u)} du`` solves
``dV/dt = A V + V A^T + Sigma(h_t)``, ``V_0 = 0``, with
``Sigma(u) = alpha^2 K [diag(r_u) W~ diag(r_u) + sigma_eps^2 Pi] K`` and the
constant ``W~ = (I - pi 1^T) W (I - 1 pi^T)``, ``W = Pi Z + Z^T Pi - Pi``
(``Z`` the fundamental matrix of the window chain; this is the data term
``K D_r W D_r^T K`` of MODEL 5.1 with ``D_r = diag(r)(I - pi 1^T)``).  The i.i.d.
prediction replaces ``W`` by ``Pi``.  For functionals ``l`` (rows of ``Lmat``)
we need ``l^T V_t l'``; in the eigenbasis ``K e^{A^T tau} l =
Pi^{-1/2} Q (lambda e^{-alpha lambda tau} * Q^T Pi^{-1/2} l)``, so each
integrand evaluation costs two ``H x H`` products per functional and no ``H^3``
work.  The integral over ``u`` is computed, for each ``t``, by composite
Gauss-Legendre whose node count is chosen from the largest decay rate
``4 alpha lambda_max`` so that the rule's error bound is below 1e-14 relative:
the integrand is a finite sum of exponentials, so this is exact to round-off.

Initialisation (5.2).  ``Var_theta E[g | theta] ~ N^{1-2beta} l^T E_t C_0 E_t^T l``
with ``E_t = e^{A t}``.

Shapes: ``H`` histories; functionals ``(P, H)``; times ``(n_t,)``; results
``(n_t, P)`` for variances and ``(n_t, H)`` for ``h``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import factorial

import numpy as np
import scipy.linalg
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy.linalg.blas import dsyrk as _syrk
from scipy.stats import norm, qmc

from .chain import ChainError, MarkovChain, WindowChain, window_chain
from . import _fast
from .rnn import RNNConfig
from .target import Target

__all__ = ["Kernel", "Limit", "window_length", "ntk", "solve_limit"]

_E_C2 = 1.0 / 3.0  # E[c^2] for c ~ U[-1, 1]


def _count_histories(chain: MarkovChain, L: int) -> int:
    A = (chain.P > 0).astype(float)
    v = (chain.pi > 0).astype(float)
    for _ in range(L - 1):
        v = v @ A
    return int(round(v.sum()))


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
    while L > m and _count_histories(chain, L) > max_histories:
        L -= 1
    return L, rho**L


@dataclass(frozen=True, eq=False)
class Kernel:
    """NTK ``K`` and initial covariance ``C_0`` on the histories, ``(H, H)`` each."""

    K: np.ndarray
    C0: np.ndarray
    error: float  # max |K_fine - K_coarse|
    method: str  # "gauss" or "sobol"
    n_nodes: int


def _rule_gauss(scales, n):
    """Tensor Gauss nodes for coordinates ``[(kind, scale), ...]``; returns (points (Q, k), weights (Q,))."""
    pts, wts = [], []
    for kind, scale in scales:
        if kind == "normal":
            x, w = hermegauss(n)
            pts.append(scale * x)
            wts.append(w / np.sqrt(2 * np.pi))
        else:  # uniform on [-scale, scale]
            x, w = leggauss(n)
            pts.append(scale * x)
            wts.append(w / 2.0)
    grids = np.meshgrid(*pts, indexing="ij")
    wgrid = np.meshgrid(*wts, indexing="ij")
    P = np.stack([g.ravel() for g in grids], axis=1)
    W = np.prod(np.stack([g.ravel() for g in wgrid], axis=1), axis=1)
    return P, W


def _rule_sobol(scales, m, seed):
    U = qmc.Sobol(len(scales), scramble=True, seed=seed).random_base2(m)
    U = np.clip(U, 1e-12, 1 - 1e-12)
    cols = []
    for j, (kind, scale) in enumerate(scales):
        cols.append(scale * norm.ppf(U[:, j]) if kind == "normal" else scale * (2 * U[:, j] - 1))
    return np.stack(cols, axis=1), np.full(len(U), 1.0 / len(U))


def _kernel_from_rule(cfg, window, coords, pts, wts, block=512):
    """Accumulate ``K`` and ``C_0`` over quadrature nodes, ``block`` nodes at a time.

    Per block, the compiled kernel walks the sorted histories depth first (each
    distinct prefix once) for all nodes at once, and the weighted Gram matrices
    are rank-``block (d + 3)`` symmetric updates (BLAS ``syrk``, upper triangle).
    """
    chain = window.chain
    d, H = chain.dim, window.n_histories
    hist = np.ascontiguousarray(window.histories, dtype=np.int64)
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
        J *= np.sqrt(_E_C2 * wts[sl])
        # s.T and J.reshape(H, -1).T are Fortran-ordered views: syrk(trans=1) forms s s^T without copies
        C = _syrk(1.0, s.T, beta=1.0, c=C, trans=1, overwrite_c=1)
        Kmat = _syrk(1.0, J.reshape(H, -1).T, beta=1.0, c=Kmat, trans=1, overwrite_c=1)
    Kmat += C
    Kmat = np.triu(Kmat) + np.triu(Kmat, 1).T
    C = _E_C2 * (np.triu(C) + np.triu(C, 1).T)
    return np.ascontiguousarray(Kmat), np.ascontiguousarray(C)


def ntk(cfg: RNNConfig, window: WindowChain, resolution: int | None = None, seed: int = 0) -> Kernel:
    """Kernel ``K`` and ``C_0`` on the histories of ``window`` (MODEL 4.2).

    ``resolution`` is the Gauss points per coordinate (default 20, error from
    ``resolution - 6``) or, for Sobol, ``log2`` of the point count (default 14,
    error from 13).
    """
    d = window.chain.dim
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
        pts, wts = np.zeros((1, 0)), np.ones(1)
        Kmat, C = _kernel_from_rule(cfg, window, coords, pts, wts)
        return Kernel(Kmat, C, 0.0, "exact", 1)
    if len(scales) <= 4:
        n = resolution or 20
        coarse = _kernel_from_rule(cfg, window, coords, *_rule_gauss(scales, max(n - 6, 2)))
        pts, wts = _rule_gauss(scales, n)
        method = "gauss"
    else:
        m = resolution or 14
        coarse = _kernel_from_rule(cfg, window, coords, *_rule_sobol(scales, m - 1, seed + 1))
        pts, wts = _rule_sobol(scales, m, seed)
        method = "sobol"
    Kmat, C = _kernel_from_rule(cfg, window, coords, pts, wts)
    err = float(np.max(np.abs(Kmat - coarse[0])))
    return Kernel(Kmat, C, err, method, len(pts))


def _gl_nodes(t: float, rate: float, tol: float = 1e-14, n_max: int = 40):
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
    """The solved limit for one (chain, target, model, L). Build with :func:`solve_limit`."""

    cfg: RNNConfig
    window: WindowChain
    kernel: Kernel
    f: np.ndarray  # (H,) target on histories
    memory_bound: float  # rho^L

    # --- factorisations, each computed once --------------------------------
    @cached_property
    def _eig(self):
        sq = np.sqrt(self.window.pi)
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
        lam, Q, sq = self._eig
        B = Q * sq[:, None]
        return B.T @ self.kernel.C0 @ B

    @cached_property
    def _Z(self):
        return self.window.fundamental

    @property
    def eigenvalues(self) -> np.ndarray:
        """Spectrum of ``Pi^{1/2} K Pi^{1/2}`` (the limit's relaxation rates / alpha)."""
        return self._eig[0]

    # --- section 4.3 --------------------------------------------------------
    def residual(self, times) -> np.ndarray:
        """``r_t = f - h_t`` on all histories, ``(n_t, H)``."""
        lam, Q, sq = self._eig
        t = np.atleast_1d(np.asarray(times, dtype=float))
        decay = np.exp(-self.cfg.alpha * np.outer(t, lam))  # (n_t, H)
        return ((decay * self._coef_f) @ Q.T) / sq

    def h(self, times) -> np.ndarray:
        """``h_t`` on all histories, ``(n_t, H)``."""
        return self.f - self.residual(times)

    # --- section 5 ----------------------------------------------------------
    def fluctuation_variances(self, times, functionals) -> dict[str, np.ndarray]:
        """``l^T V_t l'`` for the Poisson and i.i.d. data terms.

        ``functionals`` is ``(P, H)``; returns ``{"poisson": (n_t, P, P), "iid": (n_t, P, P)}``
        (divide by ``N`` for the finite-N prediction).
        """
        Lmat = np.atleast_2d(np.asarray(functionals, dtype=float))
        lam, Q, sq = self._eig
        alpha = self.cfg.alpha
        pi = self.window.pi
        Z = self._Z
        G = Q / sq[:, None]  # Pi^{-1/2} Q
        Acoef = Lmat @ G  # rows: Q^T Pi^{-1/2} l
        noise2 = self.cfg.noise_std**2
        rate = 4 * alpha * (lam.max() if lam.size else 0.0)
        t_all = np.atleast_1d(np.asarray(times, dtype=float))
        P = Lmat.shape[0]
        out_p = np.zeros((len(t_all), P, P))
        out_i = np.zeros((len(t_all), P, P))
        for it, t in enumerate(t_all):
            nodes, wts = _gl_nodes(t, rate)
            if len(nodes) == 0:
                continue
            r = self.residual(nodes)  # (n_u, H)
            tau = t - nodes
            # y_{u,p} = Pi^{-1/2} Q (lambda e^{-alpha lambda tau} * a_p): K e^{A^T tau} l_p
            coef = (lam * np.exp(-alpha * np.outer(tau, lam)))[:, None, :] * Acoef[None]  # (n_u, P, H)
            Y = coef.reshape(-1, len(lam)) @ G.T  # (n_u P, H)
            v = Y.reshape(len(nodes), P, -1) * r[:, None, :]
            v = v - (v @ pi)[..., None]  # (I - 1 pi^T) v
            vw = v * pi  # Pi v
            Zv = (v.reshape(-1, len(pi)) @ Z.T).reshape(v.shape)  # Z v
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

    def init_variance(self, times, functionals) -> np.ndarray:
        """``l^T E_t C_0 E_t^T l'`` (multiply by ``N^{1-2beta}``), ``(n_t, P, P)``."""
        Lmat = np.atleast_2d(np.asarray(functionals, dtype=float))
        lam, Q, sq = self._eig
        Acoef = Lmat @ (Q / sq[:, None])
        Ct = self._C0_eig
        t = np.atleast_1d(np.asarray(times, dtype=float))
        B = np.exp(-self.cfg.alpha * np.outer(t, lam))[:, None, :] * Acoef[None]  # (n_t, P, H)
        return np.einsum("tph,hk,tqk->tpq", B, Ct, B)

    def covariance(self, times) -> np.ndarray:
        """Full Poisson ``V_t`` on all histories, ``(n_t, H, H)`` (small ``H`` only)."""
        return self.fluctuation_variances(times, np.eye(self.window.n_histories))["poisson"]


def solve_limit(cfg: RNNConfig, chain: MarkovChain, target: Target, L: int | None = None,
                tol: float = 1e-6, max_histories: int = 4096, resolution: int | None = None) -> Limit:
    """Window chain, kernel and target values for the limit problem."""
    if L is None:
        L, bound = window_length(cfg, chain, target.m, tol, max_histories)
    else:
        if L < target.m:
            raise ChainError(f"window length L = {L} is shorter than the target memory m = {target.m}")
        bound = cfg.rho**L
    win = window_chain(chain, L, max_histories=max(max_histories, 1))
    kern = ntk(cfg, win, resolution)
    f = target.on_windows(chain.inputs, win.histories)
    return Limit(cfg=cfg, window=win, kernel=kern, f=f, memory_bound=bound)
