"""The finite-N RNN with diagonal recurrent weights and its online SGD (MODEL.md 2).

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

The per-segment update is a swappable kernel: :data:`KERNELS` maps a name to
a function ``kernel(params, state, xs, ys, eta, scale, activation, rtrl, update)``
that advances ``xs.shape[1]`` steps in place.  ``"reference"`` is plain NumPy
and is the oracle the fast kernels are tested against.

Seeds.  Replica ``(width, init, data)`` draws its initialisation from
``SeedSequence(root, spawn_key=(0, width, init))`` and its data (chain path,
then noise) from ``SeedSequence(root, spawn_key=(1, width, init, data))``, so
any replica is recomputed bit for bit anywhere, whatever the blocking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .chain import MarkovChain
from .target import Target

__all__ = [
    "ModelError",
    "RNNConfig",
    "Params",
    "ACTIVATIONS",
    "KERNELS",
    "init_seed",
    "data_seed",
    "init_params",
    "sample_data",
    "memory_and_jacobian",
    "probe_outputs",
    "history_outputs",
    "run_replicas",
]


class ModelError(ValueError):
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
    """Model and training hyper-parameters (MODEL.md 2)."""

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
            raise ModelError(f"activation is {self.activation!r}; expected one of {sorted(ACTIVATIONS)}")
        if not 0.5 < self.beta < 1.0:
            raise ModelError(f"beta is {self.beta}; expected 1/2 < beta < 1")
        if not self.alpha > 0:
            raise ModelError(f"alpha is {self.alpha}; expected alpha > 0")
        for name in ("sigma_w", "sigma_a", "b_max", "noise_std"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ModelError(f"{name} is {v}; expected a finite number >= 0")
        if self.gradient not in ("rtrl", "truncated"):
            raise ModelError(f"gradient is {self.gradient!r}; expected 'rtrl' or 'truncated'")
        if self.rho >= 1.0:
            raise ModelError(
                f"contraction factor rho = b_max * sup|sigma'| = {self.rho:g}; expected rho < 1 "
                f"(b_max < {1.0 / ACTIVATIONS[self.activation][1]:g} for {self.activation})"
            )
        if self.burn_in is not None and (int(self.burn_in) != self.burn_in or self.burn_in < 0):
            raise ModelError(f"burn_in is {self.burn_in}; expected an integer >= L")

    @property
    def rho(self) -> float:
        return self.b_max * ACTIVATIONS[self.activation][1]

    def eta(self, N: int) -> float:
        return self.alpha * float(N) ** (2 * self.beta - 2)

    def scale(self, N: int) -> float:
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


def sample_data(chain: MarkovChain, target: Target, cfg: RNNConfig, n_burn: int, n_train: int, rng):
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
    """Advance ``xs.shape[1]`` steps in place (plain NumPy reference kernel).

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


KERNELS: dict[str, Callable] = {"reference": _segment_reference}


def memory_and_jacobian(w, a, b, xs, activation="tanh", rtrl=True):
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
                    tree=None) -> np.ndarray:
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


def run_replicas(
    cfg: RNNConfig,
    chain: MarkovChain,
    target: Target,
    N: int,
    T: float,
    times,
    probes,
    root: int,
    width_key: int,
    init: int,
    data: list[int] | np.ndarray,
    L: int,
    kernel: str = "reference",
    risk: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
):
    """Train ``len(data)`` replicas sharing initialisation ``init``.

    Returns ``output (R, n_times, P)`` on the probe windows ``(P, L)`` at the
    sorted grid ``times`` in ``[0, T]``; with ``risk = (histories, pi, f)`` also
    the stationary risk ``1/2 sum_z pi(z) (f(z) - g(z))^2`` as ``(R, n_times)``,
    returned as a second array.  ``width_key`` is the width used in the seed
    keys (normally ``N``).
    """
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
    xs = np.empty((R, B + K, d))
    ys = np.empty((R, K))
    for r, j in enumerate(data):
        path, y = sample_data(chain, target, cfg, B, K, np.random.default_rng(data_seed(root, width_key, init, j)))
        xs[r] = chain.inputs[path]
        ys[r] = y
    probe_x = chain.inputs[np.asarray(probes)]
    state = [np.zeros((R, N)), np.zeros((R, N, d + 2))]
    seg = KERNELS[kernel]
    eta, scale, rtrl = cfg.eta(N), cfg.scale(N), cfg.gradient == "rtrl"
    seg(p, state, xs[:, :B], ys[:, :0], eta, scale, cfg.activation, rtrl, False)
    out = np.empty((R, len(times), len(probe_x)))
    if risk is not None:
        hist, pi_h, f_h = risk
        tree = _prefix_tree(np.asarray(hist))
        risk_out = np.empty((R, len(times)))
    done = 0
    for i, k in enumerate(rec_steps):
        if k > done:
            seg(p, state, xs[:, B + done : B + k], ys[:, done:k], eta, scale, cfg.activation, rtrl, True)
            done = k
        out[:, i, :] = probe_outputs(p, probe_x, scale, cfg.activation)
        if risk is not None:
            g = history_outputs(p, chain.inputs, hist, scale, cfg.activation, tree)
            risk_out[:, i] = 0.5 * ((f_h - g) ** 2) @ pi_h
    return out if risk is None else (out, risk_out)
