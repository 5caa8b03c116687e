"""The finite-N RNN with diagonal recurrent weights and its online SGD (docs/model.md#network).

Unit ``i`` has parameters ``theta^i = (c^i, w^i, a^i, b^i)`` in ``R x R^d x R x R``::

    u^i_k = w^i . X_k + a^i + b^i S^i_{k-1}
    S^i_k = sigma(u^i_k)                          S^i_{-1} = 0
    Yhat_k = N^{-beta} sum_i c^i S^i_k

Real-time recurrent learning keeps ``J^i_k = dS^i_k / d(w^i, a^i, b^i)``::

    J^i_k = sigma'(u^i_k) [ (X_k, 1, S^i_{k-1}) + b^i J^i_{k-1} ]

(``gradient="truncated"`` drops ``b^i J^i_{k-1}``).  One SGD step per sample
with ``eta_N = alpha N^{2 beta - 2}`` and error ``e_k = Y_k - Yhat_k``::

    c^i            += eta_N e_k N^{-beta} S^i_k
    (w^i,a^i,b^i)  += eta_N e_k N^{-beta} c^i J^i_k        (pre-update c^i)

Before training the recurrence runs ``B >= L`` burn-in steps without updates.
Training makes ``K = floor(T N)`` updates; the record at time ``t`` is taken
after ``floor(t N)`` updates and is ``g^N_t(z) = N^{-beta} sum_i c^i s(theta^i; z)``
on probe windows ``z`` (memory run from 0 over the window).

Arrays are vectorised over ``R`` data sequences sharing one initialisation:
parameters ``c, a, b`` are ``(R, N)``, ``w`` is ``(R, N, d)``; memory ``S`` is
``(R, N)`` and the Jacobian ``J`` is ``(R, N, d + 2)`` ordered ``(w, a, b)``.

The per-segment update is a swappable *engine*: :data:`ENGINES` maps a name to
a function ``engine(params, state, xs, ys, eta, scale, activation, rtrl, update)``
that advances ``xs.shape[1]`` steps in place.  ``"reference"`` is plain NumPy
and is the oracle the fast kernels are tested against; ``"fast"`` (the default)
is the compiled engine of :mod:`distntk._fast` (one fused sweep over the units
per step, SIMD ``tanh``), which with it also evaluates the records (probe
outputs and the risk over all histories).

Cost and memory.  One replica costs ``B + floor(T N)`` steps of ``N`` unit
updates (``O(N)`` each: the recurrent matrix is diagonal), i.e. about
``T N^2`` unit-steps, plus ``N`` times the number of distinct window prefixes
per record.  A batch of ``R`` replicas holds ``R N (2 d + 6)`` float64
(parameters, ``S`` and ``J``); the data are drawn in pieces of
``max(256, N // 8)`` steps as training proceeds (:class:`_DataStream`), so the
memory does not grow with ``T``.

Seeds.  Replica ``(width, init, data)`` draws its initialisation from
``SeedSequence(root, spawn_key=(0, width, init))`` and its data (chain path,
then noise) from ``SeedSequence(root, spawn_key=(1, width, init, data))``, so
any replica is recomputed bit for bit anywhere, whatever the blocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _fast
from .chain import MarkovChain
from .chain import walk as _chain_walk
from .errors import DistntkError
from .target import Target

__all__ = [
    "ModelError",
    "RNNConfig",
    "Params",
    "ACTIVATIONS",
    "ENGINES",
    "init_seed",
    "data_seed",
    "init_params",
    "sample_data",
    "memory_and_jacobian",
    "probe_outputs",
    "history_outputs",
    "run_replicas",
]


class ModelError(DistntkError, ValueError):
    """Invalid model parameters; the message says what was expected."""


def _tanh(u):
    s = np.tanh(u)
    return s, 1.0 - s * s


def _sigmoid(u):
    s = 0.5 * (1.0 + np.tanh(0.5 * u))
    return s, s * (1.0 - s)


# name -> (function returning (sigma(u), sigma'(u)), sup |sigma'|)
ACTIVATIONS: dict[str, tuple[Callable, float]] = {
    "tanh": (_tanh, 1.0),
    "sigmoid": (_sigmoid, 0.25),
}


@dataclass(frozen=True)
class RNNConfig:
    """Model and training hyper-parameters (docs/model.md#network).

    Every field is checked on construction; the spec's ``[model]`` table gives them by name.

    Parameters
    ----------
    activation : {"tanh", "sigmoid"}, optional
        The activation ``sigma``.
    beta : float, optional
        The output scaling ``Yhat = N^{-beta} sum_i c^i S^i``, with ``1/2 < beta < 1``.
    alpha : float, optional
        The learning-rate constant of ``eta_N = alpha N^{2 beta - 2}``, ``> 0``.
    sigma_w : float, optional
        The standard deviation of the input weights ``w^i`` at initialisation.
    sigma_a : float, optional
        The standard deviation of the biases ``a^i`` at initialisation.
    b_max : float, optional
        The recurrent weights start uniform on ``[-b_max, b_max]``; the contraction factor
        ``rho = b_max sup|sigma'|`` must be below 1.
    gradient : {"rtrl", "truncated"}, optional
        Real-time recurrent learning, or its truncation that drops ``b^i J^i_{k-1}``.
    noise_std : float, optional
        The standard deviation of the label noise ``eps_k``.
    burn_in : int or None, optional
        Steps the recurrence runs before training, without updates (at least ``L``); ``None``:
        the window length ``L``.

    Raises
    ------
    ModelError
        If a field is out of range (``rho >= 1`` included); the message says what was expected.
    """

    activation: str = "tanh"
    beta: float = 0.75
    alpha: float = 1.0
    sigma_w: float = 1.0
    sigma_a: float = 1.0
    b_max: float = 0.3
    gradient: str = "rtrl"
    noise_std: float = 0.0
    burn_in: int | None = None  # None: equal to the window length L

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ModelError(f"activation is {self.activation!r}; expected one of {sorted(ACTIVATIONS)}",
                             key="activation")
        if not 0.5 < self.beta < 1.0:
            raise ModelError(f"beta is {self.beta}; expected 1/2 < beta < 1", key="beta")
        if not self.alpha > 0:
            raise ModelError(f"alpha is {self.alpha}; expected alpha > 0", key="alpha")
        for name in ("sigma_w", "sigma_a", "b_max", "noise_std"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ModelError(f"{name} is {v}; expected a finite number >= 0", key=name)
        if self.gradient not in ("rtrl", "truncated"):
            raise ModelError(f"gradient is {self.gradient!r}; expected 'rtrl' or 'truncated'", key="gradient")
        if self.rho >= 1.0:
            raise ModelError(
                f"contraction factor rho = b_max * sup|sigma'| = {self.rho:g}; expected rho < 1 "
                f"(b_max < {1.0 / ACTIVATIONS[self.activation][1]:g} for {self.activation})", key="b_max"
            )
        if self.burn_in is not None and (int(self.burn_in) != self.burn_in or self.burn_in < 0):
            raise ModelError(f"burn_in is {self.burn_in}; expected an integer >= L", key="burn_in")

    @property
    def rho(self) -> float:
        """The contraction factor ``rho = b_max sup|sigma'|`` of the memory (docs/model.md#memory)."""
        return self.b_max * ACTIVATIONS[self.activation][1]

    def eta(self, N: int) -> float:
        """The learning rate at width ``N``.

        Parameters
        ----------
        N : int
            The width.

        Returns
        -------
        float
            ``eta_N = alpha N^{2 beta - 2}``.
        """
        return self.alpha * float(N) ** (2 * self.beta - 2)

    def scale(self, N: int) -> float:
        """The output scale at width ``N``.

        Parameters
        ----------
        N : int
            The width.

        Returns
        -------
        float
            ``N^{-beta}``.
        """
        return float(N) ** (-self.beta)


@dataclass
class Params:
    """Per-replica parameters; arrays ``(R, N)`` and ``w`` ``(R, N, d)``."""

    c: np.ndarray
    w: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def copy(self) -> "Params":
        return Params(self.c.copy(), self.w.copy(), self.a.copy(), self.b.copy())


def init_seed(root: int, width: int, init: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(int(root), spawn_key=(0, int(width), int(init)))


def data_seed(root: int, width: int, init: int, data: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(int(root), spawn_key=(1, int(width), int(init), int(data)))


def init_params(cfg: RNNConfig, N: int, d: int, rng: np.random.Generator) -> Params:
    """Draw ``N`` units i.i.d. from ``mu_0`` (shape ``(1, N)``), in a fixed order."""
    c = rng.uniform(-1.0, 1.0, N)
    w = rng.standard_normal((N, d)) * cfg.sigma_w
    a = rng.standard_normal(N) * cfg.sigma_a
    b = rng.uniform(-cfg.b_max, cfg.b_max, N)
    return Params(c[None], w[None], a[None], b[None])


def sample_data(chain: MarkovChain, target: Target, cfg: RNNConfig, n_burn: int, n_train: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One replica's data: states ``(n_burn + n_train,)`` and targets ``(n_train,)``.

    Training step ``k`` sees state ``path[n_burn + k]``; its target uses the
    last ``m`` inputs (``n_burn >= m - 1`` guarantees they exist).
    """
    path = chain.simulate(n_burn + n_train, rng)
    m = target.m
    idx = np.arange(n_burn, n_burn + n_train)[:, None] + np.arange(-m + 1, 1)[None, :]
    y = target(chain.inputs[path[idx]]) if n_train else np.zeros(0)
    if cfg.noise_std > 0:
        y = y + cfg.noise_std * rng.standard_normal(n_train)
    return path, y


def _segment_reference(p: Params, state, xs, ys, eta, scale, activation, rtrl, update=True):
    """Advance ``xs.shape[1]`` steps in place (the plain NumPy reference engine).

    ``state = [S (R,N), J (R,N,d+2)]``; ``xs (R, n, d)``, ``ys (R, n)``.
    """
    act = ACTIVATIONS[activation][0]
    S, J = state
    d = xs.shape[2]
    for k in range(xs.shape[1]):
        x = xs[:, k, :]
        u = np.einsum("rnd,rd->rn", p.w, x) + p.a + p.b * S
        s_new, ds = act(u)
        if rtrl:
            bJ = p.b[..., None] * J
            J[..., :d] = ds[..., None] * (x[:, None, :] + bJ[..., :d])
            J[..., d] = ds * (1.0 + bJ[..., d])
            J[..., d + 1] = ds * (S + bJ[..., d + 1])
        else:
            J[..., :d] = ds[..., None] * x[:, None, :]
            J[..., d] = ds
            J[..., d + 1] = ds * S
        S[...] = s_new
        if not update:
            continue
        yhat = scale * np.einsum("rn,rn->r", p.c, S)
        g = (eta * scale) * (ys[:, k] - yhat)
        gc = g[:, None] * p.c
        p.c += g[:, None] * S
        p.w += gc[..., None] * J[..., :d]
        p.a += gc * J[..., d]
        p.b += gc * J[..., d + 1]


def _segment_fast(p: Params, state, xs, ys, eta, scale, activation, rtrl, update=True):
    """Compiled engine with the reference's semantics (:mod:`distntk._fast`); in place."""
    if activation not in ("tanh", "sigmoid"):
        raise ModelError(f"the fast engine knows activations 'tanh' and 'sigmoid', not {activation!r}")
    S, J = state
    run = _fast.segment_kernel(xs.shape[2], bool(rtrl), activation == "sigmoid")
    run(p.c, p.w, p.a, p.b, S, J, np.ascontiguousarray(xs, dtype=float), np.ascontiguousarray(ys, dtype=float),
        float(eta), float(scale), bool(update))


ENGINES: dict[str, Callable] = {"reference": _segment_reference, "fast": _segment_fast}


def memory_and_jacobian(w: np.ndarray, a: np.ndarray, b: np.ndarray, xs: np.ndarray, activation: str = "tanh",
                        rtrl: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Memory state and Jacobian after running from 0 over input windows.

    ``w (Q, d)``, ``a, b (Q,)`` are parameter points; ``xs (H, L, d)`` the
    inputs of ``H`` windows (oldest first).  Returns ``s (Q, H)`` and
    ``J (Q, H, d + 2)`` ordered ``(w, a, b)``.
    """
    act = ACTIVATIONS[activation][0]
    Q, d = w.shape
    H, L, _ = xs.shape
    s = np.zeros((Q, H))
    J = np.zeros((Q, H, d + 2))
    bb = b[:, None]
    wa = np.einsum("qd,hld->qhl", w, xs) + a[:, None, None]
    for j in range(L):
        s_new, ds = act(wa[:, :, j] + bb * s)
        prev = bb[..., None] * J if rtrl else 0.0
        xj = np.broadcast_to(xs[None, :, j, :], (Q, H, d))
        J = ds[..., None] * (np.concatenate([xj, np.ones((Q, H, 1)), s[..., None]], axis=2) + prev)
        s = s_new
    return s, J


def probe_outputs(p: Params, probe_x: np.ndarray, scale: float, activation: str) -> np.ndarray:
    """``g^N(z) = N^{-beta} sum_i c^i s(theta^i; z)`` for probe inputs ``(P, L, d)``; returns ``(R, P)``."""
    act = ACTIVATIONS[activation][0]
    R, N = p.c.shape
    P, L, _ = probe_x.shape
    s = np.zeros((R, N, P))
    for j in range(L):
        u = np.einsum("rnd,pd->rnp", p.w, probe_x[:, j, :]) + p.a[..., None] + p.b[..., None] * s
        s = act(u)[0]
    return scale * np.einsum("rn,rnp->rp", p.c, s)


def _prefix_tree(histories: np.ndarray):
    """Levels of the prefix tree of ``histories (H, L)``: per level ``(parent, state)``.

    Windows run oldest first, so windows sharing a prefix share the memory
    state along it; level ``j`` holds the distinct prefixes of length ``j + 1``.
    The last level is ordered like ``histories`` (which are sorted).
    """
    levels = []
    prev_inv = np.zeros(len(histories), dtype=np.int64)
    for j in range(histories.shape[1]):
        keys = prev_inv * (histories.max() + 1) + histories[:, j]
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        levels.append((prev_inv[first], histories[first, j]))
        prev_inv = inv
    return levels, prev_inv


def history_outputs(p: Params, inputs: np.ndarray, histories: np.ndarray, scale: float, activation: str,
                    tree: object | None = None) -> np.ndarray:
    """``g^N(z)`` on every window of ``histories (H, L)``; returns ``(R, H)``.

    Walks the prefix tree, so the cost is ``N`` times the number of distinct
    prefixes (at most ``2H`` for a binary chain) per replica, not ``N H L``.
    """
    act = ACTIVATIONS[activation][0]
    levels, last = tree if tree is not None else _prefix_tree(histories)
    R, N = p.c.shape
    out = np.empty((R, len(histories)))
    for r in range(R):
        s = np.zeros((N, 1))
        wx = p.w[r] @ inputs.T + p.a[r][:, None]  # (N, S): w.x_s + a for every state
        for parent, state in levels:
            s = act(wx[:, state] + p.b[r][:, None] * s[:, parent])[0]
        out[r] = scale * (p.c[r] @ s)[last]
    return out


def _window_outputs_fast(p: Params, inputs: np.ndarray, windows: np.ndarray, scale: float, activation: str,
                        lcp: np.ndarray | None = None) -> np.ndarray:
    """Compiled ``g^N(z)`` on ``windows (H, L)`` (any order; sorted shares most), ``(R, H)``."""
    windows = np.ascontiguousarray(windows, dtype=np.int64)
    lcp = _fast.common_prefix(windows) if lcp is None else lcp
    out = np.empty((p.c.shape[0], len(windows)))
    _fast.window_kernel(activation == "sigmoid")(p.c, p.w, p.a, p.b, np.ascontiguousarray(inputs, dtype=float),
                                                 windows, lcp, float(scale), out)
    return out


class _DataStream:
    """One replica's data, drawn in consecutive pieces.

    Concatenated, the pieces equal :func:`sample_data` bit for bit: that draws
    ``n = n_burn + n_train`` uniforms (the path), then ``n_train`` normals (the
    noise) from one PCG64 generator.  Here the path generator is the same and the
    noise comes from a second copy advanced past the ``n`` uniforms
    (``Generator.random`` takes one 64-bit output per double, and neither it nor
    ``standard_normal`` buffers anything between calls, so piece sizes do not
    matter).  Targets are evaluated piecewise, which assumes (as every built-in
    does) that a target acts row by row.
    """

    def __init__(self, chain: MarkovChain, target: Target, cfg: RNNConfig, n_burn: int, n_train: int, seed):
        self.chain, self.target = chain, target
        self.n_burn, self.n_train = n_burn, n_train
        self.noise_std = cfg.noise_std
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._noise = None
        if cfg.noise_std > 0:
            bg = np.random.PCG64(seed)
            bg.advance(n_burn + n_train)
            self._noise = np.random.Generator(bg)
        self._path = np.empty(0, dtype=np.int64)  # the last m - 1 states drawn (for target windows)
        self._drawn = 0

    def _states(self, n: int) -> np.ndarray:
        if self._drawn == 0:
            new = self.chain.simulate(n, self._rng)
        else:
            u = np.empty(n + 1)
            u[1:] = self._rng.random(n)
            walk = np.empty(n + 1, dtype=np.int64)
            walk[0] = self._path[-1]
            _chain_walk(self.chain._cumulative, u, walk)
            new = walk[1:]
        self._drawn += n
        return new

    def burn_in(self) -> np.ndarray:
        """Inputs of the ``n_burn`` burn-in steps, ``(n_burn, d)``."""
        path = self._states(self.n_burn)
        self._path = path[len(path) - (self.target.m - 1):] if self.target.m > 1 else path[-1:]
        return self.chain.inputs[path]

    def train(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``(n, d)`` and targets ``(n,)`` of the next ``n`` training steps."""
        m = self.target.m
        path = np.concatenate([self._path[len(self._path) - (m - 1):] if m > 1 else self._path[:0],
                               self._states(n)])
        idx = np.arange(n)[:, None] + np.arange(m)[None, :]
        y = self.target(self.chain.inputs[path[idx]]) if n else np.zeros(0)
        if self._noise is not None:
            y = y + self.noise_std * self._noise.standard_normal(n)
        self._path = path[len(path) - max(m - 1, 1):]
        return self.chain.inputs[path[m - 1:]], y


def run_replicas(
    cfg: RNNConfig,
    chain: MarkovChain,
    target: Target,
    N: int,
    T: float,
    times: Sequence[float],
    probes: np.ndarray,
    root: int,
    width_key: int,
    init: int,
    data: list[int] | np.ndarray,
    L: int,
    engine: str = "fast",
    risk: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    chunk: int | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Train ``len(data)`` replicas sharing initialisation ``init``.

    The ``R = len(data)`` replicas are trained together, vectorised; each draws its data from
    its own seed, so a replica's results do not depend on the others (the ``distntk.rnn`` module docstring, "Seeds").

    Parameters
    ----------
    cfg : RNNConfig
        Model and training hyper-parameters.
    chain : MarkovChain
        The data chain.
    target : Target
        The target ``f``.
    N : int
        The width, ``>= 1``.
    T : float
        The horizon in training time: ``floor(T N)`` updates.
    times : sequence of float
        The recording grid, sorted, within ``[0, T]``.
    probes : numpy.ndarray
        The probe windows, ``(P, L)`` states, oldest first.
    root : int
        The root seed.
    width_key : int
        The width used in the seed keys (normally ``N``).
    init : int
        The initialisation index.
    data : list of int or numpy.ndarray
        The data seeds, one replica each.
    L : int
        The window length: the default burn-in (``cfg.burn_in`` may not be shorter).
    engine : str, optional
        A key of ``ENGINES``: ``"reference"`` (plain NumPy) or ``"fast"``, which also evaluates
        the records with the compiled window kernel.
    risk : tuple of numpy.ndarray or None, optional
        ``(histories, pi, f)``: also record the stationary risk
        ``1/2 sum_z pi(z) (f(z) - g(z))^2`` over these histories.
    chunk : int or None, optional
        The data are drawn ``chunk`` steps at a time (``None``: ``max(256, N // 8)``); the
        results do not depend on it.

    Returns
    -------
    output : numpy.ndarray
        ``(R, n_times, P)``: ``g^N_t`` on the probe windows at each recording time.
    risk : numpy.ndarray
        ``(R, n_times)``, the stationary risk; returned, as a second array, only when ``risk``
        is given.

    Raises
    ------
    ModelError
        If the engine is unknown, the time grid is not sorted within ``[0, T]``, ``N < 1``, or
        the burn-in is shorter than ``L``.
    """
    if engine not in ENGINES:
        raise ModelError(f"engine is {engine!r}; expected one of {sorted(ENGINES)}")
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or np.any(np.diff(times) < 0) or times[0] < 0 or times[-1] > T:
        raise ModelError(f"time grid must be sorted within [0, T = {T}]")
    if N < 1:
        raise ModelError(f"width is {N}; expected N >= 1")
    B = L if cfg.burn_in is None else int(cfg.burn_in)
    if B < max(L, target.m - 1):
        raise ModelError(f"burn_in is {B}; expected at least L = {L}")
    K = int(np.floor(T * N))
    rec_steps = np.floor(times * N + 1e-9).astype(int)
    R = len(data)
    d = chain.dim
    p0 = init_params(cfg, N, d, np.random.default_rng(init_seed(root, width_key, init)))
    p = Params(*(np.repeat(arr, R, axis=0) for arr in (p0.c, p0.w, p0.a, p0.b)))
    # a chain with its own ``stream`` (a continuous source, distntk.continuous.ContinuousInputs) draws its data itself
    make = getattr(chain, "stream", None) or (lambda *a: _DataStream(chain, *a))
    streams = [make(target, cfg, B, K, data_seed(root, width_key, init, j)) for j in data]
    chunk = max(256, N // 8) if chunk is None else max(1, int(chunk))
    state = [np.zeros((R, N)), np.zeros((R, N, d + 2))]
    seg = ENGINES[engine]
    eta, scale, rtrl = cfg.eta(N), cfg.scale(N), cfg.gradient == "rtrl"
    xs_burn = np.stack([s.burn_in() for s in streams]) if R else np.empty((0, B, d))
    seg(p, state, xs_burn, np.empty((R, 0)), eta, scale, cfg.activation, rtrl, False)
    probes = np.asarray(probes)
    if engine == "fast":
        lcp_probes = _fast.common_prefix(probes)
        probe_out = lambda: _window_outputs_fast(p, chain.inputs, probes, scale, cfg.activation, lcp_probes)  # noqa: E731
    else:
        probe_x = chain.inputs[probes]
        probe_out = lambda: probe_outputs(p, probe_x, scale, cfg.activation)  # noqa: E731
    out = np.empty((R, len(times), len(probes)))
    if risk is not None:
        hist, pi_h, f_h = risk
        hist = np.asarray(hist)
        if engine == "fast":
            lcp_hist = _fast.common_prefix(hist)
            hist_out = lambda: _window_outputs_fast(p, chain.inputs, hist, scale, cfg.activation, lcp_hist)  # noqa: E731
        else:
            tree = _prefix_tree(hist)
            hist_out = lambda: history_outputs(p, chain.inputs, hist, scale, cfg.activation, tree)  # noqa: E731
        risk_out = np.empty((R, len(times)))
    done = 0
    for i, k in enumerate(rec_steps):
        while done < k:
            n = min(k - done, chunk)
            pieces = [s.train(n) for s in streams]
            xs = np.stack([x for x, _ in pieces])
            ys = np.stack([y for _, y in pieces])
            seg(p, state, xs, ys, eta, scale, cfg.activation, rtrl, True)
            done += n
        out[:, i, :] = probe_out()
        if risk is not None:
            g = hist_out()
            for r in range(R):  # row by row: a matrix-vector product's rounding can depend on R
                risk_out[r, i] = 0.5 * np.dot((f_h - g[r]) ** 2, pi_h)
    return out if risk is None else (out, risk_out)


def contraction_seed(root: int, width: int, init: int) -> np.random.SeedSequence:
    """Seed of the second memory start in :func:`distntk.memory.memory_contraction` (key 2, beside 0 and 1)."""
    return np.random.SeedSequence(int(root), spawn_key=(2, int(width), int(init)))


__all__ += ["contraction_seed"]
