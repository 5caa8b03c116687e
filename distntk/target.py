"""Targets: functions of the last ``m`` inputs (docs/model.md#data).

``Y_k = f(X_{k-m+1}, ..., X_k) + eps_k``.  A :class:`Target` wraps a vectorised
``fn(x) -> y`` with ``x`` of shape ``(n, m, d)`` (oldest input first, so
``x[:, -1]`` is ``X_k``) and ``y`` of shape ``(n,)``.

Built-in targets (weights are indexed by lag, lag 0 being ``X_k``; scalar
weights act on every input coordinate and are summed over them):

* ``linear``: ``f = sum_j weights[j] . X_{k-j}``
* ``tanh_linear``: ``f = tanh(sum_j inner[j] . X_{k-j}) + sum_j outer[j] . X_{k-j}``
  (docs/model.md#reference-case is ``inner = [1, 0.8]``, ``outer = [0, 0, 0.3]``)
* ``product``: ``f = prod_j X_{k-j}[0]`` over the last ``m`` lags

A user function is given as ``"module:function"`` plus its memory depth ``m``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import DistntkError

__all__ = ["Target", "TargetError", "make_target", "BUILTIN_TARGETS"]


class TargetError(DistntkError, ValueError):
    """An unknown or malformed target."""


@dataclass(frozen=True)
class Target:
    """A target ``f`` of the last ``m`` inputs, wrapping a vectorised function.

    Build one with ``make_target``.  Calling it, ``target(x)``, evaluates ``fn`` on inputs
    ``x`` of shape ``(n, m, d)`` and checks that the result has shape ``(n,)``.  Targets compare
    by ``name``, ``m`` and ``params`` (not by ``fn``).

    Parameters
    ----------
    name : str
        The built-in target's name, or ``"module:function"``.
    m : int
        The memory depth: ``f`` reads the last ``m`` inputs.
    fn : callable
        ``fn(x) -> y``, ``x`` of shape ``(n, m, d)`` (oldest input first, so ``x[:, -1]`` is
        ``X_k``) and ``y`` of shape ``(n,)``.
    params : tuple, optional
        The target's parameters as ``(name, value)`` pairs.
    """

    name: str
    m: int
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)
    params: tuple = ()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Evaluate on inputs ``(n, m, d)``."""
        y = np.asarray(self.fn(x), dtype=float)
        if y.shape != (x.shape[0],):
            raise TargetError(f"target {self.name} returned shape {y.shape}; expected ({x.shape[0]},)")
        return y

    def on_windows(self, inputs: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """``f`` on state windows: each window's last ``m`` states, through their inputs.

        Parameters
        ----------
        inputs : numpy.ndarray
            The input of each state, ``(S, d)`` (``MarkovChain.inputs``).
        windows : numpy.ndarray
            State windows, ``(n, L)`` with ``L >= m``, oldest state first.

        Returns
        -------
        numpy.ndarray
            ``f`` on each window, ``(n,)``.

        Raises
        ------
        TargetError
            If the windows are shorter than ``m``, or ``fn`` returns another shape than ``(n,)``.
        """
        windows = np.asarray(windows)
        if windows.shape[1] < self.m:
            raise TargetError(f"window length {windows.shape[1]} is shorter than the target memory m = {self.m}")
        return self(inputs[windows[:, -self.m :]])


def _lagged(x: np.ndarray, weights) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    # x[:, -1 - j] is lag j; scalar weights act on the sum of the coordinates
    return sum(w[j] * x[:, -1 - j].sum(axis=-1) for j in range(len(w)))


def _linear(weights):
    return Target("linear", len(weights), lambda x: _lagged(x, weights), (("weights", tuple(weights)),))


def _tanh_linear(inner, outer):
    m = max(len(inner), len(outer))
    return Target(
        "tanh_linear",
        m,
        lambda x: np.tanh(_lagged(x, inner)) + _lagged(x, outer),
        (("inner", tuple(inner)), ("outer", tuple(outer))),
    )


def _product(m):
    if int(m) != m:
        raise TargetError(f"target 'product': m is {m}; expected an integer >= 1")
    m = int(m)
    return Target("product", m, lambda x: np.prod(x[:, -m:, 0], axis=1), (("m", m),))


BUILTIN_TARGETS = {"linear": _linear, "tanh_linear": _tanh_linear, "product": _product}


def make_target(name: str, m: int | None = None, **params: object) -> Target:
    """A built-in target by name, or ``"module:function"`` with depth ``m``.

    The built-ins (``linear``, ``tanh_linear``, ``product``) are listed with their formulas in
    the ``distntk.target`` module docstring.

    Parameters
    ----------
    name : str
        A built-in target's name, or ``"module:function"``: that module is imported (its code
        runs) and ``function`` is ``fn`` (see ``Target``).
    m : int or None, optional
        The memory depth: required by a ``"module:function"``; ``product``'s parameter ``m``.
        The other built-ins take their depth from their weights.
    **params : object
        The built-in's parameters (``linear``: ``weights``; ``tanh_linear``: ``inner``,
        ``outer``; ``product``: ``m``), weights indexed by lag, lag 0 being ``X_k``.  With a
        ``"module:function"`` they are recorded in ``Target.params``, not passed to it.

    Returns
    -------
    Target
        The target, with its depth ``m >= 1``.

    Raises
    ------
    TargetError
        If the name is unknown, the module or function cannot be imported, a user target has no
        depth ``m >= 1``, or the parameters do not fit the built-in.
    """
    if ":" in name:
        mod_name, _, fn_name = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise TargetError(f"cannot import target {name!r} ({exc}); expected 'module:function'",
                              key="name") from None
        if m is None or int(m) < 1:
            raise TargetError(f"user target {name!r} needs its memory depth m >= 1", key="m")
        return Target(name, int(m), fn, tuple(sorted(params.items())))
    if name not in BUILTIN_TARGETS:
        raise TargetError(
            f"unknown target {name!r}; expected one of {sorted(BUILTIN_TARGETS)} or 'module:function'"
        )
    if m is not None:  # product(m) takes its depth as its parameter
        params = {"m": m, **params}
    try:
        t = BUILTIN_TARGETS[name](**params)
    except TypeError as exc:
        raise TargetError(f"target {name!r}: {exc}") from None
    if t.m < 1:
        raise TargetError(f"target {name!r} has memory depth {t.m}; expected m >= 1", key="m")
    return t
