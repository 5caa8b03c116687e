"""Continuous-state data: the Gaussian AR(1) chain and its kernel limit (docs/model.md#ar1).

Data.  ``X_k`` in ``R^d`` follows ``X_{k+1} = phi X_k + sigma eps_k`` with
``eps_k ~ N(0, I)`` i.i.d., ``phi`` diagonal with ``|phi_i| < 1`` and
``sigma_i > 0``; the stationary law is ``N(0, diag(s^2))``, ``s_i = sigma_i /
sqrt(1 - phi_i^2)``.  A window ``Z_k = (X_{k-L+1}, ..., X_k)`` (oldest first) is
jointly Gaussian, coordinate by coordinate ``Cov(X_i, X_j) = s^2 phi^{|i-j|}``,
and the windows form a Markov chain (``Z_{k+1}`` is ``Z_k`` shifted plus one new
AR(1) step) that is geometrically ergodic with rate ``max_i |phi_i|``.  Paths
start from the stationary law (``X_0 = s * N(0, I)``), so there is no burn-in
bias: :meth:`AR1.simulate` draws ``n`` standard normal vectors from the given
generator, the first for ``X_0``, and runs the recursion.

Limit.  Nothing in docs/model.md sections 4-6 needs a finite state space
except the sums over windows: every ``sum_z pi_L(z) (...)`` becomes the
stationary expectation ``E_pi[(...)]`` and ``K Pi`` the integral operator
``g -> E_pi[K(., Z) g(Z)]``.  With the quadrature nodes the kernel is
``K(z, z') = Phi(z).Phi(z')`` exactly (docs/model.md#features; the features of a
value window are those of the window solver with the state inputs replaced by
the values), and in a ``k``-dimensional basis ``c(z) = Phi(z) V`` of feature
space the limit is

    G = E_pi[c c^T],  b = E_pi[c f],  D = E_pi[c c_s^T],  b_s = E_pi[c_s f]
    h_t(z) = c(z).beta_t,  beta_t = M_t b,  M_t = G^+ (I - e^{-alpha t G})      (7.7)

(``c_s`` the coordinates of the ``s`` features that carry ``C_0``).  The
fluctuations of a functional with coordinates ``gamma`` (a probe ``z``:
``gamma = c(z)``) are

    l^T V_t l = int_0^t alpha^2 [AsyVar(r_u(Z) c(Z).v) + sigma_eps^2 v^T G v] du,
    v = e^{-alpha (t - u) G} gamma,  r_u = f - c.beta_u                          (7.3)

with ``AsyVar(y) = sum_{j in Z} Cov_pi(y(Z_0), y(Z_j))`` (the i.i.d. prediction
keeps ``j = 0``) and the initialisation variance ``|gamma_s - D^T M_t gamma|^2``.
The risk ``R_t = E_pi[r_t^2] / 2`` is the functional ``gamma = -(b - G beta_t)``,
``gamma_s = -(b_s - D^T beta_t)``.

Estimation, as in :mod:`distntk.longmem` (docs/model.md#sampled) without the
enumerated window: (i) the basis: ``n_basis`` stationary windows drawn
independently (each from the exact Gaussian window law), features ``X``
(``n_basis x F``) scaled by ``n_basis^{-1/2}``, the eigenpairs ``U, Lambda`` of
``X X^T`` with ``lambda > 1e-12 lambda_max``, ``V = X^T U Lambda^{-1/2}``
(orthonormal columns: the principal directions of the empirical ``G`` in
feature space); the same for the ``s`` features.  The part of ``Phi`` outside
the basis is measured along the paths and reported as ``basis_residual``
(relative).  (ii) ``segments`` independent stationary paths of ``steps``
windows (seeded by ``SeedSequence([seed, 0xA121, i])``); ``G, b, D, b_s`` are
path averages, ``AsyVar`` the lag sum ``C_0 + 2 sum_{j=1}^M C_j`` per segment with
``M = L + log(1e-9) / log(max(max|phi|, rho))`` (the window chain mixes at rate
``max|phi|`` after ``L`` steps; the fluctuation integrand inherits it), centred
with the pooled mean.  The finite-window control variate of the sampled limit
has no analogue (there is no enumerable window); the estimates are plain path
averages.  (iii) The standard error of every output is the delete-one jackknife
over segments, every output recomputed without the segment.  The memory
truncation is that of the window solver: windows of ``L`` values started from
the zero memory state, error at most ``rho^L``.

Simulation.  :func:`distntk.rnn.run_replicas` reads its data from any chain
that has a ``stream`` method; :class:`AR1Inputs` is such a chain for the AR(1):
its ``inputs`` are the values of the probe windows (and of the risk windows),
flattened, so that probes and risk windows are index windows into them as for a
finite chain, and its stream draws the path from ``PCG64(data_seed)``
(``n_burn + n_train`` standard normal vectors, :meth:`AR1.simulate`, started
stationary) and the observation noise from a second copy of the generator
advanced past them, piece by piece with the same bits whatever the piece
sizes.  The stationary risk of the replicas is the average over
``risk_windows`` windows drawn once from the window law (7.6) (seeded by the
experiment's seed): a Monte Carlo version of docs/model.md (2.9).

Validation (tests/test_ar1.py): the Rouwenhorst chain of
:func:`distntk.chain.rouwenhorst` with ``n`` states, solved exactly by
:func:`distntk.limit.solve_limit` with the same quadrature rule, approaches
these predictions as ``n`` grows.

Shapes: probes ``(P, L, d)`` value windows (``(P, L)`` accepted for ``d = 1``);
times ``(n_t,)``; outputs ``(n_t, P)`` and ``(n_t,)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.signal

from . import _fast
from .chain import ChainError, MarkovChain, markov_chain, rouwenhorst, window_chain
from .limit import E_C2, LimitConfig, feature_pass, gl_nodes, quadrature_rule
from .rnn import RNNConfig
from .target import Target

__all__ = ["AR1", "AR1Inputs", "AR1Limit", "ar1", "ar1_inputs", "ar1_limit", "default_probes", "probe_label",
           "probe_labels", "reference_chain"]

_RANK_RTOL = 1e-12
_ROW_DOUBLES = 1 << 22  # feature rows x columns per block


@dataclass(frozen=True, eq=False)
class AR1:
    """A validated stationary Gaussian AR(1) with diagonal ``phi``. Build it with :func:`ar1`."""

    phi: np.ndarray  # (d,)
    sigma: np.ndarray  # (d,)

    @property
    def dim(self) -> int:
        return len(self.phi)

    @property
    def sd(self) -> np.ndarray:
        """Stationary standard deviations ``sigma / sqrt(1 - phi^2)``, ``(d,)``."""
        return self.sigma / np.sqrt(1.0 - self.phi**2)

    @property
    def mixing(self) -> float:
        return float(np.max(np.abs(self.phi)))

    def simulate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Stationary path ``X_0..X_{n-1}``, ``(n, d)``: ``n`` standard normal vectors from ``rng``."""
        e = rng.standard_normal((n, self.dim))
        if n == 0:
            return e
        e[0] *= self.sd
        e[1:] *= self.sigma
        out = np.empty_like(e)
        for i in range(self.dim):
            out[:, i] = scipy.signal.lfilter([1.0], [1.0, -self.phi[i]], e[:, i])
        return out

    def window_cov(self, L: int) -> np.ndarray:
        """Covariance of the flattened window ``(X_1, ..., X_L)`` (time-major), ``(L d, L d)``."""
        lag = np.abs(np.subtract.outer(np.arange(L), np.arange(L)))
        blocks = [self.sd[i] ** 2 * self.phi[i] ** lag for i in range(self.dim)]
        C = np.zeros((L, self.dim, L, self.dim))
        for i, B in enumerate(blocks):
            C[:, i, :, i] = B
        return C.reshape(L * self.dim, L * self.dim)

    def sample_windows(self, n: int, L: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent stationary windows ``(n, L, d)`` from the exact Gaussian window law."""
        chol = np.linalg.cholesky(self.window_cov(L))
        return (rng.standard_normal((n, L * self.dim)) @ chol.T).reshape(n, L, self.dim)


def ar1(phi, sigma) -> AR1:
    """Validate ``phi`` and ``sigma`` (scalars, or equal-length lists for ``d > 1``); :class:`ChainError` if bad."""
    p = np.atleast_1d(np.asarray(phi, dtype=float))
    s = np.atleast_1d(np.asarray(sigma, dtype=float))
    if p.ndim != 1 or s.ndim != 1 or len(p) == 0:
        raise ChainError("ar1: expected phi and sigma as numbers or lists of numbers")
    if len(p) != len(s):
        raise ChainError(f"ar1: phi has {len(p)} entries and sigma {len(s)}; expected the same length d")
    if not np.all(np.isfinite(p)) or np.any(np.abs(p) >= 1):
        raise ChainError(f"ar1: phi is {p.tolist()}; expected |phi| < 1 (a stationary chain)")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ChainError(f"ar1: sigma is {s.tolist()}; expected sigma > 0")
    for a in (p, s):
        a.setflags(write=False)
    return AR1(phi=p, sigma=s)


def reference_chain(ar: AR1, n: int) -> MarkovChain:
    """The product of the per-coordinate ``n``-state Rouwenhorst chains (``n^d`` states; coordinates independent)."""
    parts = [rouwenhorst(n, float(ar.phi[i]), float(ar.sigma[i])) for i in range(ar.dim)]
    P, X = parts[0].P, parts[0].inputs
    for c in parts[1:]:
        P = np.kron(P, c.P)
        X = np.concatenate([np.repeat(X, c.n_states, axis=0), np.tile(c.inputs, (len(X), 1))], axis=1)
    return markov_chain(P, X)


def default_probes(ar: AR1, L: int) -> np.ndarray:
    """The all-zero window and the constant windows at ``+-1`` stationary sd, ``(3, L, d)``."""
    one = np.broadcast_to(ar.sd, (L, ar.dim))
    return np.stack([np.zeros((L, ar.dim)), one, -one]).astype(float)


def probe_label(window: np.ndarray) -> str:
    """A readable label of a value window: values with 4 significant digits, ``,`` between steps (``;``
    between coordinates); distinct windows that print the same get their index appended by the caller."""
    w = np.asarray(window, dtype=float).reshape(len(window), -1)
    return ",".join(";".join(f"{v:.4g}" for v in x) for x in w)


def probe_labels(windows) -> list[str]:
    """The labels of value windows ``(P, L, d)`` (``(P, L)`` for ``d = 1``): :func:`probe_label` of each, with
    ``#<index>`` appended to windows whose labels coincide (distinct windows that print the same)."""
    labels = [probe_label(w) for w in windows]
    return [lab if labels.count(lab) == 1 else f"{lab}#{i}" for i, lab in enumerate(labels)]


class _ValueChain:
    """The attributes of a chain that :func:`distntk.limit.feature_pass` reads, for value windows."""

    def __init__(self, values: np.ndarray):
        self.inputs = np.ascontiguousarray(values, dtype=float)
        self.dim = values.shape[1]


@dataclass(eq=False)
class AR1Limit:
    """The AR(1) kernel limit from path segments. Build with :func:`ar1_limit`."""

    cfg: RNNConfig
    ar: AR1
    target: Target
    L: int
    full: np.ndarray  # (Q, d + 2) nodes
    wts: np.ndarray  # (Q,)
    V: np.ndarray  # (F, k)
    V_s: np.ndarray  # (q, k_s)
    c: np.ndarray  # (n_seg, steps, k)
    cs: np.ndarray  # (n_seg, steps, k_s)
    f: np.ndarray  # (n_seg, steps)
    basis_residual: float
    kernel_error: float
    kernel_method: str
    seconds: float

    @property
    def n_segments(self) -> int:
        return self.c.shape[0]

    @property
    def lag_window(self) -> int:
        r = max(self.ar.mixing, self.cfg.rho, 1e-3)
        return int(self.L + np.ceil(np.log(1e-9) / np.log(r)))

    def coordinates(self, windows: np.ndarray):
        """``(c, c_s)`` of value windows ``(n, L, d)``."""
        return _coords(self.cfg, self.full, self.wts, self.V, self.V_s, windows)

    def _stats(self, w):
        w = w / w.sum()
        n = self.c.shape[1]
        G = np.einsum("s,snk,snl->kl", w, self.c, self.c) / n
        b = np.einsum("s,snk,sn->k", w, self.c, self.f) / n
        D = np.einsum("s,snk,snl->kl", w, self.c, self.cs) / n
        b_s = np.einsum("s,snk,sn->k", w, self.cs, self.f) / n
        g, W = np.linalg.eigh(0.5 * (G + G.T))
        return G, b, D, b_s, np.clip(g, 0.0, None), W

    def _M(self, g, W, t):
        x = self.cfg.alpha * t * g
        grow = np.full_like(g, self.cfg.alpha * t)
        nz = x > 1e-12
        grow[nz] = -np.expm1(-x[nz]) / g[nz]
        return (W * grow) @ W.T

    def _asyvar(self, w, gam_u, beta_u):
        """Per node ``u``: (lag-0, lag-sum) of ``y = r_u(Z) c(Z).v_u`` pooled over segments with weights ``w``."""
        M = min(self.lag_window, self.c.shape[1] - 1)
        r = self.f[:, :, None] - self.c @ beta_u.T  # (s, n, u)
        y = r * (self.c @ gam_u.T)
        wn = w / w.sum()
        y = y - np.einsum("s,snu->u", wn, y) / y.shape[1]
        lag0 = np.einsum("s,snu->u", wn, y * y) / y.shape[1]
        tot = lag0.copy()
        for j in range(1, M + 1):
            tot += 2.0 * np.einsum("s,snu->u", wn, y[:, :-j] * y[:, j:]) / (y.shape[1] - j)
        return lag0, tot

    def _outputs(self, w, times, C_p, Cs_p):
        G, b, D, b_s, g, W = self._stats(w)
        alpha, noise2 = self.cfg.alpha, self.cfg.noise_std**2
        rate = 4 * alpha * (g.max() if g.size else 0.0)
        out = {k: np.zeros((len(times), len(C_p))) for k in ("h", "nvar_poisson", "nvar_iid", "var_init_coef")}
        for k in ("risk_h", "nvar_risk_poisson", "nvar_risk_iid", "var_risk_init_coef"):
            out[k] = np.zeros(len(times))
        for it, t in enumerate(times):
            Mt = self._M(g, W, t)
            beta = Mt @ b
            out["h"][it] = C_p @ beta
            out["risk_h"][it] = 0.5 * np.einsum("s,sn->", w / w.sum(), (self.f - self.c @ beta) ** 2) / self.c.shape[1]
            gam_r, gam_rs = -(b - G @ beta), -(b_s - D.T @ beta)
            gams = np.vstack([C_p, gam_r])
            gams_s = np.vstack([Cs_p, gam_rs])
            init = np.sum((gams_s - gams @ Mt @ D) ** 2, axis=1)
            nodes, nw = gl_nodes(t, rate)
            pois = np.zeros(len(gams))
            iid = np.zeros(len(gams))
            if len(nodes):
                betas = np.stack([self._M(g, W, u) @ b for u in nodes])  # (u, k)
                for p, gam in enumerate(gams):
                    E = (W * np.exp(-alpha * np.outer(t - nodes, g))[:, None, :])  # (u, k, k)
                    v = np.einsum("ukl,ml,m->uk", E, W, gam)  # e^{-alpha (t-u) G} gam
                    lag0, tot = self._asyvar(w, v, betas)
                    extra = noise2 * np.einsum("uk,kl,ul->u", v, G, v)
                    pois[p] = alpha**2 * np.sum(nw * (tot + extra))
                    iid[p] = alpha**2 * np.sum(nw * (lag0 + extra))
            out["nvar_poisson"][it], out["nvar_risk_poisson"][it] = pois[:-1], pois[-1]
            out["nvar_iid"][it], out["nvar_risk_iid"][it] = iid[:-1], iid[-1]
            out["var_init_coef"][it], out["var_risk_init_coef"][it] = init[:-1], init[-1]
        return out

    def predict(self, times: Sequence[float], probes: np.ndarray) -> dict:
        """Predictions on the value-window probes with delete-one jackknife standard errors ``<name>_se``."""
        times = [float(t) for t in times]
        probes = _as_windows(probes, self.L, self.ar.dim)
        C_p, Cs_p = self.coordinates(probes)
        n_seg = self.n_segments
        est = self._outputs(np.ones(n_seg), times, C_p, Cs_p)
        reps = []
        for s in range(n_seg):
            w = np.ones(n_seg)
            w[s] = 0.0
            reps.append(self._outputs(w, times, C_p, Cs_p))
        out = {}
        for name, val in est.items():
            R = np.stack([r[name] for r in reps])
            out[name] = val
            out[name + "_se"] = np.sqrt((n_seg - 1) / n_seg * np.sum((R - R.mean(axis=0)) ** 2, axis=0))
        out["f"] = self.target(probes[:, -self.target.m:])
        return out


def _as_windows(probes, L: int, d: int) -> np.ndarray:
    p = np.asarray(probes, dtype=float)
    if p.ndim == 2 and d == 1:
        p = p[:, :, None]
    if p.ndim != 3 or p.shape[1:] != (L, d):
        raise ValueError(f"probes have shape {np.shape(probes)}; expected (P, {L}, {d}) value windows")
    return p


def _feature_blocks(cfg, full, wts, windows):
    """``Phi`` of value windows ``(n, L, d)`` in row blocks: yields ``(lo, X)`` with ``X`` ``(rows, F)``."""
    n, L, d = windows.shape
    run = _fast.memory_features_kernel(d, cfg.gradient == "rtrl", cfg.activation == "sigmoid")
    F = (d + 3) * len(full)
    rows = max(1, _ROW_DOUBLES // F)
    for lo in range(0, n, rows):
        part = windows[lo:lo + rows]
        m = len(part)
        vc = _ValueChain(part.reshape(m * L, d))
        hist = np.arange(m * L, dtype=np.int64).reshape(m, L)
        X, _ = feature_pass(run, vc, hist, np.zeros(m, dtype=np.int64), full, wts, slice(None), np.ones(m))
        yield lo, X


def _coords(cfg, full, wts, V, V_s, windows, norms=False):
    n = len(windows)
    q = len(full)
    c, cs = np.zeros((n, V.shape[1])), np.zeros((n, V_s.shape[1]))
    tot = np.zeros(2)
    for lo, X in _feature_blocks(cfg, full, wts, windows):
        Xs = np.sqrt(E_C2) * X[:, :q]
        c[lo:lo + len(X)] = X @ V
        cs[lo:lo + len(X)] = Xs @ V_s
        tot += [np.sum(X * X), np.sum(Xs * Xs)]
    return (c, cs, tot) if norms else (c, cs)


def _basis(X):
    K = X @ X.T
    lam, U = np.linalg.eigh(0.5 * (K + K.T))
    keep = lam > _RANK_RTOL * max(lam.max(), 1e-300)
    return X.T @ (U[:, keep] / np.sqrt(lam[keep]))


def rule_window(L: int, d: int, states: int = 9) -> int:
    """The length of the windows the AR(1) quadrature rule is chosen on: ``L``, or the longest with at most
    2^16 windows of ``states`` values per coordinate (``states^(L d)``)."""
    n = 1
    while n < L and states ** ((n + 1) * d) <= 1 << 16:
        n += 1
    return n


def ar1_limit(cfg: RNNConfig, ar: AR1, target: Target, L: int, limit: LimitConfig | None = None, *,
              n_basis: int = 2048, seed: int = 0, rule_states: int = 9) -> AR1Limit:
    """The AR(1) limit (module docstring), with the spec's ``[limit]`` table: ``limit.segments`` path
    segments of ``limit.segment_steps`` steps, the kernel to ``limit.tol`` (or ``limit.resolution``).
    The quadrature rule is chosen (and its error measured) on the
    windows of :func:`reference_chain` with ``rule_states`` states per coordinate (they span
    ``+-sqrt(rule_states - 1)`` stationary sd), of length :func:`rule_window` (``L``, or the longest with
    at most 2^16 windows: the older values weigh like ``rho^k``); ``resolution`` fixes a tensor Gauss rule instead."""
    limit = LimitConfig() if limit is None else limit
    segments, steps = limit.segments, limit.segment_steps
    if L < target.m:
        raise ValueError(f"window length L = {L} is shorter than the target memory m = {target.m}")
    if segments < 2:
        raise ValueError(f"segments = {segments}; expected at least 2 (the standard error is a jackknife)")
    t0 = time.perf_counter()
    d = ar.dim
    rule = quadrature_rule(cfg, window_chain(reference_chain(ar, rule_states), rule_window(L, d, rule_states),
                                         max_histories=1 << 16),
                       limit.resolution, seed, limit.tol, 1 << 21, 64)
    full = np.zeros((len(rule.pts), d + 2))
    full[:, rule.coords] = rule.pts
    wts = np.asarray(rule.wts, dtype=float)
    q = len(full)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA121, 1 << 30]))
    Xb = np.concatenate([X for _, X in _feature_blocks(cfg, full, wts, ar.sample_windows(n_basis, L, rng))])
    Xb /= np.sqrt(n_basis)
    V = _basis(Xb)
    V_s = _basis(np.sqrt(E_C2) * Xb[:, :q])
    del Xb
    cs_, css_, fs_ = [], [], []
    tot = np.zeros(2)
    proj = np.zeros(2)
    for i in range(segments):
        g = np.random.default_rng(np.random.SeedSequence([seed, 0xA121, i]))
        x = ar.simulate(steps + L - 1, g)
        wins = np.lib.stride_tricks.sliding_window_view(x, L, axis=0).transpose(0, 2, 1)  # (steps, L, d)
        c, cs, nrm = _coords(cfg, full, wts, V, V_s, np.ascontiguousarray(wins), norms=True)
        tot += nrm
        proj += [np.sum(c * c), np.sum(cs * cs)]
        cs_.append(c)
        css_.append(cs)
        fs_.append(target(wins[:, -target.m:]))
    resid = float(np.max((tot - proj) / np.maximum(tot, 1e-300)))
    return AR1Limit(cfg=cfg, ar=ar, target=target, L=L, full=full, wts=wts, V=V, V_s=V_s, c=np.stack(cs_),
                    cs=np.stack(css_), f=np.stack(fs_), basis_residual=max(resid, 0.0), kernel_error=rule.error,
                    kernel_method=rule.method, seconds=time.perf_counter() - t0)


@dataclass(frozen=True, eq=False)
class AR1Inputs:
    """The AR(1) as :func:`distntk.rnn.run_replicas` reads a chain (module docstring). Build with :func:`ar1_inputs`."""

    ar: AR1
    inputs: np.ndarray  # (n_values, d): the values of the probe and risk windows
    probes: np.ndarray  # (P, L) index windows into inputs
    risk: tuple  # (index windows (n, L), weights (n,) = 1/n, f (n,))

    @property
    def dim(self) -> int:
        return self.ar.dim

    def stream(self, target: Target, cfg: RNNConfig, n_burn: int, n_train: int, seed) -> "_AR1Stream":
        return _AR1Stream(self.ar, target, cfg, n_burn, n_train, seed)


RISK_WINDOWS = 1024  # the stationary windows the replicas' risk averages over (drawn once from the seed)


def ar1_inputs(ar: AR1, target: Target, probes: np.ndarray, L: int, risk_windows: int = RISK_WINDOWS,
               seed: int = 0) -> AR1Inputs:
    """Probe windows ``(P, L, d)`` and ``risk_windows`` stationary windows as index windows (module docstring)."""
    probes = _as_windows(probes, L, ar.dim)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA121, 1 << 31]))
    rw = ar.sample_windows(risk_windows, L, rng)
    values = np.concatenate([probes.reshape(-1, ar.dim), rw.reshape(-1, ar.dim)])
    values.setflags(write=False)
    P = len(probes)
    pidx = np.arange(P * L, dtype=np.int64).reshape(P, L)
    ridx = P * L + np.arange(risk_windows * L, dtype=np.int64).reshape(risk_windows, L)
    f = target(rw[:, -target.m:])
    return AR1Inputs(ar=ar, inputs=values, probes=pidx,
                     risk=(ridx, np.full(risk_windows, 1.0 / risk_windows), f))


class _AR1Stream:
    """One replica's AR(1) data in consecutive pieces (the interface of :class:`distntk.rnn._DataStream`)."""

    def __init__(self, ar: AR1, target: Target, cfg: RNNConfig, n_burn: int, n_train: int, seed):
        self.ar, self.target, self.n_burn = ar, target, n_burn
        self.noise_std = cfg.noise_std
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._rng = np.random.Generator(np.random.PCG64(ss))
        self._noise = None
        if cfg.noise_std > 0:  # its own key below the replica's data seed
            child = np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, 0xA121))
            self._noise = np.random.Generator(np.random.PCG64(child))
        self._last = np.zeros((0, ar.dim))  # the last max(m - 1, 1) values drawn

    def _values(self, n: int) -> np.ndarray:
        if len(self._last) == 0:
            return self.ar.simulate(n, self._rng)
        e = self.ar.sigma * self._rng.standard_normal((n, self.ar.dim))
        out = np.empty_like(e)
        for i in range(self.ar.dim):
            out[:, i] = scipy.signal.lfilter([1.0], [1.0, -self.ar.phi[i]], e[:, i],
                                             zi=[self.ar.phi[i] * self._last[-1, i]])[0]
        return out

    def burn_in(self) -> np.ndarray:
        """Inputs of the ``n_burn`` burn-in steps, ``(n_burn, d)`` (the first is drawn stationary)."""
        x = self._values(self.n_burn)
        self._last = x[len(x) - max(self.target.m - 1, 1):]
        return x

    def train(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``(n, d)`` and targets ``(n,)`` of the next ``n`` training steps."""
        m = self.target.m
        new = self._values(n)
        path = np.concatenate([self._last[len(self._last) - (m - 1):] if m > 1 else self._last[:0], new])
        idx = np.arange(n)[:, None] + np.arange(m)[None, :]
        y = self.target(path[idx]) if n else np.zeros(0)
        if self._noise is not None:
            y = y + self.noise_std * self._noise.standard_normal(n)
        self._last = np.concatenate([self._last, new])[-max(m - 1, 1):]
        return new, y
