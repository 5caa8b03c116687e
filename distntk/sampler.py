"""A continuous-state chain given as code: ``[chain] kind = "sampler"`` (docs/model.md#sampler).

The contract.  ``[chain] sampler = "module:function"`` names a function

    function(rng: numpy.random.Generator, n_paths: int, n_steps: int, **params) -> array (n_paths, n_steps, d)

that draws ``n_paths`` independent paths of ``n_steps`` consecutive values of
a stationary ergodic Markov chain on ``R^d`` (``d = chain.dim``, default 1),
each path started from the stationary law, and

* draws every random number from ``rng``, so that the same generator state
  gives the same array (no global seed, no ``numpy.random.*`` module
  functions, no clock);
* returns real numbers, finite, at most ``1e6`` in absolute value, of exactly
  that shape (a list of lists is accepted; it is converted to float64);
* takes the spec's ``chain.params`` table as keyword arguments.

A chain the function cannot start stationary gets ``chain.warmup = k``: every
call then asks for ``n_steps + k`` steps and drops the first ``k`` of each
path.  ``chain.mixing``, a number in ``[0, 1)``, is the geometric rate at which
the chain forgets its past; it sets the lag window of the Poisson sum
(docs/model.md (7.4)); without it the rate is estimated along the limit's
segments (:func:`distntk.continuous.estimate_mixing`).

What distntk draws, each from its own seed (so the same spec gives the same
bits anywhere): a pilot of 16 paths of 1024 steps (``SeedSequence([seed,
0xA121, 2**29])``) whose marginal quantiles give the default probes and the
finite chains below; the limit's basis windows (``n_basis`` paths of ``L``
steps), its segments (one path of ``segment_steps + L - 1`` steps each) and
the replicas' risk windows (1024 paths of ``L`` steps), seeded as the AR(1)'s
(:mod:`distntk.continuous`); and each replica's training path, one call of
``n_burn + floor(T N)`` steps on ``PCG64(data_seed)`` (the per-replica key of
:func:`distntk.rnn.data_seed`), held whole for the replica's training.  Two
calls of 2 paths x 16 steps on one seed (``SeedSequence([seed, 0xA121,
2**28])``) must agree, else the sampler is refused as not deterministic.

The finite chains.  :meth:`Sampler.rule_chain` (``n`` states per coordinate):
per coordinate the pilot's quantiles at the midpoints of the Binomial(n - 1,
1/2) distribution function, with those probabilities, coordinates independent
and steps i.i.d.: the analogue of the AR(1)'s Rouwenhorst chain (whose
``n = 9`` points span ``+-sqrt(8)`` sd with the same weights) for choosing the
quadrature rule.  With ``n = 2`` it is the experiment's ``chain``, which only
counts windows (``L`` from ``training.memory_tol``) and checks the target.

Default probes: the constant windows at the pilot's median and at its
``Phi(+-1)`` quantiles (84.1 % and 15.9 %; ``+-1`` sd for a Gaussian
marginal), per coordinate, rounded to a step of ``10^(floor(log10 s) - 2)``
(``s`` half the distance between the two outer quantiles, about one sd: three
digits of the marginal's scale) and to 4 significant digits, so that the
spec's hash does not hang on the last bits of a floating-point sum and a
median near 0 prints as one.

Every problem with the function's output is a one-line :class:`SamplerError`
naming ``chain.sampler``, at parse time on the pilot and wherever a later call
breaks the contract.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import binom, norm

from .chain import ChainError, MarkovChain, markov_chain

__all__ = ["Sampler", "SamplerError", "make_sampler", "PILOT_PATHS", "PILOT_STEPS", "RESERVED"]

PILOT_PATHS = 16
PILOT_STEPS = 1024
RESERVED = ("rng", "n_paths", "n_steps")  # the positional arguments: no chain.params key may take their names
_MAX_ABS = 1e6
_QUANTILES = 1024  # the pilot's marginal is kept as this many quantiles per coordinate
_PROBE_P = (0.5, float(norm.cdf(1.0)), float(norm.cdf(-1.0)))


class SamplerError(ChainError):
    """A sampler that cannot be used or broke its contract; the message names ``chain.sampler``."""


def _error(key: str, msg: str) -> SamplerError:
    """``chain.<key>: <msg>``: the key in the message (a broken call on an actor has no spec to name it) and in
    ``SamplerError.key``."""
    return SamplerError(f"chain.{key}: {msg}", key=key)


def _one_line(x, n: int = 160) -> str:
    s = " ".join(str(x).split())
    return s if len(s) <= n else s[:n - 3] + "..."


@dataclass(frozen=True, eq=False)
class Sampler:
    """A validated sampler, a :class:`~distntk.continuous.Source`. Build it with :func:`make_sampler`."""

    name: str  # "module:function"
    fn: Callable = field(repr=False)
    dim: int
    params: tuple  # sorted (key, value) pairs
    warmup: int
    mixing: float | None
    quantiles: np.ndarray = field(repr=False)  # (_QUANTILES, d), the pilot's marginal
    kind = "sampler"

    def draw(self, rng: np.random.Generator, n_paths: int, n_steps: int) -> np.ndarray:
        """``n_paths`` stationary paths of ``n_steps`` values, ``(n_paths, n_steps, d)`` float64, checked."""
        want = (int(n_paths), int(n_steps) + self.warmup, self.dim)
        try:
            out = self.fn(rng, want[0], want[1], **dict(self.params))
        except (Exception, SystemExit) as exc:
            raise _error("sampler", f"{self.name!r} failed: {type(exc).__name__}: {_one_line(exc)}") from None
        try:
            x = np.asarray(out)
        except (ValueError, TypeError):
            x = None
        if x is None or x.dtype.kind not in "fiu":
            what = type(out).__name__ if x is None else f"dtype {x.dtype}"
            raise _error("sampler", f"{self.name!r} returned {what}; expected an array of real numbers of shape "
                                    f"(n_paths, n_steps, d) = {want}")
        if x.shape != want:
            raise _error("sampler", f"{self.name!r} returned shape {x.shape}; expected (n_paths, n_steps, d) = "
                                    f"{want} (d = chain.dim)")
        x = np.ascontiguousarray(x[:, self.warmup:], dtype=np.float64)
        if not np.all(np.isfinite(x)) or np.max(np.abs(x), initial=0.0) > _MAX_ABS:
            raise _error("sampler", f"{self.name!r} returned values that are not finite or above {_MAX_ABS:g} "
                                    "in absolute value; expected finite inputs")
        return x

    def simulate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One stationary path ``(n, d)``: one call with ``n_paths = 1``."""
        return self.draw(rng, 1, n)[0]

    def sample_windows(self, n: int, L: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent stationary windows ``(n, L, d)``: one call with ``n_paths = n``, ``n_steps = L``."""
        return self.draw(rng, n, L)

    def pieces(self, rng: np.random.Generator, n: int) -> "_WholePath":
        """A path of ``n`` values drawn whole (one call) on the first piece, then handed out in pieces."""
        return _WholePath(self, rng, n)

    @functools.cached_property
    def seconds_per_step(self) -> float:
        """CPU seconds per value of a one-path draw (how the replicas and the limit's segments draw), the
        fastest of 3 draws of 1 path x :data:`PILOT_STEPS` steps on their own seed: for the cost estimate
        (:mod:`distntk.cost`), measured on first use only (it runs the sampler)."""
        best = float("inf")
        for k in range(3):
            rng = np.random.default_rng(np.random.SeedSequence([0, 0xA121, 1 << 27, k]))
            t0 = time.process_time()
            self.draw(rng, 1, PILOT_STEPS)
            best = min(best, time.process_time() - t0)
        return best / (PILOT_STEPS + self.warmup)

    def quantile(self, p) -> np.ndarray:
        """The pilot's marginal quantiles at probabilities ``p``, ``(len(p), d)``."""
        probs = (np.arange(_QUANTILES) + 0.5) / _QUANTILES
        p = np.atleast_1d(np.asarray(p, dtype=float))
        return np.stack([np.interp(p, probs, self.quantiles[:, i]) for i in range(self.dim)], axis=1)

    def rule_chain(self, states: int) -> MarkovChain:
        """The finite i.i.d. chain on the pilot's quantiles (module docstring), at most ``states^d`` states."""
        pmf = binom.pmf(np.arange(states), states - 1, 0.5)
        mid = np.cumsum(pmf) - pmf / 2
        values = self.quantile(mid)  # (states, d)
        X, pi = np.zeros((1, 0)), np.ones(1)
        for i in range(self.dim):
            v, inv = np.unique(values[:, i], return_inverse=True)
            w = np.bincount(inv.ravel(), weights=pmf, minlength=len(v))
            X = np.concatenate([np.repeat(X, len(v), axis=0), np.tile(v[:, None], (len(X), 1))], axis=1)
            pi = np.kron(pi, w)
        pi = pi / pi.sum()
        return markov_chain(np.tile(pi, (len(pi), 1)), X)

    def default_probes(self, L: int) -> np.ndarray:
        """Constant windows at the pilot's median and ``Phi(+-1)`` quantiles, rounded (module docstring),
        ``(P, L, d)``."""
        q = self.quantile(_PROBE_P)
        half = (q[1] - q[2]) / 2  # about one sd
        step = np.where(half > 0, 10.0 ** (np.floor(np.log10(np.where(half > 0, half, 1.0))) - 2), 0.0)
        q = np.where(step > 0, np.round(q / np.where(step > 0, step, 1.0)) * step, q)
        q = np.vectorize(lambda v: float(f"{v:.4g}"))(q)
        rows = [r for i, r in enumerate(q) if not any(np.array_equal(r, s) for s in q[:i])]
        return np.stack([np.broadcast_to(r, (L, self.dim)) for r in rows]).astype(float)


class _WholePath:
    def __init__(self, sampler: Sampler, rng: np.random.Generator, n: int):
        self.sampler, self.rng, self.n = sampler, rng, n
        self.path, self.at = None, 0

    def take(self, n: int) -> np.ndarray:
        if self.path is None:
            self.path = self.sampler.simulate(self.n, self.rng)
        if self.at + n > len(self.path):
            raise _error("sampler", f"asked for {self.at + n} values of a path of {len(self.path)}")
        out = self.path[self.at:self.at + n]
        self.at += n
        return out


def _import(name: str) -> Callable:
    mod_name, _, fn_name = name.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (Exception, SystemExit) as exc:  # importing user code may fail in any way
        raise _error("sampler", f"cannot import {name!r} ({type(exc).__name__}: {_one_line(exc)}); "
                                "expected 'module:function'") from None
    if not callable(fn):
        raise _error("sampler", f"{name!r} is not a function; expected 'module:function'")
    return fn


def make_sampler(name: str, dim: int = 1, params: dict | None = None, warmup: int = 0, mixing: float | None = None,
                 seed: int = 0, fn: Callable | None = None) -> Sampler:
    """Import ``name`` (unless ``fn`` is given), check it against the contract on a pilot draw and keep the
    pilot's marginal (module docstring); :class:`SamplerError` naming the key otherwise.  Importing runs the
    module: call this only for code the user allowed."""
    params = dict(params or {})
    if fn is None:
        fn = _import(name)
    bad = [k for k in params if k in RESERVED or not k.isidentifier()]
    if bad:
        raise _error("params", f"{bad[0]!r} is not a keyword argument a sampler can take (not "
                               f"{', '.join(RESERVED)}, an identifier)")
    try:
        inspect.signature(fn).bind(None, 1, 1, **params)
    except TypeError as exc:
        raise _error("params", f"{name!r} does not take these arguments: {_one_line(exc)}; expected "
                               "function(rng, n_paths, n_steps, **params)") from None
    except ValueError:  # no signature (a builtin): the call will tell
        pass
    s = Sampler(name=name, fn=fn, dim=int(dim), params=tuple(sorted(params.items())), warmup=int(warmup),
                mixing=None if mixing is None else float(mixing), quantiles=np.zeros((_QUANTILES, int(dim))))
    twice = [s.draw(np.random.default_rng(np.random.SeedSequence([seed, 0xA121, 1 << 28])), 2, 16) for _ in range(2)]
    if not np.array_equal(twice[0], twice[1]):
        raise _error("sampler", f"{name!r} is not deterministic given its generator (two calls on the "
                                "same seed differ); expected every random number drawn from the rng argument")
    pilot = s.draw(np.random.default_rng(np.random.SeedSequence([seed, 0xA121, 1 << 29])), PILOT_PATHS, PILOT_STEPS)
    q = np.quantile(pilot.reshape(-1, s.dim), (np.arange(_QUANTILES) + 0.5) / _QUANTILES, axis=0)
    q.setflags(write=False)
    return Sampler(name=name, fn=fn, dim=s.dim, params=s.params, warmup=s.warmup, mixing=s.mixing, quantiles=q)
