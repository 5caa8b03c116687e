"""Samplers for the tests of ``[chain] kind = "sampler"`` (distntk.sampler, docs/model.md#sampler).

:func:`ar1` draws the Gaussian AR(1) ``X_{k+1} = phi X_k + sigma eps_k`` started stationary, step by step,
its normal variates by inversion of uniforms (``ndtri(rng.random(...))``, step-major): the same law as
``[chain] kind = "ar1"`` from other random bits than :meth:`distntk.ar1.AR1.simulate` (ziggurat normals),
so that the two kinds give independent Monte Carlo estimates of the same limit.  The others break the
sampler's contract, one way each.
"""

import time

import numpy as np
from scipy.special import ndtri


def ar1(rng, n_paths, n_steps, phi=0.5, sigma=0.6):
    sd = sigma / np.sqrt(1.0 - phi**2)
    x = np.empty((n_paths, n_steps, 1))
    if n_steps == 0:
        return x
    z = ndtri(rng.random((n_steps, n_paths)))  # normal variates by inversion: other bits than standard_normal
    x[:, 0, 0] = sd * z[0]
    eps = z[1:]
    for k in range(1, n_steps):
        x[:, k, 0] = phi * x[:, k - 1, 0] + sigma * eps[k - 1]
    return x


def ar1_spin(rng, n_paths, n_steps, phi=0.5, sigma=0.6, spin=0.0):
    """:func:`ar1`, plus ``spin`` seconds of CPU per step (a busy wait on the process clock): a slow sampler."""
    until = time.process_time() + spin * n_steps
    while time.process_time() < until:
        pass
    return ar1(rng, n_paths, n_steps, phi, sigma)


def ar1_2d(rng, n_paths, n_steps, phi=(0.5, -0.3), sigma=(1.0, 0.5)):
    """Two independent AR(1) coordinates, ``d = 2`` (``phi`` and ``sigma`` lists)."""
    cols = [ar1(rng, n_paths, n_steps, p, s) for p, s in zip(phi, sigma, strict=True)]
    return np.concatenate(cols, axis=2)


def ar1_from_zero(rng, n_paths, n_steps, phi=0.5, sigma=0.6):
    """The AR(1) started at 0, not stationary: usable only with ``chain.warmup``."""
    x = np.zeros((n_paths, n_steps, 1))
    eps = rng.standard_normal((n_steps, n_paths))
    for k in range(1, n_steps):
        x[:, k, 0] = phi * x[:, k - 1, 0] + sigma * eps[k]
    return x


def wrong_shape(rng, n_paths, n_steps):
    return rng.standard_normal((n_paths, n_steps))


def not_finite(rng, n_paths, n_steps):
    x = rng.standard_normal((n_paths, n_steps, 1))
    x[-1, -1, 0] = np.nan
    return x


def complex_values(rng, n_paths, n_steps):
    return rng.standard_normal((n_paths, n_steps, 1)) * 1j


def global_state(rng, n_paths, n_steps):
    return np.random.standard_normal((n_paths, n_steps, 1))


def raises(rng, n_paths, n_steps):
    raise RuntimeError("no data\ntoday")
