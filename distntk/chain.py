"""Finite ergodic Markov chains, their window chains and the Poisson equation.

docs/model.md#data and docs/model.md#poisson.

A chain on states ``0..S-1`` has a row-stochastic transition matrix ``P``
(shape ``(S, S)``), irreducible and aperiodic, and carries an input vector
``x_s`` in ``R^d`` per state (``inputs``, shape ``(S, d)``).  Its stationary law
``pi`` (shape ``(S,)``) solves ``pi P = pi``, ``sum(pi) = 1``.

Window chain.  For a window length ``L`` the histories ``H_L`` are all state
windows ``z = (z_1, ..., z_L)`` (oldest first) with positive stationary
probability ``pi_L(z) = pi(z_1) prod_j P(z_j, z_{j+1})``.  The windows form a
Markov chain with ``P_L(z -> (z_2..z_L, s')) = P(z_L, s')``, itself ergodic.
``histories`` has shape ``(H, L)``, listed in lexicographic order.

Poisson equation.  For ``F : states -> R^m`` (array ``(S, m)``) with
``F~ = F - pi F`` the equation ``(I - P) u = F~`` has a unique solution with
``pi u = 0``: ``u = Z F~`` with the fundamental matrix
``Z = (I - P + 1 pi^T)^{-1}`` (``pi Z = pi`` keeps the normalisation).  The
Markov-chain central limit theorem for ``sum_k F(s_k)`` then has covariance

    Sigma = E_pi[ F~ u^T + u F~^T - F~ F~^T ]                          (m, m)

which equals ``sum_{j in Z} Cov_pi(F(s_0), F(s_j))``.

Rouwenhorst discretisation (docs/model.md#ar1).  The scalar AR(1)
``X_{k+1} = phi X_k + sigma eps_k`` (stationary sd ``s = sigma / sqrt(1 - phi^2)``)
becomes a chain on the ``n`` equally spaced points ``-psi..psi``,
``psi = s sqrt(n - 1)``, with ``P_2 = [[p, 1-p], [1-p, p]]``, ``p = (1 + phi)/2``,
and ``P_n`` built from ``P_{n-1}`` by the four-corner recursion (middle rows
halved).  For every ``n >= 2`` the stationary law is Binomial(n-1, 1/2) on the
grid, so the mean (0), the variance (``s^2``) and the conditional mean
``E[X_{k+1} | X_k] = phi X_k`` (hence the autocorrelation ``phi^j`` at every
lag) are exact; as ``n`` grows the windows converge in law to the Gaussian ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import gcd

import numpy as np
import scipy.linalg
import scipy.sparse
from numpy.typing import ArrayLike
from scipy.sparse.csgraph import breadth_first_order, connected_components

from .errors import DistntkError

__all__ = [
    "ChainError",
    "MarkovChain",
    "WindowChain",
    "markov_chain",
    "window_chain",
    "fundamental_matrix",
    "poisson",
    "asymptotic_covariance",
    "rouwenhorst",
]

_ROW_TOL = 1e-10


class ChainError(DistntkError, ValueError):
    """An invalid or non-ergodic chain; the message says what was expected."""


@dataclass(frozen=True, eq=False)
class MarkovChain:
    """A validated ergodic chain.

    Build it with ``markov_chain``, which checks ``P`` and computes ``pi``; the arrays are
    read-only.

    Parameters
    ----------
    P : numpy.ndarray
        The transition matrix, ``(S, S)``, row-stochastic, irreducible and aperiodic.
    inputs : numpy.ndarray
        The input ``x_s`` of each state, ``(S, d)``.
    pi : numpy.ndarray
        The stationary law, ``(S,)``: ``pi P = pi``, ``sum(pi) = 1``.
    """

    P: np.ndarray  # (S, S) row-stochastic
    inputs: np.ndarray  # (S, d)
    pi: np.ndarray  # (S,)

    @property
    def n_states(self) -> int:
        """The number of states ``S``."""
        return self.P.shape[0]

    @property
    def dim(self) -> int:
        """The input dimension ``d``."""
        return self.inputs.shape[1]

    @cached_property
    def _cumulative(self) -> np.ndarray:
        cum = np.cumsum(self.P, axis=1)
        cum[:, -1] = 1.0  # guard against round-off so searchsorted never overflows
        return cum

    def simulate(self, n: int, rng: np.random.Generator, start: int | None = None) -> np.ndarray:
        """A path ``s_0..s_{n-1}`` of the chain.

        Draws exactly ``n`` uniforms from ``rng`` (the first picks ``s_0``, also
        when ``start`` is given) so that a path depends only on its generator.

        Parameters
        ----------
        n : int
            The path's length.
        rng : numpy.random.Generator
            The generator the path is drawn from.
        start : int or None, optional
            The first state; ``None``: ``s_0 ~ pi``.

        Returns
        -------
        numpy.ndarray
            The states, ``(n,)`` int64.
        """
        u = rng.random(n)
        out = np.empty(n, dtype=np.int64)
        if n == 0:
            return out
        cum_pi = np.cumsum(self.pi)
        cum_pi[-1] = 1.0
        out[0] = np.searchsorted(cum_pi, u[0], side="right") if start is None else start
        walk(self._cumulative, u, out)
        return out


def walk(cum: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out[1:]`` by inverse-CDF steps from ``out[0]`` (in place)."""
    s = out[0]
    for k in range(1, len(out)):
        s = np.searchsorted(cum[s], u[k], side="right")
        out[k] = s


try:  # numba makes the sequential walk ~100x faster; it is a declared dependency
    import numba as _numba

    @_numba.njit(cache=True)
    def walk_jit(cum, u, out):  # pragma: no cover - compiled
        s = out[0]
        for k in range(1, len(out)):
            row = cum[s]
            j = 0
            while j < row.shape[0] - 1 and row[j] <= u[k]:
                j += 1
            s = j
            out[k] = s

    walk = walk_jit  # noqa: F811  (identical results: both pick the first j with cum[j] > u)
except ImportError:  # pragma: no cover
    pass


def _period(P: np.ndarray) -> int:
    """Period of an irreducible chain: gcd of level differences along edges."""
    S = P.shape[0]
    order, pred = breadth_first_order(scipy.sparse.csr_matrix(P > 0), 0, directed=True)
    level = np.full(S, -1)
    level[0] = 0
    for v in order[1:]:
        level[v] = level[pred[v]] + 1
    g = 0
    rows, cols = np.nonzero(P > 0)
    for i, j in zip(rows, cols, strict=True):
        g = gcd(g, int(level[i] + 1 - level[j]))
    return abs(g)


def _stationary(P: np.ndarray) -> np.ndarray:
    """Solve ``pi (I - P) = 0``, ``sum pi = 1`` (unique for an irreducible chain)."""
    S = P.shape[0]
    A = (np.eye(S) - P).T.copy()
    A[-1, :] = 1.0  # replace one redundant balance equation by the normalisation
    rhs = np.zeros(S)
    rhs[-1] = 1.0
    pi = np.linalg.solve(A, rhs)
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def markov_chain(P: ArrayLike, inputs: ArrayLike | None = None) -> MarkovChain:
    """Validate ``P`` (and the state inputs) and return a ``MarkovChain``.

    Rows that sum to 1 within ``1e-10`` are renormalised exactly; the stationary law ``pi`` is
    solved for.

    Parameters
    ----------
    P : array_like
        The transition matrix, ``(S, S)``: entries ``>= 0``, rows summing to 1, irreducible and
        aperiodic.
    inputs : array_like or None, optional
        The input of each state: ``S`` numbers (``d = 1``) or ``(S, d)``; ``None``: the state
        index as a 1-d input.

    Returns
    -------
    MarkovChain
        The validated chain, with read-only arrays.

    Raises
    ------
    ChainError
        On any violation, with a one-line message saying what was expected.
    """
    P = np.array(P, dtype=float)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] == 0:
        raise ChainError(f"transition matrix has shape {P.shape}; expected a non-empty square (S, S) matrix",
                         key="transition")
    if not np.all(np.isfinite(P)):
        raise ChainError("transition matrix has non-finite entries; expected probabilities in [0, 1]", key="transition")
    if np.any(P < 0):
        i, j = np.argwhere(P < 0)[0]
        raise ChainError(f"transition matrix entry ({i}, {j}) is {P[i, j]:g}; entries must be >= 0", key="transition")
    sums = P.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_TOL)
    if bad.size:
        r = int(bad[0])
        raise ChainError(f"transition matrix row {r} sums to {sums[r]:.6g}; rows must sum to 1", key="transition")
    P = P / sums[:, None]
    S = P.shape[0]
    n_comp, _ = connected_components(scipy.sparse.csr_matrix(P > 0), directed=True, connection="strong")
    if n_comp > 1:
        raise ChainError(
            f"transition matrix is reducible ({n_comp} communicating classes); expected an irreducible chain",
            key="transition",
        )
    d = _period(P)
    if d != 1:
        raise ChainError(f"chain is periodic with period {d}; expected an aperiodic chain", key="transition")
    if inputs is None:
        inputs = np.arange(S, dtype=float)[:, None]
    X = np.array(inputs, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] != S:
        raise ChainError(f"state inputs have shape {np.shape(inputs)}; expected ({S}, d), one input vector per state",
                         key="inputs")
    if not np.all(np.isfinite(X)):
        raise ChainError("state inputs have non-finite entries; expected finite numbers", key="inputs")
    pi = _stationary(P)
    for arr in (P, X, pi):
        arr.setflags(write=False)
    return MarkovChain(P=P, inputs=X, pi=pi)


@dataclass(frozen=True, eq=False)
class WindowChain:
    """The chain of length-``L`` windows (docs/model.md (1.5)). Build with :func:`window_chain`."""

    chain: MarkovChain
    histories: np.ndarray  # (H, L) states, oldest first
    pi: np.ndarray  # (H,)
    P: scipy.sparse.csr_matrix  # (H, H)

    @property
    def L(self) -> int:
        return self.histories.shape[1]

    @property
    def n_histories(self) -> int:
        return self.histories.shape[0]

    def index(self, windows: ArrayLike) -> np.ndarray:
        """Row indices of the given windows (``(..., L)`` states) in ``histories``."""
        w = np.asarray(windows, dtype=np.int64)
        if w.shape[-1] != self.L:
            raise ChainError(f"window has length {w.shape[-1]}; expected L = {self.L}")
        codes = _encode(w, self.chain.n_states)
        pos = np.searchsorted(self._codes, codes)
        pos = np.minimum(pos, len(self._codes) - 1)
        if np.any(self._codes[pos] != codes):
            raise ChainError("window has zero stationary probability; expected a history of the window chain")
        return pos

    @cached_property
    def _codes(self) -> np.ndarray:
        return _encode(self.histories, self.chain.n_states)

    def most_likely(self, k: int) -> np.ndarray:
        """Indices of the ``k`` most probable windows (ties broken by order)."""
        return np.argsort(-self.pi, kind="stable")[:k]

    @cached_property
    def fundamental(self) -> np.ndarray:
        """Dense ``Z = (I - P_L + 1 pi_L^T)^{-1}``, shape ``(H, H)``."""
        return fundamental_matrix(self.P.toarray(), self.pi)

    @cached_property
    def _last_state_row(self) -> np.ndarray:
        """For each base state ``s``, the row of one history ending in ``s`` (-1 if none)."""
        rows = np.full(self.chain.n_states, -1, dtype=np.int64)
        last = self.histories[:, -1]
        rows[last[::-1]] = np.arange(self.n_histories)[::-1]
        return rows

    def poisson_lag(self, v: np.ndarray) -> np.ndarray:
        """``Z v`` for a centred ``v`` (``pi_L v = 0``) by the lag sum, without ``Z`` (docs/model.md (6.9)).

        ``u = sum_{j=0}^{L-2} P_L^j v + (Z_S g)(z_L)`` with ``g(s) = (P_L^{L-1} v)(z)``
        for any window ``z`` ending in ``s`` (after ``L - 1`` steps the window
        has forgotten all but ``z_L``) and ``Z_S`` the base chain's fundamental
        matrix.  Exact, at ``(L - 1)`` sparse products; ``v`` is ``(H,)`` or ``(H, m)``.
        """
        v = np.asarray(v, dtype=float)
        u = np.zeros_like(v)
        w = v
        for _ in range(self.L - 1):
            u += w
            w = self.P @ w
        rows = self._last_state_row
        S = self.chain.n_states
        g = np.zeros((S,) + v.shape[1:])
        ok = rows >= 0
        g[ok] = w[rows[ok]]
        Zg = _base_fundamental(self.chain) @ g
        return u + Zg[self.histories[:, -1]]


def _base_fundamental(chain: MarkovChain) -> np.ndarray:
    return fundamental_matrix(chain.P, chain.pi)


def _encode(w: np.ndarray, S: int) -> np.ndarray:
    code = np.zeros(w.shape[:-1], dtype=np.int64)
    for j in range(w.shape[-1]):
        code = code * S + w[..., j]
    return code


def window_chain(chain: MarkovChain, L: int, max_histories: int = 1 << 14) -> WindowChain:
    """Enumerate ``H_L`` and build ``P_L`` and ``pi_L`` (docs/model.md (1.4)-(1.5)).

    The histories are the length-``L`` state windows of positive stationary probability, in
    lexicographic order; see the ``distntk.chain`` module docstring.

    Parameters
    ----------
    chain : MarkovChain
        The base chain.
    L : int
        The window length, an integer ``>= 1``.
    max_histories : int, optional
        The most histories allowed while enumerating.

    Returns
    -------
    WindowChain
        ``histories`` ``(H, L)`` (oldest state first), ``pi`` ``(H,)`` and the sparse ``P``
        ``(H, H)``.

    Raises
    ------
    ChainError
        If ``L`` is not an integer ``>= 1``, or the windows outnumber ``max_histories``.
    """
    if int(L) != L or L < 1:
        raise ChainError(f"window length is {L}; expected an integer >= 1")
    L = int(L)
    S = chain.n_states
    P = chain.P
    hist = np.arange(S, dtype=np.int64)[:, None]
    prob = chain.pi.copy()
    keep = prob > 0
    hist, prob = hist[keep], prob[keep]
    for _ in range(L - 1):
        last = hist[:, -1]
        rows, nxt = np.nonzero(P[last] > 0)
        if len(rows) > max_histories:
            raise ChainError(
                f"window length {L} gives more than {max_histories} histories; expected a smaller L "
                "(or raise max_histories)"
            )
        hist = np.concatenate([hist[rows], nxt[:, None]], axis=1)
        prob = prob[rows] * P[last[rows], nxt]
    order = np.argsort(_encode(hist, S), kind="stable")
    hist, prob = hist[order], prob[order]
    H = len(hist)
    codes = _encode(hist, S)
    # successor of z is (z_2..z_L, s'); its code is (code(z) mod S^{L-1}) * S + s'
    base = (codes % (S ** (L - 1))) * S if L > 1 else np.zeros(H, dtype=np.int64)
    r_idx, s_next = np.nonzero(P[hist[:, -1]] > 0)
    succ_codes = base[r_idx] + s_next
    c_idx = np.searchsorted(codes, succ_codes)
    vals = P[hist[r_idx, -1], s_next]
    PL = scipy.sparse.csr_matrix((vals, (r_idx, c_idx)), shape=(H, H))
    pi = prob / prob.sum()
    hist.setflags(write=False)
    pi.setflags(write=False)
    return WindowChain(chain=chain, histories=hist, pi=pi, P=PL)


def fundamental_matrix(P: ArrayLike, pi: np.ndarray) -> np.ndarray:
    """``Z = (I - P + 1 pi^T)^{-1}`` (dense), the pi-normalised Poisson inverse."""
    P = P.toarray() if scipy.sparse.issparse(P) else np.asarray(P, dtype=float)
    S = P.shape[0]
    A = np.eye(S) - P + np.outer(np.ones(S), pi)
    return scipy.linalg.inv(A, check_finite=False)


def poisson(P: ArrayLike, pi: np.ndarray, F: np.ndarray, Z: np.ndarray | None = None) -> np.ndarray:
    """Solve ``(I - P) u = F - pi F`` with ``pi u = 0``.

    ``F`` has shape ``(S,)`` or ``(S, m)``; ``u`` has the same shape.  Pass a
    precomputed fundamental matrix ``Z`` to reuse one factorisation.
    """
    F = np.asarray(F, dtype=float)
    pi = np.asarray(pi, dtype=float)
    if Z is None:
        Z = fundamental_matrix(P, pi)
    Ft = F - np.tensordot(pi, F, axes=(0, 0))
    return Z @ Ft


def asymptotic_covariance(P: ArrayLike, pi: np.ndarray, F: np.ndarray,
                          Z: np.ndarray | None = None) -> np.ndarray:
    """CLT covariance ``lim n^{-1} Cov(sum_{k<n} F(s_k))`` of a stationary chain.

    ``E_pi[F~ u^T + u F~^T - F~ F~^T]`` with ``u`` the Poisson solution; ``F``
    of shape ``(S,)`` gives a scalar, ``(S, m)`` an ``(m, m)`` matrix.
    """
    F = np.asarray(F, dtype=float)
    pi = np.asarray(pi, dtype=float)
    scalar = F.ndim == 1
    F2 = F[:, None] if scalar else F
    u = poisson(P, pi, F2, Z)
    Ft = F2 - pi @ F2
    cross = (Ft * pi[:, None]).T @ u
    cov = cross + cross.T - (Ft * pi[:, None]).T @ Ft
    return float(cov[0, 0]) if scalar else cov


def rouwenhorst(n: int, phi: float, sigma: float) -> MarkovChain:
    """The ``n``-state Rouwenhorst chain of the scalar AR(1) ``X' = phi X + sigma eps`` (module docstring)."""
    if int(n) != n or n < 2:
        raise ChainError(f"rouwenhorst: n is {n}; expected an integer >= 2")
    if not (np.isfinite(phi) and abs(phi) < 1):
        raise ChainError(f"rouwenhorst: phi is {phi}; expected |phi| < 1")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ChainError(f"rouwenhorst: sigma is {sigma}; expected sigma > 0")
    n, p = int(n), (1.0 + phi) / 2.0
    P = np.array([[p, 1 - p], [1 - p, p]])
    for m in range(3, n + 1):
        Q = np.zeros((m, m))
        Q[:-1, :-1] += p * P
        Q[:-1, 1:] += (1 - p) * P
        Q[1:, :-1] += (1 - p) * P
        Q[1:, 1:] += p * P
        Q[1:-1] /= 2.0
        P = Q
    psi = sigma / np.sqrt(1.0 - phi * phi) * np.sqrt(n - 1.0)
    return markov_chain(P, np.linspace(-psi, psi, n)[:, None])
