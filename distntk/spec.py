"""Experiment specs: TOML files that fix an :class:`~distntk.experiment.Experiment`.

A spec names everything a run needs (MODEL.md sections 1-3 and 6)::

    name = "quickstart"            # optional; default: the file's stem
    description = "..."            # optional, free text
    seed = 2026                    # root seed of every replica's SeedSequence
    store = "stores/quickstart.zarr"   # optional default store (local path or fsspec URL)
    kernel = "reference"           # optional segment kernel (distntk.rnn.KERNELS)

    [chain]                        # finite ergodic chain, MODEL 1
    inputs = [-1.0, 1.0]           # x_s per state: S numbers (d = 1) or S lists of d numbers
    transition = [[0.8, 0.2], [0.3, 0.7]]

    [target]                       # f of the last m inputs, MODEL 1
    name = "tanh_linear"           # built-in: linear(weights), tanh_linear(inner, outer), product(m)
    inner = [1.0, 0.8]             # ... with its parameters as further keys,
    outer = [0.0, 0.0, 0.3]        # or name = "module:function" with m = depth

    [model]                        # RNNConfig, MODEL 2; every key optional (defaults of RNNConfig)
    activation = "tanh"
    beta = 0.75
    alpha = 1.0
    sigma_w = 1.0
    sigma_a = 1.0
    b_max = 0.3
    gradient = "rtrl"
    noise_std = 0.0
    burn_in = 8                    # default: L

    [training]
    T = 2.0                        # horizon in training time t = k / N
    times = [0.5, 1.0, 1.5, 2.0]   # recording grid, sorted, within [0, T]
    L = 8                          # window length, MODEL 3 ... or memory_tol = 1e-6
    record_risk = true             # optional: also record the stationary risk

    [limit]                        # optional
    resolution = 20                # quadrature resolution of the kernel (MODEL 4.2)

    [replicas]
    widths = [64, 128, 256]
    n_init = 8                     # initialisations per width
    n_data = 128                   # data sequences per initialisation
    block = 32                     # data sequences per work unit (default 16)

    [probes]                       # exactly one of:
    most_likely = 3                # the k most probable windows of the window chain
    # windows = [[0, 0, 0, 0, 0, 0, 0, 0], "11111111"]   # explicit windows, oldest state first

Validation.  Every problem raises :class:`SpecError` with a one-line message
that starts with the dotted key and says what was expected, e.g.
``model.b_max: expected a number, got 'x'``.  Unknown keys are errors.  The
science modules' own errors (ChainError, ModelError, TargetError) are reused
with the key prefixed.

Canonical form.  :attr:`Spec.canonical` is the resolved spec as plain JSON
data: defaults filled in, numbers normalised (floats where floats are meant),
``L`` resolved from ``memory_tol``, ``burn_in`` resolved, probes resolved to
explicit windows.  It omits ``name``, ``description`` and ``store``, which do
not change a single number.  :attr:`Spec.hash` is the SHA-256 of its sorted
JSON; :func:`spec_diff` lists the dotted keys where two canonical forms differ.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .chain import ChainError, markov_chain, window_chain
from .experiment import Experiment
from .limit import window_length
from .rnn import KERNELS, ModelError, RNNConfig
from .target import BUILTIN_TARGETS, TargetError, make_target

__all__ = ["Spec", "SpecError", "load_spec", "parse_spec", "spec_diff", "canonical_json", "flat_keys"]


class SpecError(ValueError):
    """An invalid experiment spec; the message starts with the offending key."""


_REQUIRED = object()
_DEFAULT_TOL = 1e-6
_DEFAULT_STORE_DIR = "stores"


@dataclass(frozen=True, eq=False)
class Spec:
    """A validated spec: its source text, canonical form and the experiment it defines."""

    name: str
    text: str
    canonical: dict
    experiment: Experiment
    store: str  # default store location (the spec's ``store`` or ``stores/<name>.zarr``)
    description: str = ""

    @property
    def hash(self) -> str:
        return hashlib.sha256(canonical_json(self.canonical).encode()).hexdigest()


def canonical_json(canonical: dict) -> str:
    """Sorted, compact JSON text of a canonical spec (what :attr:`Spec.hash` hashes)."""
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_diff(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two canonical specs (sorted)."""
    fa, fb = flat_keys(a), flat_keys(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, _REQUIRED) != fb.get(k, _REQUIRED))


def flat_keys(d: dict, prefix: str = "") -> dict:
    """A nested canonical spec as ``{dotted key: value}`` (``{"model": {"beta": 0.75}}`` -> ``model.beta``)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_spec(path) -> Spec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_spec(text, default_name=path.stem, source=str(path))


def parse_spec(text: str, default_name: str = "experiment", source: str = "spec") -> Spec:
    """Validate TOML ``text`` and build its :class:`Spec`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: invalid TOML: {exc}") from None
    top = _Table(raw, "")
    name = top.get("name", "string", default_name)
    description = top.get("description", "string", "")
    seed = top.get("seed", "integer")
    if seed < 0:
        raise SpecError(f"seed: expected an integer >= 0, got {seed}")
    store = top.get("store", "string", f"{_DEFAULT_STORE_DIR}/{name}.zarr")
    default_kernel = {f.name: f.default for f in fields(Experiment)}["kernel"]
    kernel = top.get("kernel", "string", default_kernel)
    if kernel not in KERNELS:
        raise SpecError(f"kernel: unknown kernel {kernel!r}; expected one of {sorted(KERNELS)}")

    chain, chain_c = _chain(top.table("chain"))
    model_t = top.table("model", required=False)
    training = top.table("training")
    cfg, model_c = _model(model_t)
    target, target_c = _target(top.table("target"))
    T, times, L, record_risk, training_c = _training(training, cfg, chain, target)
    limit_t = top.table("limit", required=False)
    resolution = limit_t.get("resolution", "integer", None)
    if resolution is not None and resolution < 2:
        raise SpecError(f"limit.resolution: expected an integer >= 2, got {resolution}")
    limit_t.finish()
    replicas, replicas_c = _replicas(top.table("replicas"))
    probes, probes_c = _probes(top.table("probes"), chain, L)
    top.finish()

    if cfg.burn_in is None:
        cfg = RNNConfig(**{**model_c, "burn_in": L})
    elif cfg.burn_in < L:
        raise SpecError(f"model.burn_in: expected an integer >= L = {L}, got {cfg.burn_in}")
    model_c["burn_in"] = int(cfg.burn_in)
    try:
        target.on_windows(chain.inputs, window_chain(chain, L).histories[:64])
    except TargetError as exc:
        raise SpecError(f"target: {exc}") from None
    except Exception as exc:  # a user function may fail in any way; report it on one line
        raise SpecError(f"target: {target.name!r} failed on the chain's windows: "
                        f"{type(exc).__name__}: {exc}") from None

    exp = Experiment(chain=chain, target=target, model=cfg, T=T, times=times, L=L, probes=probes,
                     widths=replicas["widths"], n_init=replicas["n_init"], n_data=replicas["n_data"],
                     block=replicas["block"], seed=seed, kernel=kernel, kernel_resolution=resolution,
                     name=name, record_risk=record_risk)
    canonical = {
        "seed": seed,
        "kernel": kernel,
        "chain": chain_c,
        "target": target_c,
        "model": model_c,
        "training": training_c,
        "limit": {"resolution": resolution},
        "replicas": replicas_c,
        "probes": probes_c,
    }
    return Spec(name=name, text=text, canonical=canonical, experiment=exp, store=store, description=description)


# -- sections ---------------------------------------------------------------------------------------


def _chain(t: "_Table"):
    P = t.get("transition", "matrix")
    inputs = t.get("inputs", "inputs")
    t.finish()
    if any(len(row) != len(P) for row in P):
        raise SpecError(f"chain.transition: expected a square S x S matrix, got {len(P)} rows of lengths "
                        f"{[len(row) for row in P]}")
    X = [[float(v)] if not isinstance(v, list) else [float(x) for x in v] for v in inputs]
    if len({len(x) for x in X}) != 1:
        raise SpecError(f"chain.inputs: expected one input of the same dimension d per state, got lengths "
                        f"{[len(x) for x in X]}")
    try:
        chain = markov_chain(P, X)
    except ChainError as exc:
        key = "chain.inputs" if str(exc).startswith("state inputs") else "chain.transition"
        raise SpecError(f"{key}: {exc}") from None
    return chain, {"transition": [[float(x) for x in row] for row in P], "inputs": X}


_MODEL_KINDS = {"activation": "string", "gradient": "string", "burn_in": "integer"}


def _model(t: "_Table"):
    defaults = {f.name: f.default for f in fields(RNNConfig)}
    values = {k: t.get(k, _MODEL_KINDS.get(k, "number"), v) for k, v in defaults.items()}
    t.finish()
    values = {k: (float(v) if _MODEL_KINDS.get(k, "number") == "number" else v) for k, v in values.items()}
    try:
        cfg = RNNConfig(**values)
    except ModelError as exc:
        msg = str(exc)
        key = "b_max" if msg.startswith("contraction") else msg.split()[0]
        raise SpecError(f"model.{key if key in defaults else 'b_max'}: {msg}") from None
    return cfg, values


def _target(t: "_Table"):
    name = t.get("name", "string")
    if ":" in name:
        m = t.get("m", "integer")
        t.finish(hint="a 'module:function' target takes only name and m")
        params, canon = {}, {"name": name, "m": m}
    else:
        if name not in BUILTIN_TARGETS:
            raise SpecError(f"target.name: unknown target {name!r}; expected one of "
                            f"{sorted(BUILTIN_TARGETS)} or 'module:function'")
        sig = inspect.signature(BUILTIN_TARGETS[name])
        params = {p: t.get(p, "number or list of numbers") for p in sig.parameters}
        t.finish(hint=f"target {name!r} takes {', '.join(['name', *sig.parameters])}")
        params = {k: ([float(x) for x in v] if isinstance(v, list) else v) for k, v in params.items()}
        m, canon = None, {"name": name, **params}
    try:
        target = make_target(name, m=m, **params)
    except TargetError as exc:
        key = "target.m" if "memory depth" in str(exc) else "target.name" if ":" in name else "target"
        raise SpecError(f"{key}: {exc}") from None
    except Exception as exc:  # a built-in rejecting a parameter's shape, e.g. product(m=0.5)
        raise SpecError(f"target: {name!r} rejected its parameters: {type(exc).__name__}: {exc}") from None
    return target, canon


def _training(t: "_Table", cfg: RNNConfig, chain, target):
    T = float(t.get("T", "number"))
    if not T > 0:
        raise SpecError(f"training.T: expected a number > 0, got {T:g}")
    times = [float(x) for x in t.get("times", "list of numbers")]
    if not times:
        raise SpecError("training.times: expected a non-empty list of times")
    if any(b < a for a, b in zip(times, times[1:])) or times[0] < 0 or times[-1] > T:
        raise SpecError(f"training.times: expected sorted times within [0, T = {T:g}], got {times}")
    if len(set(times)) != len(times):
        raise SpecError(f"training.times: expected distinct times, got {times}")
    L = t.get("L", "integer", None)
    tol = t.get("memory_tol", "number", None)
    record_risk = t.get("record_risk", "boolean", True)
    t.finish()
    if L is not None and tol is not None:
        raise SpecError("training.memory_tol: give either training.L or training.memory_tol, not both")
    if L is None:
        tol = _DEFAULT_TOL if tol is None else float(tol)
        if not 0 < tol < 1:
            raise SpecError(f"training.memory_tol: expected a number in (0, 1), got {tol:g}")
        try:
            L, _ = window_length(cfg, chain, target.m, tol)
        except ChainError as exc:
            raise SpecError(f"training.memory_tol: {exc}") from None
    elif L < max(1, target.m):
        raise SpecError(f"training.L: expected an integer >= the target memory m = {target.m}, got {L}")
    try:
        window_chain(chain, L)
    except ChainError as exc:
        raise SpecError(f"training.L: {exc}") from None
    return T, tuple(times), int(L), record_risk, {"T": T, "times": times, "L": int(L), "record_risk": record_risk}


def _replicas(t: "_Table"):
    widths = t.get("widths", "list of integers")
    n_init = t.get("n_init", "integer")
    n_data = t.get("n_data", "integer")
    block = t.get("block", "integer", 16)
    t.finish()
    if not widths or any(w < 1 for w in widths):
        raise SpecError(f"replicas.widths: expected a non-empty list of integers >= 1, got {widths}")
    if len(set(widths)) != len(widths):
        raise SpecError(f"replicas.widths: expected distinct widths, got {widths}")
    for key, v in (("n_init", n_init), ("n_data", n_data), ("block", block)):
        if v < 1:
            raise SpecError(f"replicas.{key}: expected an integer >= 1, got {v}")
    out = {"widths": tuple(int(w) for w in widths), "n_init": n_init, "n_data": n_data, "block": block}
    return out, {**out, "widths": list(out["widths"])}


def _probes(t: "_Table", chain, L: int):
    k = t.get("most_likely", "integer", None)
    windows = t.get("windows", "list of windows", None)
    t.finish()
    if (k is None) == (windows is None):
        raise SpecError("probes: expected exactly one of probes.most_likely or probes.windows")
    win = window_chain(chain, L)
    if k is not None:
        if not 1 <= k <= win.n_histories:
            raise SpecError(f"probes.most_likely: expected an integer in [1, {win.n_histories}] "
                            f"(the number of length-{L} histories), got {k}")
        probes = win.histories[win.most_likely(k)]
    else:
        rows = []
        for i, w in enumerate(windows):
            key = f"probes.windows[{i}]"
            if isinstance(w, str):
                if not w.isdigit():
                    raise SpecError(f"{key}: expected a string of state digits, got {w!r}")
                w = [int(c) for c in w]
            if len(w) != L:
                raise SpecError(f"{key}: expected a window of L = {L} states, got {len(w)}")
            if any(s < 0 or s >= chain.n_states for s in w):
                raise SpecError(f"{key}: expected states in 0..{chain.n_states - 1}, got {w}")
            try:
                win.index([w])
            except ChainError as exc:
                raise SpecError(f"{key}: {exc}") from None
            rows.append(w)
        if not rows:
            raise SpecError("probes.windows: expected at least one window")
        probes = np.array(rows, dtype=np.int64)
        if len({tuple(r) for r in rows}) != len(rows):
            raise SpecError("probes.windows: expected distinct windows")
    probes = np.array(probes, dtype=np.int64)
    probes.setflags(write=False)
    return probes, {"windows": probes.tolist()}


# -- typed access with key names in the errors -------------------------------------------------------


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number_list(v) -> bool:
    return isinstance(v, list) and all(_is_number(x) for x in v)


_KINDS = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (_is_int, "an integer"),
    "number": (_is_number, "a number"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "list of numbers": (_number_list, "a list of numbers"),
    "list of integers": (lambda v: isinstance(v, list) and all(_is_int(x) for x in v), "a list of integers"),
    "number or list of numbers": (lambda v: _is_number(v) or _number_list(v), "a number or a list of numbers"),
    "matrix": (lambda v: isinstance(v, list) and len(v) > 0 and all(_number_list(r) for r in v),
               "a matrix (list of rows of numbers)"),
    "inputs": (lambda v: isinstance(v, list) and len(v) > 0
               and (all(_is_number(x) for x in v) or all(_number_list(x) and x for x in v)),
               "one input per state: a list of numbers, or a list of lists of numbers"),
    "list of windows": (lambda v: isinstance(v, list)
                        and all(isinstance(w, str) or (isinstance(w, list) and all(_is_int(s) for s in w))
                                for w in v),
                        "a list of windows (lists of state indices, or strings of state digits)"),
}


def _show(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class _Table:
    """A TOML table read key by key; unread keys are reported by :meth:`finish`."""

    def __init__(self, data: dict, prefix: str):
        self.data, self.prefix, self.seen = data, prefix, set()

    def _key(self, k: str) -> str:
        return f"{self.prefix}{k}"

    def get(self, key: str, kind: str, default=_REQUIRED):
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                raise SpecError(f"{self._key(key)}: missing; expected {_KINDS[kind][1]}")
            return default
        v = self.data[key]
        ok, what = _KINDS[kind]
        if not ok(v):
            got = "a table" if isinstance(v, dict) else _show(v)
            raise SpecError(f"{self._key(key)}: expected {what}, got {got}")
        return v

    def table(self, key: str, required: bool = True) -> "_Table":
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise SpecError(f"[{self._key(key)}]: missing section")
            return _Table({}, f"{self._key(key)}.")
        v = self.data[key]
        if not isinstance(v, dict):
            raise SpecError(f"{self._key(key)}: expected a [{self._key(key)}] section, got {_show(v)}")
        return _Table(v, f"{self._key(key)}.")

    def finish(self, hint: str | None = None) -> None:
        extra = [k for k in self.data if k not in self.seen]
        if extra:
            expected = hint or ("expected one of " + ", ".join(sorted(self.seen)))
            raise SpecError(f"{self._key(extra[0])}: unknown key; {expected}")
