"""The JAX peer: the training loop of docs/model.md#network as an NTK researcher would write it in JAX.

Not part of distntk: the benchmark's yardstick for the default engine.  The same
model and online SGD with real-time recurrent learning as
:func:`distntk.rnn._segment_reference` (tanh, ``J = (w, a, b)`` block ordered
as there), written the idiomatic JAX way: one step is a pure function of the
state of one replica (``c, w, a, b, S, J``), ``jax.lax.scan`` runs it over the
steps of a segment, ``jax.vmap`` maps it over ``R`` data sequences (which share
one initialisation in distntk, but each have their own parameters after the
first update), ``jax.jit`` compiles the whole segment for XLA, float64
throughout (``jax_enable_x64``).

``segment(params, state, xs, ys, eta, scale)`` takes and returns NumPy-shaped
arrays in the layout of :mod:`distntk.rnn` (``c, a, b, S (R, N)``, ``w (R, N, d)``,
``J (R, N, d + 2)``, ``xs (R, n, d)``, ``ys (R, n)``), so the benchmark feeds it
the same inputs as the fast and the reference kernels.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

__all__ = ["segment", "to_device"]


def _step(carry, inp, eta, scale):
    """One SGD step of one replica: forward, RTRL Jacobian, update (docs/model.md#network)."""
    c, w, a, b, S, J = carry  # (N,), (N, d), (N,), (N,), (N,), (N, d + 2)
    x, y = inp  # (d,), ()
    d = w.shape[1]
    u = w @ x + a + b * S
    s = jnp.tanh(u)
    ds = 1.0 - s * s
    drive = jnp.concatenate([jnp.broadcast_to(x, (S.shape[0], d)), jnp.ones((S.shape[0], 1)), S[:, None]], axis=1)
    J = ds[:, None] * (drive + b[:, None] * J)
    yhat = scale * jnp.dot(c, s)
    g = eta * scale * (y - yhat)
    gc = g * c
    c = c + g * s
    w = w + gc[:, None] * J[:, :d]
    a = a + gc * J[:, d]
    b = b + gc * J[:, d + 1]
    return (c, w, a, b, s, J), None


def _segment_one(c, w, a, b, S, J, xs, ys, eta, scale):
    carry, _ = jax.lax.scan(lambda cr, inp: _step(cr, inp, eta, scale), (c, w, a, b, S, J), (xs, ys))
    return carry


_segment = jax.jit(jax.vmap(_segment_one, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, None, None)))


def to_device(*arrays):
    """The arrays as JAX float64 arrays (copied once, outside the timed region)."""
    return tuple(jnp.asarray(x, dtype=jnp.float64) for x in arrays)


def segment(c, w, a, b, S, J, xs, ys, eta, scale):
    """Advance every replica ``xs.shape[1]`` steps; returns ``(c, w, a, b, S, J)`` (JAX arrays, ready)."""
    out = _segment(c, w, a, b, S, J, xs, ys, eta, scale)
    return jax.block_until_ready(out)
