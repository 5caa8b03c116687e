"""The memory fixed point of a finite-N network, measured (docs/model.md#memory).

:func:`memory_contraction` runs one finite-N
network twice over the same data path with frozen parameters, from
``S_{-1} = 0`` and from a random ``S_{-1}``.  Each unit contracts by
``|b^i sigma'(u^i_k)| <= rho`` per step, so ``max_i |S^i_k - S'^i_k| <=
rho^{k+1} max_i |S^i_{-1} - S'^i_{-1}|``; the fitted decay rate per step is
compared with ``log rho``.  (During training ``b`` moves by ``O(N^{beta-1})``
per unit time, so the frozen-parameter rate is the training-time rate to that
order.)

The second start ``S_{-1}`` is drawn from :func:`distntk.rnn.contraction_seed`,
the seed key beside ``init_seed`` and ``data_seed``.  The report calls
:func:`memory_contraction` with the chain and the model rebuilt from a store's
data (:func:`distntk.store.store_model`); no target is needed.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .chain import MarkovChain
from .rnn import ACTIVATIONS, ENGINES, RNNConfig, contraction_seed, data_seed, init_params, init_seed

__all__ = ["memory_contraction"]


def memory_contraction(cfg: RNNConfig, chain: MarkovChain, width: int, n_steps: int | None = None,
                       seed: int = 0, init: int = 0, tol: float = 1e-12) -> xr.Dataset:
    """Distance between two memory trajectories of one network, same data, different start.

    Parameters come from ``init_params`` with the store's seed keys for
    ``(width, init)``; the data path is the start of replica
    ``(width, init, 0)``'s path (same ``data_seed`` generator);
    trajectory A starts from ``S_{-1} = 0``, B from ``S_{-1}`` uniform on the
    activation's range.  Parameters stay frozen (docs/model.md#memory is about fixed
    ``theta``).

    Parameters
    ----------
    cfg : RNNConfig
        Model hyper-parameters (``rho``, the activation, the initial law).
    chain : MarkovChain
        The data chain.
    width : int
        The width ``N``.
    n_steps : int or None, optional
        The steps to run; ``None``: the steps needed for ``rho^k`` to reach ``tol``.
    seed : int, optional
        The root seed (a store's ``seed``).
    init : int, optional
        The initialisation index.
    tol : float, optional
        Sets the default ``n_steps``; distances below ``max(tol, 1e3 eps)`` are round-off and
        left out of the fitted rate.

    Returns
    -------
    xarray.Dataset
        On ``step`` (``-1`` the start, then ``0..``): ``distance`` (max over units),
        ``distance_rms`` and ``bound`` (``rho^{k+1} distance[-1]``).  Attributes ``rate``
        (fitted slope of ``log distance`` per step over the steps above round-off, with
        ``rate_se``), ``log_rho``, ``log_max_b`` (``log(max_i |b^i| sup|sigma'|)``, the sharper
        bound of this draw), ``bound_holds``, and ``width``, ``init``, ``seed``, ``rho``.
    """
    rho = cfg.rho
    if n_steps is None:
        n_steps = 1 if rho == 0 else int(np.ceil(np.log(tol) / np.log(rho))) + 1
    N, d = int(width), chain.dim
    p = init_params(cfg, N, d, np.random.default_rng(init_seed(seed, N, init)))
    p = type(p)(*(np.repeat(a, 2, axis=0) for a in (p.c, p.w, p.a, p.b)))
    path = chain.simulate(n_steps, np.random.default_rng(data_seed(seed, N, init, 0)))
    xs = np.repeat(chain.inputs[path][None], 2, axis=0)  # (2, n, d)
    lo = 0.0 if cfg.activation == "sigmoid" else -1.0
    start = np.random.default_rng(contraction_seed(seed, N, init)).uniform(lo, 1.0, N)
    S = np.zeros((2, N))
    S[1] = start
    state = [S, np.zeros((2, N, d + 2))]
    seg = ENGINES["reference"]
    dist = [np.max(np.abs(S[0] - S[1]))]
    rms = [np.sqrt(np.mean((S[0] - S[1]) ** 2))]
    for k in range(n_steps):
        seg(p, state, xs[:, k : k + 1], np.zeros((2, 0)), cfg.eta(N), cfg.scale(N), cfg.activation,
            cfg.gradient == "rtrl", False)
        diff = state[0][0] - state[0][1]
        dist.append(np.max(np.abs(diff)))
        rms.append(np.sqrt(np.mean(diff**2)))
    dist = np.array(dist)
    steps = np.arange(-1, n_steps)
    bound = dist[0] * rho ** (steps + 1.0)
    use = dist > max(tol, 1e3 * np.finfo(float).eps)
    if use.sum() >= 2:
        A = np.stack([np.ones(use.sum()), steps[use]], axis=1)
        coef, res, *_ = np.linalg.lstsq(A, np.log(dist[use]), rcond=None)
        rate = float(coef[1])
        dof = use.sum() - 2
        s2 = float(res[0]) / dof if dof > 0 and res.size else 0.0
        rate_se = float(np.sqrt(s2 * np.linalg.inv(A.T @ A)[1, 1]))
    else:
        rate, rate_se = np.nan, np.nan
    max_b = float(np.max(np.abs(p.b[0])))
    return xr.Dataset(
        {"distance": ("step", dist), "distance_rms": ("step", np.array(rms)), "bound": ("step", bound)},
        coords={"step": steps},
        attrs={
            "width": N, "init": int(init), "seed": int(seed), "rho": rho,
            "rate": rate, "rate_se": rate_se,
            "log_rho": float(np.log(rho)) if rho > 0 else -np.inf,
            "log_max_b": float(np.log(max_b * ACTIVATIONS[cfg.activation][1])) if max_b > 0 else -np.inf,
            "bound_holds": bool(np.all(dist <= bound * (1 + 1e-9) + 1e-15)),
        },
    )
