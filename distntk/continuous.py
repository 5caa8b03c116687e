"""Continuous-state data: the kernel limit estimated along simulated stationary paths (docs/model.md#ar1).

A *continuous stationary source* (:class:`Source`) is a Markov chain on ``R^d``
that distntk cannot enumerate: the Gaussian AR(1) of :mod:`distntk.ar1`
(``[chain] kind = "ar1"``) and a user's sampler of :mod:`distntk.sampler`
(``kind = "sampler"``, docs/model.md#sampler) are its two implementations.  A
source draws stationary paths and independent stationary windows from a given
generator; everything else here is the same for both.

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
independently (:meth:`Source.sample_windows`), features ``X`` (``n_basis x F``)
scaled by ``n_basis^{-1/2}``, the eigenpairs ``U, Lambda`` of ``X X^T`` with
``lambda > 1e-12 lambda_max``, ``V = X^T U Lambda^{-1/2}`` (orthonormal
columns: the principal directions of the empirical ``G`` in feature space);
the same for the ``s`` features.  The part of ``Phi`` outside the basis is
measured along the paths and reported as ``basis_residual`` (relative).
(ii) ``segments`` independent stationary paths of ``steps`` windows
(:meth:`Source.simulate`, seeded by ``SeedSequence([seed, 0xA121, i])``);
``G, b, D, b_s`` are path averages, ``AsyVar`` the lag sum
``C_0 + 2 sum_{j=1}^M C_j`` per segment with ``M = L + log(1e-9) / log(max(r,
rho))``, ``r`` the source's mixing rate (the window chain mixes at rate ``r``
after ``L`` steps; the fluctuation integrand inherits it), centred with the
pooled mean.  A source that states no rate (a sampler without
``chain.mixing``) gets :func:`estimate_mixing` of the segments.  The
finite-window control variate of the sampled limit has no analogue (there is
no enumerable window); the estimates are plain path averages.  (iii) The
standard error of every output is the delete-one jackknife over segments,
every output recomputed without the segment.  The memory truncation is that
of the window solver: windows of ``L`` values started from the zero memory
state, error at most ``rho^L``.  The quadrature rule is chosen, with its
error, on the windows of the finite chain :meth:`Source.rule_chain` (for the
AR(1) its Rouwenhorst chain), of length :func:`rule_window`.

Simulation.  :func:`distntk.rnn.run_replicas` reads its data from any chain
that has a ``stream`` method; :class:`ContinuousInputs` is such a chain: its
``inputs`` are the values of the probe windows (and of the risk windows),
flattened, so that probes and risk windows are index windows into them as for
a finite chain, and its stream draws one replica's path from
``PCG64(data_seed)`` (:meth:`Source.pieces`: ``n_burn + n_train`` values,
started stationary) and the observation noise from a second generator keyed
below the data seed, piece by piece with the same bits whatever the piece
sizes.  The stationary risk of the replicas is the average over
``risk_windows`` windows drawn once from the window law (seeded by the
experiment's seed): a Monte Carlo version of docs/model.md (2.9).

Shapes: probes ``(P, L, d)`` value windows (``(P, L)`` accepted for ``d = 1``);
times ``(n_t,)``; outputs ``(n_t, P)`` and ``(n_t,)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import _fast
from .chain import MarkovChain, window_chain
from .limit import E_C2, LimitConfig, feature_pass, gl_nodes, quadrature_rule
from .rnn import RNNConfig
from .target import Target

__all__ = ["Source", "Pieces", "ContinuousLimit", "ContinuousInputs", "ContinuousStream", "continuous_limit",
           "continuous_inputs", "estimate_mixing", "probe_label", "probe_labels", "rule_window", "as_windows",
           "RISK_WINDOWS"]

_RANK_RTOL = 1e-12
_ROW_DOUBLES = 1 << 22  # feature rows x columns per block


class Pieces(Protocol):
    """One stationary path handed out in consecutive pieces (:meth:`Source.pieces`)."""

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` values of the path, ``(n, d)``."""


class Source(Protocol):
    """A continuous stationary source: what :func:`continuous_limit` and :class:`ContinuousInputs` read.

    Every draw comes from the generator it is given, so the same seeds give the same bits anywhere."""

    kind: str  # the store's memory_method: "ar1" or "sampler"

    @property
    def dim(self) -> int:
        """The input dimension ``d``."""

    @property
    def mixing(self) -> float | None:
        """The geometric rate at which the chain forgets (``None``: estimated along the segments)."""

    def simulate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One stationary path ``X_0..X_{n-1}``, ``(n, d)``."""

    def sample_windows(self, n: int, L: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent stationary windows, ``(n, L, d)`` (oldest value first)."""

    def pieces(self, rng: np.random.Generator, n: int) -> Pieces:
        """A stationary path of ``n`` values, handed out in consecutive pieces."""

    def rule_chain(self, states: int) -> MarkovChain:
        """A finite chain with ``states`` values per coordinate on whose windows the quadrature rule is chosen."""


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


def estimate_mixing(paths: np.ndarray, z: float = 4.0) -> float:
    """The rate at which the inputs' autocorrelation decays, estimated on stationary ``paths`` ``(s, n, d)``.

    Per coordinate, the sample autocorrelation ``a_j`` of the pooled paths (centred with the pooled mean)
    and its Bartlett standard error ``e_j = sqrt((1 + 2 sum_{k<j} a_k^2) / (s n))``; ``J`` the smallest lag
    with ``|a_i| < z e_i`` for every ``i`` in ``[J, 2J]`` (at most ``n / 8``), and the rate ``(z e_J)^{1/J}``:
    the geometric rate that brings the correlation down to what the paths can still tell from zero by lag
    ``J``.  The largest over the coordinates.  It sees the inputs' linear correlations only: a chain whose
    nonlinear functionals remember longer needs ``chain.mixing``.
    """
    x = np.asarray(paths, dtype=float)
    s, n, d = x.shape
    x = x - x.mean(axis=(0, 1))
    max_lag = max(2, n // 4)
    nfft = 1 << int(np.ceil(np.log2(2 * n)))
    rate = 0.0
    for i in range(d):
        f = np.fft.rfft(x[:, :, i], nfft, axis=1)
        acov = np.fft.irfft(np.abs(f) ** 2, nfft, axis=1)[:, :max_lag + 1].sum(axis=0)
        acov /= s * (n - np.arange(max_lag + 1))
        if not acov[0] > 0:
            continue  # a constant coordinate remembers nothing
        a = acov / acov[0]
        below = np.concatenate([[0.0, 0.0], np.cumsum(a[1:-1] ** 2)])  # sum_{0<k<j} a_k^2 at index j
        e = np.sqrt((1.0 + 2.0 * below) / (s * n))
        small = np.abs(a[1:]) < z * e[1:]  # lag j at index j - 1
        J = max_lag // 2
        for j in range(1, max_lag // 2 + 1):
            if small[j - 1:2 * j].all():
                J = j
                break
        rate = max(rate, float((z * e[J]) ** (1.0 / J)))
    return min(rate, 1.0 - 1e-9)


class _ValueChain:
    """The attributes of a chain that :func:`distntk.limit.feature_pass` reads, for value windows."""

    def __init__(self, values: np.ndarray):
        self.inputs = np.ascontiguousarray(values, dtype=float)
        self.dim = values.shape[1]


@dataclass(eq=False)
class ContinuousLimit:
    """The kernel limit of a continuous source from path segments. Build with :func:`continuous_limit`."""

    cfg: RNNConfig
    source: Source
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
    mixing: float  # the rate the lag window uses: the source's, or estimated along the segments

    @property
    def n_segments(self) -> int:
        return self.c.shape[0]

    @property
    def lag_window(self) -> int:
        r = max(self.mixing, self.cfg.rho, 1e-3)
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
        probes = as_windows(probes, self.L, self.source.dim)
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


def as_windows(probes, L: int, d: int) -> np.ndarray:
    """Value windows ``(P, L, d)`` (``(P, L)`` accepted for ``d = 1``); ``ValueError`` for another shape."""
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
    """The length of the windows the quadrature rule is chosen on: ``L``, or the longest with at most
    2^16 windows of ``states`` values per coordinate (``states^(L d)``)."""
    n = 1
    while n < L and states ** ((n + 1) * d) <= 1 << 16:
        n += 1
    return n


def continuous_limit(cfg: RNNConfig, source: Source, target: Target, L: int, limit: LimitConfig | None = None, *,
                     n_basis: int = 2048, seed: int = 0, rule_states: int = 9) -> ContinuousLimit:
    """The limit of a continuous source (module docstring), with the spec's ``[limit]`` table: ``limit.segments``
    path segments of ``limit.segment_steps`` steps, the kernel to ``limit.tol`` (or ``limit.resolution``).
    The quadrature rule is chosen (and its error measured) on the windows of ``source.rule_chain(rule_states)``,
    of length :func:`rule_window` (``L``, or the longest with at most 2^16 windows: the older values weigh
    like ``rho^k``); ``limit.resolution`` fixes a tensor Gauss rule instead."""
    limit = LimitConfig() if limit is None else limit
    segments, steps = limit.segments, limit.segment_steps
    if L < target.m:
        raise ValueError(f"window length L = {L} is shorter than the target memory m = {target.m}")
    if segments < 2:
        raise ValueError(f"segments = {segments}; expected at least 2 (the standard error is a jackknife)")
    t0 = time.perf_counter()
    d = source.dim
    rule = quadrature_rule(cfg, window_chain(source.rule_chain(rule_states), rule_window(L, d, rule_states),
                                             max_histories=1 << 16),
                           limit.resolution, seed, limit.tol, 1 << 21, 64)
    full = np.zeros((len(rule.pts), d + 2))
    full[:, rule.coords] = rule.pts
    wts = np.asarray(rule.wts, dtype=float)
    q = len(full)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA121, 1 << 30]))
    Xb = np.concatenate([X for _, X in _feature_blocks(cfg, full, wts, source.sample_windows(n_basis, L, rng))])
    Xb /= np.sqrt(n_basis)
    V = _basis(Xb)
    V_s = _basis(np.sqrt(E_C2) * Xb[:, :q])
    del Xb
    cs_, css_, fs_, paths = [], [], [], []
    tot = np.zeros(2)
    proj = np.zeros(2)
    for i in range(segments):
        g = np.random.default_rng(np.random.SeedSequence([seed, 0xA121, i]))
        x = source.simulate(steps + L - 1, g)
        if source.mixing is None:
            paths.append(x)
        wins = np.lib.stride_tricks.sliding_window_view(x, L, axis=0).transpose(0, 2, 1)  # (steps, L, d)
        c, cs, nrm = _coords(cfg, full, wts, V, V_s, np.ascontiguousarray(wins), norms=True)
        tot += nrm
        proj += [np.sum(c * c), np.sum(cs * cs)]
        cs_.append(c)
        css_.append(cs)
        fs_.append(target(wins[:, -target.m:]))
    resid = float(np.max((tot - proj) / np.maximum(tot, 1e-300)))
    mixing = float(source.mixing) if source.mixing is not None else estimate_mixing(np.stack(paths))
    return ContinuousLimit(cfg=cfg, source=source, target=target, L=L, full=full, wts=wts, V=V, V_s=V_s,
                           c=np.stack(cs_), cs=np.stack(css_), f=np.stack(fs_), basis_residual=max(resid, 0.0),
                           kernel_error=rule.error, kernel_method=rule.method, seconds=time.perf_counter() - t0,
                           mixing=mixing)


@dataclass(frozen=True, eq=False)
class ContinuousInputs:
    """A continuous source as :func:`distntk.rnn.run_replicas` reads a chain (module docstring). Build it with
    :func:`continuous_inputs`."""

    source: Source
    inputs: np.ndarray  # (n_values, d): the values of the probe and risk windows
    probes: np.ndarray  # (P, L) index windows into inputs
    risk: tuple  # (index windows (n, L), weights (n,) = 1/n, f (n,))

    @property
    def dim(self) -> int:
        return self.source.dim

    def stream(self, target: Target, cfg: RNNConfig, n_burn: int, n_train: int, seed) -> "ContinuousStream":
        return ContinuousStream(self.source, target, cfg, n_burn, n_train, seed)


RISK_WINDOWS = 1024  # the stationary windows the replicas' risk averages over (drawn once from the seed)


def continuous_inputs(source: Source, target: Target, probes: np.ndarray, L: int, risk_windows: int = RISK_WINDOWS,
                      seed: int = 0) -> ContinuousInputs:
    """Probe windows ``(P, L, d)`` and ``risk_windows`` stationary windows as index windows (module docstring)."""
    d = source.dim
    probes = as_windows(probes, L, d)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA121, 1 << 31]))
    rw = source.sample_windows(risk_windows, L, rng)
    values = np.concatenate([probes.reshape(-1, d), rw.reshape(-1, d)])
    values.setflags(write=False)
    P = len(probes)
    pidx = np.arange(P * L, dtype=np.int64).reshape(P, L)
    ridx = P * L + np.arange(risk_windows * L, dtype=np.int64).reshape(risk_windows, L)
    f = target(rw[:, -target.m:])
    return ContinuousInputs(source=source, inputs=values, probes=pidx,
                            risk=(ridx, np.full(risk_windows, 1.0 / risk_windows), f))


class ContinuousStream:
    """One replica's data in consecutive pieces (the interface of :class:`distntk.rnn._DataStream`): the path
    from ``source.pieces`` on ``PCG64(seed)``, the observation noise from the child key ``0xA121`` of ``seed``."""

    def __init__(self, source: Source, target: Target, cfg: RNNConfig, n_burn: int, n_train: int, seed):
        self.target, self.n_burn = target, n_burn
        self.noise_std = cfg.noise_std
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._path = source.pieces(np.random.Generator(np.random.PCG64(ss)), n_burn + n_train)
        self._noise = None
        if cfg.noise_std > 0:  # its own key below the replica's data seed
            child = np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, 0xA121))
            self._noise = np.random.Generator(np.random.PCG64(child))
        self._last = np.zeros((0, source.dim))  # the last max(m - 1, 1) values drawn

    def burn_in(self) -> np.ndarray:
        """Inputs of the ``n_burn`` burn-in steps, ``(n_burn, d)`` (the first is drawn stationary)."""
        x = self._path.take(self.n_burn)
        self._last = x[len(x) - max(self.target.m - 1, 1):]
        return x

    def train(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``(n, d)`` and targets ``(n,)`` of the next ``n`` training steps."""
        m = self.target.m
        new = self._path.take(n)
        path = np.concatenate([self._last[len(self._last) - (m - 1):] if m > 1 else self._last[:0], new])
        idx = np.arange(n)[:, None] + np.arange(m)[None, :]
        y = self.target(path[idx]) if n else np.zeros(0)
        if self._noise is not None:
            y = y + self.noise_std * self._noise.standard_normal(n)
        self._last = np.concatenate([self._last, new])[-max(m - 1, 1):]
        return new, y
