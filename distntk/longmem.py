"""Long memory: the limit over the infinite past, estimated along simulated chains (docs/model.md#sampled).

The finite-N network trains on the whole data stream, so its memory state is the
fixed point over the *infinite* past (docs/model.md#memory).  The window solver of
:mod:`distntk.limit` replaces that past by a window of ``L`` states, with an
error of order ``rho^L``; when no affordable window meets the memory tolerance
(``rho`` near 1), this module estimates the training-side expectations over the
infinite past instead.  Evaluation stays on windows: probes and the risk are
defined on windows of the spec's ``L`` started from 0 (docs/model.md#probe), so they are
exact features.

Feature form (docs/model.md#features).  With the quadrature nodes, ``K(x, y) = phi(x).phi(y)``
and the limit is ``h_t(x) = phi(x).beta_t``, ``beta_t = G^+ (I - e^{-alpha t G}) b``,
``G = E[phi phi^T]``, ``b = E[phi f]`` over the stationary infinite past.  All of
it is computed in a ``k``-dimensional basis of node space, ``V = X_b^T U
Lambda^{-1/2}`` with ``X_b = Pi_b^{1/2} Phi_b`` on a *basis window* of length
``L_b`` and ``U, Lambda`` its top eigenpairs (directions with ``lambda <= 1e-12
lambda_max`` dropped); ``c(x) = V^T phi(x)`` are the coordinates of any feature
vector, window or infinite past.  The part of ``phi`` outside the basis is
measured along the paths (``K(x, x) - |c(x)|^2``) and reported as
``basis_residual`` (relative).  The same for the ``s`` features that carry
``C_0``, with coordinates ``c_s``.

Control variate in the window length.  Let ``L0 <= L_b`` and ``c0(x)`` the
coordinates of the ``L0``-window features of the same point.  Then, exactly::

    G = sum_z pi_L0(z) c0 c0^T  +  E[c c^T - c0 c0^T],   b = ... + E[(c - c0) f],
    D = E[c c_s^T] = ...                                   (the C_0 coupling)

The first terms are enumerated on the ``L0`` window chain; the second are path
averages over independent segments of a stationary chain, each started ``burn``
steps early from 0 (``burn >= L0`` and ``rho^burn <= 1e-14``, so the memory
recursion is exact after it).  The difference ``c - c0`` is of order
``E|b|^L0``, so its average has a far smaller variance than ``E[c c^T]`` itself.

Fluctuations.  ``l^T V_t l = int_0^t alpha^2 [AsyVar(z_{t,u}) + sigma_eps^2 v^T G v] du``
with ``v = e^{-alpha (t - u) G} gamma`` (``gamma = c(l)`` the functional's
coordinates) and ``z_{t,u}(x) = r_u(x) (c(x).v)``, ``r_u = f - c.beta_u``; the
integral over ``u`` is the composite Gauss-Legendre rule of
:func:`distntk.limit.gl_nodes`.  The asymptotic (Markov-chain CLT) variance
takes the same control variate: ``AsyVar(z) = AsyVar(z0) + [AsyVar(z) -
AsyVar(z0)]``, ``z0`` the same expression on ``c0``: the first exactly by the
window chain's Poisson equation, the second by lag sums ``C_0 + 2 sum_{j=1}^M C_j``
along the segments with ``M = L0 + log(1e-9) / log(max(|lambda_2|, rho))``
(both series decay at least that fast, so the truncation is negligible).  The
i.i.d. prediction keeps lag 0 only.  Initialisation (docs/model.md (6.7)):
``Var = |gamma_s - D^T M_t gamma|^2`` with ``M_t = G^+ (I - e^{-alpha t G})``.

Errors.  The Monte Carlo standard error of every output is the delete-one
jackknife over segments (the path corrections of phase 2 are linear in the
segments; their dependence on ``beta_u`` and ``v`` through the pooled estimate
is of second order in the correction).  The memory truncation is reported as
the measured correction: the outputs minus the same outputs at the ``L0``
window (path terms dropped), with their standard errors.

Shapes: ``k`` basis directions; probes ``(P, L)`` windows; times ``(n_t,)``;
outputs ``(n_t, P)`` and ``(n_t,)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _fast
from .chain import MarkovChain, WindowChain, window_chain
from .limit import E_C2, LimitConfig, feature_pass, gl_nodes, ntk_features
from .rnn import RNNConfig
from .target import Target

__all__ = ["SampledProblem", "SampledLimit", "burn_in", "sampled_problem", "sample_limit", "segment_stats",
           "solve_sampled"]

_RANK_RTOL = 1e-12  # basis directions kept: lambda > _RANK_RTOL * lambda_max
_KEEP_DIRECTIONS = 1 << 23  # doubles (64 MiB): up to this the basis directions travel with the problem


@dataclass(frozen=True, eq=False)
class SampledProblem:
    """Everything a path segment needs (small and picklable: it travels to Ray actors)."""

    cfg: RNNConfig
    chain: MarkovChain
    full: np.ndarray  # (Q, d + 2) quadrature nodes (w_1..w_d, a, b)
    wts: np.ndarray  # (Q,)
    basis: np.ndarray  # (H_b, L_b) sorted histories of the basis window
    basis_sq: np.ndarray  # (H_b,) sqrt(pi_b)
    A: np.ndarray  # (H_b, k) = U Lambda^{-1/2}: V = X_b^T A
    A_s: np.ndarray  # (H_b, k_s) the same for the s features (C_0)
    L0: int
    steps: int  # path steps per segment
    burn: int
    seed: int
    kernel_error: float
    kernel_method: str
    block: int = 256  # quadrature nodes per block (basis features of a block: at most 2^23 doubles)
    directions: tuple | None = None  # per block (V, V_s), kept when small (see sampled_problem)

    @property
    def k(self) -> int:
        return self.A.shape[1]


def _sorted_windows(windows: np.ndarray):
    w = np.ascontiguousarray(windows, dtype=np.int64)
    order = np.lexsort(w.T[::-1]) if len(w) else np.zeros(0, dtype=np.int64)
    return w[order], order


def _directions(pb: SampledProblem, run, lcp_b, sl):
    """The basis directions of node block ``sl``: ``V = X_b^T A`` (``((d + 3) q, k)``) and ``V_s`` (``(q, k_s)``)."""
    X, s_b = feature_pass(run, pb.chain, pb.basis, lcp_b, pb.full, pb.wts, sl, pb.basis_sq)
    return X.T @ pb.A, (np.sqrt(E_C2) * s_b).T @ pb.A_s


def _coordinates(pb: SampledProblem, window_sets: Sequence[np.ndarray], path: np.ndarray | None = None):
    """Coordinates ``(C, C_s)`` of the windows in each set, and of every step of ``path`` (after ``burn``).

    One pass over node blocks: per block the basis directions ``V = X_b^T A`` are
    formed from the basis window's features, and every feature block is
    projected on them.  For the path also ``sum K(x, x)`` and ``sum |c(x)|^2``
    (and the same for ``s``), for the basis residual.
    """
    cfg, chain = pb.cfg, pb.chain
    d = chain.dim
    run = _fast.memory_features_kernel(d, cfg.gradient == "rtrl", cfg.activation == "sigmoid")
    prun = _fast.path_jacobian_kernel(d, cfg.gradient == "rtrl", cfg.activation == "sigmoid")
    lcp_b = _fast.common_prefix(pb.basis)
    sets = []
    for w in window_sets:
        ws, order = _sorted_windows(w)
        zeros = np.zeros((len(ws), pb.k)), np.zeros((len(ws), pb.A_s.shape[1]))
        sets.append((ws, order, _fast.common_prefix(ws), *zeros))
    sq_ones = [np.ones(len(s[0])) for s in sets]
    n_path = 0 if path is None else len(path) - pb.burn
    c = np.zeros((max(n_path, 0), pb.k))
    cs = np.zeros((max(n_path, 0), pb.A_s.shape[1]))
    norms = np.zeros(4)  # sum K(x,x), sum |c|^2 (later), sum C_s(x,x), sum |c_s|^2
    rs = np.sqrt(E_C2)
    for ib, lo in enumerate(range(0, len(pb.full), pb.block)):
        sl = slice(lo, lo + pb.block)
        q = len(pb.full[sl])
        V, Vs = pb.directions[ib] if pb.directions is not None else _directions(pb, run, lcp_b, sl)
        for (ws, _order, lcp, C, Cs), ones in zip(sets, sq_ones, strict=True):
            if len(ws):
                Xw, sw = feature_pass(run, chain, ws, lcp, pb.full, pb.wts, sl, ones)
                C += Xw @ V
                Cs += (rs * sw) @ Vs
        if path is not None and n_path > 0:
            full = pb.full[sl]
            wv = np.ascontiguousarray(full[:, :d].T)
            a = np.ascontiguousarray(full[:, d])
            b = np.ascontiguousarray(full[:, d + 1])
            s0 = np.zeros(q)
            J0 = np.zeros((d + 2, q))
            sw8 = np.sqrt(pb.wts[sl])
            burn_s = np.empty((pb.burn, q))
            burn_J = np.empty((pb.burn, d + 2, q))
            prun(wv, a, b, chain.inputs, np.ascontiguousarray(path[: pb.burn]), s0, J0, burn_s, burn_J)
            piece = max(1, min(n_path, (1 << 23) // ((d + 3) * q)))
            for p0 in range(0, n_path, piece):
                seg = np.ascontiguousarray(path[pb.burn + p0 : pb.burn + p0 + piece])
                m = len(seg)
                S = np.empty((m, q))
                JJ = np.empty((m, d + 2, q))
                prun(wv, a, b, chain.inputs, seg, s0, J0, S, JJ)
                S *= sw8
                JJ *= rs * sw8
                F = np.hstack([S, JJ.reshape(m, -1)])
                c[p0 : p0 + m] += F @ V
                cs[p0 : p0 + m] += (rs * S) @ Vs
                norms[0] += float(np.einsum("ij,ij->", F, F))
                norms[2] += E_C2 * float(np.einsum("ij,ij->", S, S))
    out = []
    for _ws, order, _lcp, C, Cs in sets:
        C_out = np.empty_like(C)
        Cs_out = np.empty_like(Cs)
        C_out[order] = C
        Cs_out[order] = Cs
        out.append((C_out, Cs_out))
    if path is not None:
        norms[1] = float(np.einsum("ij,ij->", c, c))
        norms[3] = float(np.einsum("ij,ij->", cs, cs))
        return out, (c, cs, norms)
    return out


def segment_stats(pb: SampledProblem, index: int) -> dict:
    """One independent path segment: the states (the last ``L0 - 1`` of the burn-in first) and the
    infinite-past coordinates ``c, c_s`` at each of its ``steps`` steps.  Seeded by ``(seed, index)``."""
    rng = np.random.default_rng(np.random.SeedSequence([pb.seed, 0x10A6, int(index)]))
    path = pb.chain.simulate(pb.burn + pb.steps, rng)
    _, (c, cs, norms) = _coordinates(pb, [], path)
    return {"index": int(index), "states": path[pb.burn - pb.L0 + 1 :].astype(np.int8), "c": c, "cs": cs,
            "norms": norms}


def _second_eigenvalue(chain: MarkovChain) -> float:
    ev = np.sort(np.abs(np.linalg.eigvals(chain.P)))[::-1]
    return float(ev[1]) if len(ev) > 1 else 0.0


def burn_in(rho: float, L0: int) -> int:
    """Steps a segment starts early from zero memory: ``L0`` plus enough for ``rho^burn <= 1e-14``."""
    return L0 + (int(np.ceil(np.log(1e-14) / np.log(rho))) if rho > 0 else 1)


def sampled_problem(cfg: RNNConfig, chain: MarkovChain, L_b: int, L0: int, *, steps: int = 4096,
                    seed: int = 0, tol: float = 1e-6, resolution: int | None = None) -> SampledProblem:
    """Solve the basis window ``L_b`` in feature form and fix the segments' parameters."""
    if not 1 <= L0 <= L_b:
        raise ValueError(f"control-variate window L0 = {L0}; expected 1 <= L0 <= L_b = {L_b}")
    win = window_chain(chain, L_b, max_histories=1 << 20)
    fk = ntk_features(cfg, win, resolution, tol=tol)
    lam, U = fk.lam, fk.U
    keep = lam > _RANK_RTOL * lam.max()
    A = U[:, keep] / np.sqrt(lam[keep])
    ls, W = np.linalg.eigh(fk.C0_eig)
    keep_s = ls > _RANK_RTOL * max(ls.max(), 1e-300)
    A_s = (U @ W[:, keep_s]) / np.sqrt(ls[keep_s])
    burn = burn_in(cfg.rho, L0)
    pb = SampledProblem(cfg=cfg, chain=chain, full=fk.nodes, wts=fk.weights, basis=win.histories,
                        basis_sq=np.sqrt(win.pi), A=A, A_s=A_s, L0=int(L0), steps=int(steps), burn=burn,
                        seed=int(seed), kernel_error=fk.error, kernel_method=fk.method,
                        block=int(np.clip((1 << 23) // (win.n_histories * (chain.dim + 3)), 64, 4096)))
    if len(pb.wts) * ((chain.dim + 3) * pb.k + pb.A_s.shape[1]) <= _KEEP_DIRECTIONS:
        # small enough to travel with the problem: each segment then skips the basis features
        d = chain.dim
        run = _fast.memory_features_kernel(d, cfg.gradient == "rtrl", cfg.activation == "sigmoid")
        lcp_b = _fast.common_prefix(pb.basis)
        dirs = tuple(_directions(pb, run, lcp_b, slice(lo, lo + pb.block)) for lo in range(0, len(pb.wts), pb.block))
        pb = dataclasses.replace(pb, directions=dirs)
    return pb


def _lag_sums(y: np.ndarray, M: int):
    """Per segment (axis 0) and series (axis 2): lag-0 covariance ``C_0`` and ``C_0 + 2 sum_{j=1}^M C_j``
    with ``C_j`` the mean of the ``n - j`` products ``y_k y_{k+j}`` (by FFT, zero-padded: no wrap-around)."""
    n = y.shape[1]
    F = np.fft.rfft(y, n=2 * n, axis=1)
    ac = np.fft.irfft(F * np.conj(F), n=2 * n, axis=1)[:, : M + 1] / (n - np.arange(M + 1))[None, :, None]
    return ac[:, 0], ac[:, 0] + 2.0 * ac[:, 1:].sum(axis=1)


def _funcs(G: np.ndarray):
    g, W = np.linalg.eigh(0.5 * (G + G.T))
    return np.clip(g, 0.0, None), W


def _grow(alpha: float, t: float, g: np.ndarray) -> np.ndarray:
    """``(1 - e^{-alpha t g}) / g`` (``alpha t`` at ``g = 0``)."""
    x = alpha * t * g
    out = np.full_like(g, alpha * t)
    nz = x > 1e-12
    out[nz] = -np.expm1(-x[nz]) / g[nz]
    return out


@dataclass(eq=False)
class SampledLimit:
    """The infinite-past limit from path segments. Build with :func:`solve_sampled`."""

    problem: SampledProblem
    target: Target
    W0: WindowChain
    C0: np.ndarray  # (H0, k)
    Cs0: np.ndarray  # (H0, k_s)
    f0: np.ndarray  # (H0,)
    rows: np.ndarray  # (n_seg, n) L0-window row of each path step
    c: np.ndarray  # (n_seg, n, k)
    cs: np.ndarray  # (n_seg, n, k_s)
    norms: np.ndarray  # (4,) summed over segments
    seconds: float = 0.0
    _cache: dict = field(default_factory=dict)

    @property
    def n_segments(self) -> int:
        return self.c.shape[0]

    @property
    def path_steps(self) -> int:
        return self.c.shape[0] * self.c.shape[1]

    @property
    def basis_residual(self) -> float:
        """Relative feature mass outside the basis along the paths (``phi`` and ``s`` features, the larger)."""
        n = self.norms
        return float(max((n[0] - n[1]) / n[0], (n[2] - n[3]) / max(n[2], 1e-300)))

    @property
    def lag_window(self) -> int:
        lam2 = _second_eigenvalue(self.problem.chain)
        r = max(lam2, self.problem.cfg.rho, 1e-3)
        return int(min(self.problem.L0 + np.ceil(np.log(1e-9) / np.log(r)), self.c.shape[1] // 8))

    # --- phase 1: G, b, D per segment ---------------------------------------------------------
    def _phase1_segments(self):
        if "p1" not in self._cache:
            c0 = self.C0[self.rows]  # (n_seg, n, k)
            cs0 = self.Cs0[self.rows]
            f = self.f0[self.rows]
            n = self.c.shape[1]
            dG = (np.einsum("snk,snl->skl", self.c, self.c) - np.einsum("snk,snl->skl", c0, c0)) / n
            db = np.einsum("snk,sn->sk", self.c - c0, f) / n
            dD = (np.einsum("snk,snl->skl", self.c, self.cs) - np.einsum("snk,snl->skl", c0, cs0)) / n
            pi0 = self.W0.pi
            G0 = (self.C0 * pi0[:, None]).T @ self.C0
            b0 = self.C0.T @ (pi0 * self.f0)
            D0 = (self.C0 * pi0[:, None]).T @ self.Cs0
            self._cache["p1"] = (G0, b0, D0, dG, db, dD)
        return self._cache["p1"]

    def _stats(self, weights: np.ndarray | None):
        """``(G, b, D)``: the ``L0`` window plus the weighted mean of the segments' corrections
        (``weights`` ``None``: no path terms, the ``L0`` window alone)."""
        G0, b0, D0, dG, db, dD = self._phase1_segments()
        if weights is None:
            return G0, b0, D0
        w = weights / weights.sum()
        return (G0 + np.einsum("s,skl->kl", w, dG), b0 + w @ db, D0 + np.einsum("s,skl->kl", w, dD))

    # --- outputs ------------------------------------------------------------------------------
    def _outputs(self, stats, times, gam, gam_s, evalw, corr):
        """All predictions for one ``(G, b, D)``; ``corr[it]`` are the phase-2 path corrections
        ``(pois, iid)`` on that time's nodes (``(n_u, P + 1)`` each), or ``None``."""
        G, b, D = stats
        cfg = self.problem.cfg
        alpha = cfg.alpha
        noise2 = cfg.noise_std**2
        g, W = _funcs(G)
        bW = W.T @ b
        C_L, Cs_L, f_L, pi_L = evalw
        pi0 = self.W0.pi
        out = {k: [] for k in ("h", "risk_h", "nvar_poisson", "nvar_iid", "var_init_coef", "nvar_risk_poisson",
                               "nvar_risk_iid", "var_risk_init_coef")}
        nodes_all = self._nodes(times)
        for it, t in enumerate(times):
            beta_t = W @ (_grow(alpha, t, g) * bW)
            r_L = f_L - C_L @ beta_t
            ell = -pi_L * r_L
            Gam = np.vstack([gam, ell @ C_L])  # (P + 1, k)
            Gam_s = np.vstack([gam_s, ell @ Cs_L])
            out["h"].append(gam @ beta_t)
            out["risk_h"].append(0.5 * float(pi_L @ r_L**2))
            # initialisation: |gamma_s - D^T M_t gamma|^2
            Mg = W @ (_grow(alpha, t, g)[:, None] * (W.T @ Gam.T))  # (k, P + 1)
            init = np.sum((Gam_s - (D.T @ Mg).T) ** 2, axis=1)
            out["var_init_coef"].append(init[:-1])
            out["var_risk_init_coef"].append(init[-1])
            nodes, wts = nodes_all[it]
            pois = np.zeros(len(Gam))
            iid = np.zeros(len(Gam))
            for iu, (u, wu) in enumerate(zip(nodes, wts, strict=True)):
                beta_u = W @ (_grow(alpha, u, g) * bW)
                v = W @ (np.exp(-alpha * (t - u) * g)[:, None] * (W.T @ Gam.T))  # (k, P + 1)
                r0 = self.f0 - self.C0 @ beta_u
                z = r0[:, None] * (self.C0 @ v)  # (H0, P + 1)
                z = z - pi0 @ z
                Zz = self.W0.poisson_lag(z)
                iid_e = pi0 @ (z * z)
                pois_e = 2 * (pi0 @ (z * Zz)) - iid_e
                extra = noise2 * np.einsum("kp,kl,lp->p", v, G, v)
                cp, ci = (0.0, 0.0) if corr is None else (corr[it][0][iu], corr[it][1][iu])
                pois += alpha**2 * wu * (pois_e + cp + extra)
                iid += alpha**2 * wu * (iid_e + ci + extra)
            out["nvar_poisson"].append(pois[:-1])
            out["nvar_iid"].append(iid[:-1])
            out["nvar_risk_poisson"].append(pois[-1])
            out["nvar_risk_iid"].append(iid[-1])
        return {k: np.asarray(v) for k, v in out.items()}

    def _nodes(self, times):
        key = ("nodes", tuple(times))
        if key not in self._cache:
            G, _, _ = self._stats(np.ones(self.n_segments))
            rate = 4.4 * self.problem.cfg.alpha * max(float(np.linalg.eigvalsh(G).max()), 0.0)  # 10 % margin
            self._cache[key] = [gl_nodes(t, rate) for t in times]
        return self._cache[key]

    def _corrections(self, stats, times, gam, evalw):
        """Phase 2: per segment, lag-sum asymptotic variances of ``z`` minus those of ``z0`` along the path,
        on each time's nodes, with the directions of the pooled ``stats``.  Returns per time
        ``(pois (n_seg, n_u, P + 1), iid (n_seg, n_u, P + 1))``."""
        G, b, _ = stats
        alpha = self.problem.cfg.alpha
        g, W = _funcs(G)
        bW = W.T @ b
        C_L, _Cs_L, f_L, pi_L = evalw
        c0 = self.C0[self.rows]
        f = self.f0[self.rows]
        M = self.lag_window
        res = []
        for it, t in enumerate(times):
            beta_t = W @ (_grow(alpha, t, g) * bW)
            ell = -pi_L * (f_L - C_L @ beta_t)
            Gam = np.vstack([gam, ell @ C_L])
            nodes, _ = self._nodes(times)[it]
            pois = np.zeros((self.n_segments, len(nodes), len(Gam)))
            iid = np.zeros_like(pois)
            for iu, u in enumerate(nodes):
                beta_u = W @ (_grow(alpha, u, g) * bW)
                v = W @ (np.exp(-alpha * (t - u) * g)[:, None] * (W.T @ Gam.T))
                z = (f - self.c @ beta_u)[..., None] * (self.c @ v)  # (n_seg, n, P + 1)
                z0 = (f - c0 @ beta_u)[..., None] * (c0 @ v)
                for sgn, y in ((1.0, z), (-1.0, z0)):
                    a0, asy = _lag_sums(y - y.mean(axis=(0, 1)), M)
                    pois[:, iu] += sgn * asy
                    iid[:, iu] += sgn * a0
            res.append((pois, iid))
        return res

    def evaluation(self, probes: np.ndarray, L: int):
        """Coordinates of the probe windows ``(P, L)`` and of all ``L`` windows (the risk); they depend on
        the problem's basis only, so one evaluation serves every seed of a problem."""
        winL = window_chain(self.problem.chain, L, max_histories=1 << 20)
        probes = np.asarray(probes)
        (C_p, Cs_p), (C_L, Cs_L) = _coordinates(self.problem, [probes, winL.histories])
        f_L = self.target.on_windows(self.problem.chain.inputs, winL.histories)
        return probes, winL, C_p, Cs_p, (C_L, Cs_L, f_L, winL.pi)

    def predict(self, times: Sequence[float], probes: np.ndarray, L: int, evaluation=None) -> dict:
        """Predictions on the probe windows ``(P, L)`` and the risk over all ``L`` windows, each with its
        jackknife standard error (``<name>_se``) and the measured memory correction (``<name>_corr``:
        the prediction minus the ``L0``-window one).  ``evaluation``: :meth:`evaluation`'s result, reused."""
        times = [float(t) for t in times]
        probes, winL, C_p, Cs_p, evalw = evaluation or self.evaluation(probes, L)
        n_seg = self.n_segments
        full = self._stats(np.ones(n_seg))
        corr_seg = self._corrections(full, times, C_p, evalw)

        def corr_mean(w):
            return [(np.einsum("s,sup->up", w / w.sum(), p), np.einsum("s,sup->up", w / w.sum(), i))
                    for p, i in corr_seg]

        est = self._outputs(full, times, C_p, Cs_p, evalw, corr_mean(np.ones(n_seg)))
        window_only = self._outputs(self._stats(None), times, C_p, Cs_p, evalw, None)
        reps = []
        for s in range(n_seg):
            w = np.ones(n_seg)
            w[s] = 0.0
            reps.append(self._outputs(self._stats(w), times, C_p, Cs_p, evalw, corr_mean(w)))
        out = {}
        for name, val in est.items():
            R = np.stack([r[name] for r in reps])
            se = np.sqrt((n_seg - 1) / n_seg * np.sum((R - R.mean(axis=0)) ** 2, axis=0))
            out[name] = val
            out[name + "_se"] = se
            out[name + "_corr"] = val - window_only[name]
        out["f"] = self.target.on_windows(self.problem.chain.inputs, probes)
        out["pi_probe"] = winL.pi[winL.index(probes)]
        return out


def solve_sampled(cfg: RNNConfig, chain: MarkovChain, target: Target, limit: LimitConfig, *, seed: int = 0,
                  map_segments: Callable[[Callable, SampledProblem, list[int]], list[dict]] | None = None,
                  ) -> SampledLimit:
    """The infinite-past limit of the spec's ``[limit]`` table: basis window ``limit.basis_L``, control
    variate at ``limit.l0`` (default: the basis window), ``limit.segments`` independent paths of
    ``limit.segment_steps`` steps, the kernel to ``limit.tol`` (or ``limit.resolution``).
    ``map_segments(fn, problem, indices)`` computes ``fn(problem, i)`` for each index (in any order,
    anywhere: the driver passes Ray actors); default: in this process."""
    L_b = limit.basis_L
    if L_b is None:
        raise ValueError("limit.basis_L is not set; expected the sampled limit's basis window")
    L0 = L_b if limit.l0 is None else limit.l0
    if L0 < target.m:
        raise ValueError(f"control-variate window L0 = {L0} is shorter than the target memory m = {target.m}")
    t0 = time.perf_counter()
    pb = sampled_problem(cfg, chain, L_b, L0, steps=limit.segment_steps, seed=seed, tol=limit.tol,
                         resolution=limit.resolution)
    return sample_limit(pb, target, limit.segments, map_segments=map_segments, t0=t0)


def sample_limit(pb: SampledProblem, target: Target, segments: int,
                 map_segments: Callable[[Callable, SampledProblem, list[int]], list[dict]] | None = None,
                 t0: float | None = None) -> SampledLimit:
    """The path part of :func:`solve_sampled` for a given problem (a new ``seed``, ``steps`` or ``L0``:
    ``dataclasses.replace(problem, ...)`` reuses its basis)."""
    t0 = time.perf_counter() if t0 is None else t0
    if segments < 2:
        raise ValueError(f"segments = {segments}; expected at least 2 (the standard error is a jackknife)")
    if pb.L0 < target.m:
        raise ValueError(f"control-variate window L0 = {pb.L0} is shorter than the target memory m = {target.m}")
    chain, L0 = pb.chain, pb.L0
    idx = list(range(segments))
    if map_segments is None:
        segs = [segment_stats(pb, i) for i in idx]
    else:
        segs = list(map_segments(segment_stats, pb, idx))
    segs.sort(key=lambda r: r["index"])
    if [r["index"] for r in segs] != idx:
        raise RuntimeError("path segments missing or duplicated")
    W0 = window_chain(chain, L0, max_histories=1 << 20)
    [(C0, Cs0)] = _coordinates(pb, [W0.histories])
    f0 = target.on_windows(chain.inputs, W0.histories)
    states = np.stack([r["states"].astype(np.int64) for r in segs])  # (n_seg, steps + L0 - 1)
    wins = np.lib.stride_tricks.sliding_window_view(states, L0, axis=1)  # (n_seg, steps, L0)
    rows = W0.index(wins.reshape(-1, L0)).reshape(segments, -1)
    return SampledLimit(problem=pb, target=target, W0=W0, C0=C0, Cs0=Cs0, f0=f0, rows=rows,
                        c=np.stack([r["c"] for r in segs]), cs=np.stack([r["cs"] for r in segs]),
                        norms=np.sum([r["norms"] for r in segs], axis=0), seconds=time.perf_counter() - t0)
