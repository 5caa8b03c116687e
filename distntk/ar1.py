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

Limit and simulation: :mod:`distntk.continuous`, with this AR(1) as its
:class:`~distntk.continuous.Source` (the other is a user's sampler,
:mod:`distntk.sampler`): the kernel limit estimated along stationary path
segments with jackknife standard errors, the basis found on ``n_basis``
windows drawn from the exact Gaussian window law (:meth:`AR1.sample_windows`),
the lag window set by ``max_i |phi_i|``, the quadrature rule chosen on the
Rouwenhorst chain (:meth:`AR1.rule_chain`), and the replicas' stream
continuing the recursion piece by piece (:meth:`AR1.pieces`, the same bits
whatever the piece sizes).

Validation (tests/test_ar1.py): the Rouwenhorst chain of
:func:`distntk.chain.rouwenhorst` with ``n`` states, solved exactly by
:func:`distntk.limit.solve_limit` with the same quadrature rule, approaches
these predictions as ``n`` grows.

Shapes: probes ``(P, L, d)`` value windows (``(P, L)`` accepted for ``d = 1``);
times ``(n_t,)``; outputs ``(n_t, P)`` and ``(n_t,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.signal

from .chain import ChainError, MarkovChain, markov_chain, rouwenhorst
from .continuous import (
    RISK_WINDOWS,
    ContinuousInputs,
    ContinuousLimit,
    ContinuousStream,
    continuous_inputs,
    continuous_limit,
    probe_label,
    probe_labels,
    rule_window,
)
from .limit import LimitConfig
from .rnn import RNNConfig
from .target import Target

__all__ = ["AR1", "AR1Inputs", "AR1Limit", "ar1", "ar1_inputs", "ar1_limit", "default_probes", "probe_label",
           "probe_labels", "reference_chain", "rule_window", "RISK_WINDOWS"]

AR1Limit = ContinuousLimit  # the names of the AR(1)-only version, kept for callers
AR1Inputs = ContinuousInputs


@dataclass(frozen=True, eq=False)
class AR1:
    """A validated stationary Gaussian AR(1) with diagonal ``phi``, a :class:`~distntk.continuous.Source`.
    Build it with :func:`ar1`."""

    phi: np.ndarray  # (d,)
    sigma: np.ndarray  # (d,)
    kind = "ar1"

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

    def pieces(self, rng: np.random.Generator, n: int) -> "_AR1Pieces":
        """A stationary path in consecutive pieces: the first drawn by :meth:`simulate`, the others continuing
        the recursion from the last value (the bits of one :meth:`simulate` call whatever the piece sizes)."""
        return _AR1Pieces(self, rng)

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

    def rule_chain(self, states: int) -> MarkovChain:
        """The quadrature rule's chain: :func:`reference_chain` with ``states`` states per coordinate."""
        return reference_chain(self, states)

    def default_probes(self, L: int) -> np.ndarray:
        """:func:`default_probes`."""
        return default_probes(self, L)


class _AR1Pieces:
    def __init__(self, ar: AR1, rng: np.random.Generator):
        self.ar, self.rng, self.last = ar, rng, None

    def take(self, n: int) -> np.ndarray:
        ar = self.ar
        if self.last is None:
            out = ar.simulate(n, self.rng)
        else:
            e = ar.sigma * self.rng.standard_normal((n, ar.dim))
            out = np.empty_like(e)
            for i in range(ar.dim):
                out[:, i] = scipy.signal.lfilter([1.0], [1.0, -ar.phi[i]], e[:, i], zi=[ar.phi[i] * self.last[i]])[0]
        if len(out):
            self.last = out[-1]
        return out


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


def ar1_limit(cfg: RNNConfig, ar: AR1, target: Target, L: int, limit: LimitConfig | None = None, *,
              n_basis: int = 2048, seed: int = 0, rule_states: int = 9) -> ContinuousLimit:
    """The AR(1) limit: :func:`distntk.continuous.continuous_limit` with the AR(1) as its source, with the
    spec's ``[limit]`` table (``limit.segments`` path segments of ``limit.segment_steps`` steps, the kernel to
    ``limit.tol`` or ``limit.resolution``)."""
    return continuous_limit(cfg, ar, target, L, limit, n_basis=n_basis, seed=seed, rule_states=rule_states)


def ar1_inputs(ar: AR1, target: Target, probes: np.ndarray, L: int, risk_windows: int = RISK_WINDOWS,
               seed: int = 0) -> ContinuousInputs:
    """:func:`distntk.continuous.continuous_inputs` with the AR(1) as its source."""
    return continuous_inputs(ar, target, probes, L, risk_windows=risk_windows, seed=seed)


def _AR1Stream(ar: AR1, target: Target, cfg: RNNConfig, n_burn: int, n_train: int, seed) -> ContinuousStream:
    """One replica's AR(1) data in pieces: :class:`distntk.continuous.ContinuousStream` on the AR(1)."""
    return ContinuousStream(ar, target, cfg, n_burn, n_train, seed)
