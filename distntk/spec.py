"""Experiment specs: TOML files that fix an :class:`~distntk.experiment.Experiment`.

A spec names everything a run needs (docs/model.md sections 1-3 and 10)::

    name = "quickstart"            # optional; default: the file's stem
    description = "..."            # optional, free text
    seed = 2026                    # root seed of every replica's SeedSequence
    store = "stores/quickstart.zarr"   # optional default store (local path or fsspec URL)
    engine = "reference"           # optional training engine (distntk.rnn.ENGINES; the old key "kernel" is
                                   # still read, with a warning, and hashes the same)

    [chain]                        # finite ergodic chain, docs/model.md#data
    inputs = [-1.0, 1.0]           # x_s per state: S numbers (d = 1) or S lists of d numbers
    transition = [[0.8, 0.2], [0.3, 0.7]]
    # or kind = "ar1" with phi, sigma (numbers or lists of d numbers): the Gaussian AR(1), docs/model.md#ar1
    # or kind = "sampler" with sampler = "module:function" (code, like a code target: docs/model.md#sampler,
    #    distntk.sampler), dim = 1, params = {...} (its keyword arguments), warmup = 0 (steps dropped at the
    #    start of every path), mixing (optional, in [0, 1): the rate at which the chain forgets)

    [target]                       # f of the last m inputs, docs/model.md#data
    name = "tanh_linear"           # built-in: linear(weights), tanh_linear(inner, outer), product(m)
    inner = [1.0, 0.8]             # ... with its parameters as further keys,
    outer = [0.0, 0.0, 0.3]        # or name = "module:function" with m = depth

    [model]                        # RNNConfig, docs/model.md#network; every key optional (defaults of RNNConfig)
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
    L = 8                          # window length, docs/model.md#memory ... or memory_tol = 1e-6
    record_risk = true             # optional: also record the stationary risk

    [limit]                        # optional
    tol = 1e-6                     # kernel quadrature tolerance on K entries (docs/model.md#kernel); or, legacy:
    # resolution = 20              # fixed Gauss-Hermite points per coordinate (error estimate unreliable)
    max_histories = 4096           # most length-L histories the window chain may have (default 4096)
    memory = "auto"                # "window": the limit trains on length-L windows; "sampled": on the
                                   # infinite past, estimated along simulated chains (distntk.longmem);
                                   # "auto" (default): sampled when no window with at most max_histories
                                   # histories has rho^L <= 1e-6
    # l0 = 6                       # sampled: control-variate window (default: the basis window, the longest
                                   # with at most 1024 histories); segments = 16; segment_steps = 4096

    [replicas]
    widths = [64, 128, 256]
    n_init = 8                     # initialisations per width
    n_data = 128                   # data sequences per initialisation
    block = 32                     # data sequences per work unit (default 16)

    [probes]                       # exactly one of:
    most_likely = 3                # the k most probable windows of the window chain
    # windows = [[0, 0, 0, 0, 0, 0, 0, 0], "11111111"]   # explicit windows, oldest state first
    # (kind = "ar1" or "sampler": optional, windows = [[0.0, 0.5, ...], ...] of L input values, d = 1)

Validation.  Every problem raises :class:`SpecError` with a one-line message
that starts with the dotted key and says what was expected, e.g.
``model.b_max: expected a number, got 'x'``.  Unknown keys are errors.  The
science modules' own errors (ChainError, ModelError, TargetError) are reused
with the key prefixed.

Bounds.  So that every spec either runs or is refused on one line (never a
hang, an overflow or a traceback), numbers are finite with ``|x| <= 1e6``,
``T <= 1e4``, at most 1000 ``times``, ``L`` and the target memory ``m`` at most
64, ``limit.max_histories`` at most ``2**20``, widths at most ``2**24``, at most
``2**22`` work units, at most 256 chain states of dimension at most 64;
names (``name``, ``store``, ``target.name``, ...) are at most 200 printable
characters.  A spec file is a regular file of at most :data:`MAX_SPEC_BYTES`
(1 MiB): a FIFO, a device (``/dev/zero``) or a directory is refused before it is
read.  What a spec costs to run is estimated by :mod:`distntk.cost`.

Code.  A ``"module:function"`` target is code: :func:`parse_spec` imports it
only with ``allow_code=True`` (``distntk run --allow-code``), and then adds the
SHA-256 of the module's source file to the canonical target
(``target.source_sha256``), so a resumed run whose target code changed is
refused.  Built-in targets are data; their canonical form has no such key, so
their hashes are those of earlier versions.  A ``kind = "sampler"`` chain is
code in the same way: refused without ``allow_code``, then imported, checked
on a pilot draw and hashed (``chain.source_sha256``).

Canonical form.  :attr:`Spec.canonical` is the resolved spec as plain JSON
data: defaults filled in, numbers normalised (floats where floats are meant),
``L`` resolved from ``memory_tol``, ``burn_in`` resolved, probes resolved to
explicit windows; ``limit.max_histories`` appears only when it is not the
default 4096.  It omits ``name``, ``description`` and ``store``, which do
not change a single number.  :attr:`Spec.hash` is the SHA-256 of its sorted
JSON; :func:`spec_diff` lists the dotted keys where two canonical forms differ.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

import numpy as np

from ._text import one_line
from .chain import ChainError, markov_chain, window_chain
from .errors import DistntkError
from .experiment import Experiment, Replicas
from .limit import MAX_HISTORIES, LimitConfig, window_length
from .rnn import ENGINES, ModelError, RNNConfig
from .target import BUILTIN_TARGETS, TargetError, make_target

__all__ = ["Spec", "SpecError", "load_spec", "read_spec_text", "parse_spec", "spec_diff", "spec_hash",
           "canonical_json", "flat_keys", "is_code_target", "names_code", "DEFAULT_MAX_HISTORIES"]


class SpecError(DistntkError, ValueError):
    """An invalid experiment spec; the message starts with the offending key."""


_REQUIRED = object()
_DEFAULT_TOL = 1e-6
_DEFAULT_QUAD_TOL = 1e-6  # limit.tol: kernel entries (docs/model.md#kernel)
_DEFAULT_STORE_DIR = "stores"
DEFAULT_MAX_HISTORIES = 4096
# bounds that keep every accepted spec finite and every refusal quick (module docstring, "Bounds")
_MAX_ABS = 1e6
_MAX_T = 1e4
_MAX_TIMES = 1000
_MAX_L = 64
_MAX_HISTORIES = MAX_HISTORIES  # the feature-space solver's reach (limit.MAX_HISTORIES)
_BASIS_HISTORIES = 1024  # the sampled limit's basis window: the longest with at most this many histories
_MAX_RESOLUTION = 64
_MAX_WIDTH = 1 << 24
_MAX_UNITS = 1 << 22
_MAX_STATES = 256
_MAX_DIM = 64
_MAX_NAME = 200


@dataclass(frozen=True, eq=False)
class Spec:
    """A validated spec: its source text, canonical form and the experiment it defines.

    Built by ``load_spec`` (a file) or ``parse_spec`` (TOML text), which validate every key; the
    fields below are its constructor's parameters and its attributes.

    Parameters
    ----------
    name : str
        The spec's ``name``, else the file's stem.
    text : str
        The TOML source text, as read.
    canonical : dict
        The resolved spec as plain JSON data (``distntk.spec``'s module docstring, "Canonical form"):
        defaults filled in, ``L``, ``burn_in`` and the probes resolved; without ``name``,
        ``description`` and ``store``, which change no number.
    experiment : Experiment
        The experiment the spec defines.
    store : str
        The default store location: the spec's ``store``, else ``stores/<name>.zarr``.
    description : str, optional
        The spec's free-text ``description``.
    warnings : tuple of str, optional
        What a user should see before running (an old key name, ...), one line each.
    """

    name: str
    text: str
    canonical: dict
    experiment: Experiment
    store: str  # default store location (the spec's ``store`` or ``stores/<name>.zarr``)
    description: str = ""
    warnings: tuple[str, ...] = field(default=())  # things a user should see before running (one line each)

    @cached_property
    def hash(self) -> str:
        """SHA-256 of the canonical form's sorted JSON (``spec_hash``), 64 hexadecimal digits.

        What a store records, and what a resume checks.
        """
        return spec_hash(self.canonical)


def spec_hash(canonical: dict) -> str:
    """SHA-256 of a canonical spec's JSON.

    The training engine is hashed under its old key ``kernel`` (its name before
    distntk 0.2), so the hashes of specs and stores written before the rename stay
    valid; a canonical form that still says ``kernel`` hashes the same way.
    """
    legacy = {("kernel" if k == "engine" else k): v for k, v in canonical.items()}
    return hashlib.sha256(canonical_json(legacy).encode()).hexdigest()


def is_code_target(name: str) -> bool:
    """Whether a target name is a ``"module:function"`` (code), not a built-in (data)."""
    return ":" in str(name)


def _source_digest(name: str, key: str = "target.name") -> str:
    """SHA-256 of the source file of the module of a ``module:function`` target or sampler (found, not
    executed); errors name ``key``."""
    mod = name.partition(":")[0]
    try:
        found = importlib.util.find_spec(mod)
    except (ImportError, ValueError) as exc:
        raise SpecError(f"{key}: cannot find module {_show(mod)} ({one_line(exc)})") from None
    if found is None or not found.origin or not found.has_location:
        raise SpecError(f"{key}: cannot find the source of module {_show(mod)}; expected an importable "
                        "Python module file")
    try:
        with open(found.origin, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError as exc:
        raise SpecError(f"{key}: cannot read {found.origin}: {one_line(exc)}") from None


def names_code(canonical: dict) -> bool:
    """Whether a canonical spec names code (a ``module:function`` target or a ``kind = "sampler"`` chain), which
    a store never imports."""
    chain, target = canonical.get("chain") or {}, canonical.get("target") or {}
    return is_code_target(str(target.get("name", ""))) or (isinstance(chain, dict) and chain.get("kind") == "sampler")


def canonical_json(canonical: dict) -> str:
    """Sorted, compact JSON text of a canonical spec (what :attr:`Spec.hash` hashes)."""
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)


def spec_diff(a: dict, b: dict) -> list[str]:
    """Dotted keys whose values differ between two canonical specs (sorted)."""
    modern = lambda c: {("engine" if k == "kernel" else k): v for k, v in c.items()}  # noqa: E731 (old stores)
    fa, fb = flat_keys(modern(a)), flat_keys(modern(b))
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


MAX_SPEC_BYTES = 1 << 20


def read_spec_text(path: str | os.PathLike) -> str:
    """The text of a spec file, or a one-line :class:`SpecError` saying why it cannot be read.

    Only a regular file of at most :data:`MAX_SPEC_BYTES` is read (opened without blocking, so a
    FIFO is refused instead of waited on).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SpecError(f"spec file {str(path)!r} is not a regular file")
            raw = f.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(f"spec file {str(path)!r} is larger than {MAX_SPEC_BYTES} bytes; a spec is a short "
                            "TOML file")
        return raw.decode()
    except FileNotFoundError:
        raise SpecError(f"spec file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None


def load_spec(path: str | os.PathLike, allow_code: bool = False) -> Spec:
    """Read and validate a TOML spec file.

    Only a regular file of at most ``MAX_SPEC_BYTES`` (1 MiB) is read: a FIFO, a device or a
    directory is refused before it is read.  The spec's keys are listed in the spec reference
    (docs/reference/spec.md); any input is either accepted or refused in one line.

    Parameters
    ----------
    path : str or os.PathLike
        The spec file; its stem is the spec's name unless the spec sets ``name``.
    allow_code : bool, optional
        Accept a ``"module:function"`` target.  Importing it runs that module's code, so it is
        refused unless this is true (``distntk run --allow-code``); the SHA-256 of the module's
        source then enters the canonical form (``target.source_sha256``).

    Returns
    -------
    Spec
        The validated spec and the ``Experiment`` it defines.

    Raises
    ------
    SpecError
        If the file cannot be read or the spec is invalid; the message says, in one line, which
        key and what was expected.
    """
    return parse_spec(read_spec_text(path), default_name=Path(path).stem, source=str(path), allow_code=allow_code)


def parse_spec(text: str, default_name: str = "experiment", source: str = "spec", allow_code: bool = False) -> Spec:
    """Validate TOML ``text`` and build its :class:`Spec`.

    A ``"module:function"`` target is refused unless ``allow_code``: importing
    it runs that module's code.  Any input is either accepted or refused with a
    one-line :class:`SpecError`.
    """
    try:
        return _parse(text, default_name, source, allow_code)
    except SpecError:
        raise
    except (ArithmeticError, ValueError, TypeError, IndexError, np.linalg.LinAlgError, MemoryError) as exc:
        # a safety net: whatever the checks above let through still ends in one line
        raise SpecError(f"{one_line(source, 120)}: cannot build the experiment: "
                        f"{type(exc).__name__}: {one_line(exc)}") \
            from None


def _parse(text: str, default_name: str, source: str, allow_code: bool) -> Spec:
    if not isinstance(text, str):
        raise SpecError(f"{one_line(source, 120)}: expected TOML text")
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:  # a 5000-digit integer; deep nesting
        raise SpecError(f"{one_line(source, 120)}: invalid TOML: {one_line(exc)}") from None
    top = _Table(raw, "")
    name = top.get("name", "name", default_name)
    description = top.get("description", "string", "")
    seed = top.get("seed", "integer")
    if not 0 <= seed < 2**128:
        raise SpecError(f"seed: expected an integer in [0, 2**128), got {_show(seed)}")
    store = top.get("store", "name", f"{_DEFAULT_STORE_DIR}/{name}.zarr")
    engine = top.get("engine", "name", None)
    legacy = top.get("kernel", "name", None)  # the engine's name before distntk 0.2
    if legacy is not None and engine is not None:
        raise SpecError("kernel: the old name of engine; give engine only")
    key = "kernel" if legacy is not None else "engine"
    engine = legacy if legacy is not None else engine
    engine = {f.name: f.default for f in fields(Experiment)}["engine"] if engine is None else engine
    if engine not in ENGINES:
        raise SpecError(f"{key}: unknown engine {_show(engine)}; expected one of {sorted(ENGINES)}")

    chain, chain_c, source = _chain(top.table("chain"), allow_code, seed)
    model_t = top.table("model", required=False)
    training = top.table("training")
    cfg, model_c = _model(model_t)
    limit_t = top.table("limit", required=False)
    resolution = limit_t.get("resolution", "integer", None)
    if resolution is not None and not 2 <= resolution <= _MAX_RESOLUTION:
        raise SpecError(f"limit.resolution: expected an integer in [2, {_MAX_RESOLUTION}], got {_show(resolution)}")
    tol = limit_t.get("tol", "number", None)
    if tol is not None and resolution is not None:
        raise SpecError("limit.tol: give either limit.tol or limit.resolution, not both")
    tol = _DEFAULT_QUAD_TOL if tol is None else float(tol)
    if not 1e-12 <= tol < 1:
        raise SpecError(f"limit.tol: expected a number in [1e-12, 1), got {_show(tol)}")
    max_h = limit_t.get("max_histories", "integer", DEFAULT_MAX_HISTORIES)
    if not 1 <= max_h <= _MAX_HISTORIES:
        raise SpecError(f"limit.max_histories: expected an integer in [1, {_MAX_HISTORIES}], got {_show(max_h)}")
    memory = limit_t.get("memory", "string", "auto")
    if memory not in ("auto", "window", "sampled"):
        raise SpecError(f"limit.memory: expected 'auto', 'window' or 'sampled', got {_show(memory)}")
    l0 = limit_t.get("l0", "integer", None)
    segments = limit_t.get("segments", "integer", 16)
    if not 2 <= segments <= 4096:
        raise SpecError(f"limit.segments: expected an integer in [2, 4096], got {_show(segments)}")
    seg_steps = limit_t.get("segment_steps", "integer", 4096)
    if not 256 <= seg_steps <= 1 << 22:
        raise SpecError(f"limit.segment_steps: expected an integer in [256, {1 << 22}], got {_show(seg_steps)}")
    limit_t.finish()
    target, target_c = _target(top.table("target"), allow_code)
    T, times, L, record_risk, training_c, warnings = _training(training, cfg, chain, target, max_h)
    if source is not None:  # a continuous source: the limit along its paths (docs/model.md#ar1)
        if memory == "sampled" or l0 is not None:
            raise SpecError(f"limit.memory: chain.kind = {source.kind!r} takes the window limit of "
                            "docs/model.md#ar1 only")
        memory = "window"
    sampled = _memory_mode(memory, cfg, chain, target, max_h)
    basis_L = L0 = None
    if sampled:
        basis_L = window_length(cfg, chain, target.m, _DEFAULT_TOL, max_histories=min(max_h, _BASIS_HISTORIES))[0]
        L0 = basis_L if l0 is None else l0
        if not target.m <= L0 <= basis_L:
            raise SpecError(f"limit.l0: expected an integer in [{target.m}, {basis_L}] (the target memory m and "
                            f"the basis window), got {_show(L0)}")
    elif l0 is not None:
        raise SpecError("limit.l0: applies only to limit.memory = 'sampled' (the infinite-past limit)")
    if legacy is not None:
        warnings = [*warnings, f"kernel = {legacy!r}: 'kernel' is the old name of the spec key 'engine'; "
                               "write engine = ... (the hash is the same)"]
    replicas, replicas_c = _replicas(top.table("replicas"))
    if source is None:
        probes, probes_c = _probes(top.table("probes"), chain, L, max_h)
    else:
        probes, probes_c = _value_probes(top.table("probes", required=False), source, L)
    top.finish()

    if cfg.burn_in is None:
        cfg = RNNConfig(**{**model_c, "burn_in": L})
    elif cfg.burn_in < L:
        raise SpecError(f"model.burn_in: expected an integer >= L = {L}, got {cfg.burn_in}")
    model_c["burn_in"] = int(cfg.burn_in)
    try:
        with np.errstate(all="ignore"):
            f = target.on_windows(chain.inputs, window_chain(chain, L, max_histories=max_h).histories[:64])
    except TargetError as exc:
        raise SpecError(f"target: {one_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # a user function may fail in any way; report it on one line
        raise SpecError(f"target: {_show(target.name)} failed on the chain's windows: "
                        f"{type(exc).__name__}: {one_line(exc)}") from None
    if not np.all(np.isfinite(f)) or np.max(np.abs(f), initial=0.0) > 1e12:
        raise SpecError(f"target: {_show(target.name)} is not finite (or above 1e12) on the chain's windows; "
                        "expected finite values (check chain.inputs and the target's parameters)")

    make_exp = Experiment if source is None else _continuous_experiment(source)
    limit = LimitConfig(tol=tol, resolution=resolution, max_histories=max_h,
                        memory="sampled" if sampled else "window", basis_L=basis_L, l0=L0, segments=segments,
                        segment_steps=seg_steps)
    exp = make_exp(chain=chain, target=target, model=cfg, T=T, times=times, L=L, probes=probes, replicas=replicas,
                   limit=limit, seed=seed, engine=engine, name=name, record_risk=record_risk)
    # absent at their defaults, so the hashes of earlier specs stay valid
    limit_c = {"resolution": resolution}
    if resolution is None and tol != _DEFAULT_QUAD_TOL:
        limit_c["tol"] = tol
    if max_h != DEFAULT_MAX_HISTORIES:
        limit_c["max_histories"] = max_h
    if sampled:
        limit_c.update(memory="sampled", basis_L=basis_L, l0=L0, segments=segments, segment_steps=seg_steps)
    elif source is not None:  # the continuous limit's path segments (docs/model.md#ar1)
        limit_c.update(segments=segments, segment_steps=seg_steps)
    elif memory == "window" and _memory_mode("auto", cfg, chain, target, max_h):
        limit_c["memory"] = "window"
    canonical = {
        "seed": seed,
        "engine": engine,
        "chain": chain_c,
        "target": target_c,
        "model": model_c,
        "training": training_c,
        "limit": limit_c,
        "replicas": replicas_c,
        "probes": probes_c,
    }
    return Spec(name=name, text=text, canonical=canonical, experiment=exp, store=store, description=description,
                warnings=tuple(warnings))


# -- sections ---------------------------------------------------------------------------------------


def _continuous_experiment(source):
    from .experiment import ContinuousExperiment

    return lambda **kw: ContinuousExperiment(source=source, **kw)


def _chain(t: "_Table", allow_code: bool, seed: int):
    """``(chain, canonical, source)``: a finite chain (``source`` None), or a continuous source with the finite
    stand-in chain that chooses ``L`` and checks the target."""
    kind = t.get("kind", "name", None)
    if kind == "ar1":
        return _ar1_chain(t)
    if kind == "sampler":
        return _sampler_chain(t, allow_code, seed)
    if kind is not None:
        raise SpecError(f"chain.kind: expected 'ar1' or 'sampler' (or no kind: a finite chain), got {_show(kind)}")
    P = t.get("transition", "matrix")
    inputs = t.get("inputs", "inputs")
    t.finish()
    if len(P) > _MAX_STATES:
        raise SpecError(f"chain.transition: expected at most {_MAX_STATES} states, got {len(P)}")
    if any(len(row) != len(P) for row in P):
        raise SpecError(f"chain.transition: expected a square S x S matrix, got {len(P)} rows of lengths "
                        f"{_show([len(row) for row in P])}")
    if any(0 < x < 1e-12 for row in P for x in row):
        raise SpecError("chain.transition: expected probabilities that are 0 or at least 1e-12 (a smaller "
                        "positive entry is round-off, not a transition)")
    X = [[float(v)] if not isinstance(v, list) else [float(x) for x in v] for v in inputs]
    if len({len(x) for x in X}) != 1:
        raise SpecError(f"chain.inputs: expected one input of the same dimension d per state, got lengths "
                        f"{_show([len(x) for x in X])}")
    if len(X[0]) > _MAX_DIM:
        raise SpecError(f"chain.inputs: expected inputs of dimension d <= {_MAX_DIM}, got {len(X[0])}")
    try:
        chain = markov_chain(P, X)
    except ChainError as exc:
        raise SpecError(f"chain.{exc.key or 'transition'}: {one_line(exc)}") from None
    return chain, {"transition": [[float(x) for x in row] for row in P], "inputs": X}, None


def _ar1_chain(t: "_Table"):
    """``[chain] kind = "ar1"`` (docs/model.md#ar1): the AR(1) and, for the window length and the target
    check, its 2-state Rouwenhorst chain per coordinate."""
    from .ar1 import ar1, reference_chain

    phi = t.get("phi", "number or list of numbers")
    sigma = t.get("sigma", "number or list of numbers")
    t.finish()
    phi_l = [float(x) for x in (phi if isinstance(phi, list) else [phi])]
    sigma_l = [float(x) for x in (sigma if isinstance(sigma, list) else [sigma])]
    if len(phi_l) > _MAX_DIM:
        raise SpecError(f"chain.phi: expected inputs of dimension d <= {_MAX_DIM}, got {len(phi_l)}")
    try:
        ar = ar1(phi_l, sigma_l)
    except ChainError as exc:
        raise SpecError(f"chain: {one_line(exc)}") from None
    return reference_chain(ar, 2), {"kind": "ar1", "phi": phi_l, "sigma": sigma_l}, ar


def _sampler_chain(t: "_Table", allow_code: bool, seed: int):
    """``[chain] kind = "sampler"`` (docs/model.md#sampler): a ``module:function`` drawing stationary paths,
    code like a code target (refused unless ``allow_code``; its module's SHA-256 in the canonical form)."""
    name = t.get("sampler", "name")
    dim = t.get("dim", "integer", 1)
    params = t.get("params", "keyword arguments", {})
    warmup = t.get("warmup", "integer", 0)
    mixing = t.get("mixing", "number", None)
    t.finish()
    if not is_code_target(name):
        raise SpecError(f"chain.sampler: expected 'module:function', got {_show(name)}")
    if not 1 <= dim <= _MAX_DIM:
        raise SpecError(f"chain.dim: expected an integer in [1, {_MAX_DIM}], got {_show(dim)}")
    if not 0 <= warmup <= 1 << 20:
        raise SpecError(f"chain.warmup: expected an integer in [0, 2**20], got {_show(warmup)}")
    if mixing is not None and not 0 <= mixing < 1:
        raise SpecError(f"chain.mixing: expected a number in [0, 1) (the rate at which the chain forgets), got "
                        f"{_show(mixing)}")
    if not allow_code:
        raise SpecError(f"chain.sampler: {_show(name)} is code (a 'module:function' sampler runs that module); "
                        "refused unless allowed explicitly: distntk run --allow-code")
    digest = _source_digest(name, "chain.sampler")
    from .sampler import make_sampler

    try:
        sampler = make_sampler(name, dim=dim, params=params, warmup=warmup, mixing=mixing, seed=seed)
    except ChainError as exc:  # SamplerError: its message names the key
        raise SpecError(one_line(exc)) from None
    canon = {"kind": "sampler", "sampler": name, "source_sha256": digest, "dim": dim, "params": params,
             "warmup": warmup}
    if mixing is not None:
        canon["mixing"] = float(mixing)
    try:
        chain = sampler.rule_chain(2)
    except ChainError as exc:
        raise SpecError(f"chain.sampler: {_show(name)}: its pilot gives no chain: {one_line(exc)}") from None
    return chain, canon, sampler


def _value_probes(t: "_Table", source, L: int):
    """Probes of a continuous source: value windows (``probes.windows``, ``d = 1``) or the source's defaults."""
    windows = t.get("windows", "matrix", None)
    t.finish()
    if windows is None:
        probes = source.default_probes(L)
    else:
        if source.dim != 1:
            raise SpecError("probes.windows: value windows are given for d = 1 only; omit [probes] for the "
                            "defaults")
        for i, w in enumerate(windows):
            if len(w) != L:
                raise SpecError(f"probes.windows[{i}]: expected a window of L = {L} input values, got {len(w)}")
        if len({tuple(w) for w in windows}) != len(windows):
            raise SpecError("probes.windows: expected distinct windows")
        probes = np.array(windows, dtype=float)[:, :, None]
    probes.setflags(write=False)
    return probes, {"windows": probes[:, :, 0].tolist() if source.dim == 1 else probes.tolist()}


_MODEL_KINDS = {"activation": "name", "gradient": "name", "burn_in": "integer"}


def _model(t: "_Table"):
    defaults = {f.name: f.default for f in fields(RNNConfig)}
    values = {k: t.get(k, _MODEL_KINDS.get(k, "number"), v) for k, v in defaults.items()}
    t.finish()
    values = {k: (float(v) if _MODEL_KINDS.get(k, "number") == "number" else v) for k, v in values.items()}
    if values["burn_in"] is not None and not 0 <= values["burn_in"] <= 1 << 20:
        raise SpecError(f"model.burn_in: expected an integer in [L, 2**20], got {_show(values['burn_in'])}")
    try:
        cfg = RNNConfig(**values)
    except ModelError as exc:
        raise SpecError(f"model.{exc.key or 'b_max'}: {one_line(exc)}") from None
    return cfg, values


def _target(t: "_Table", allow_code: bool):
    name = t.get("name", "name")
    if is_code_target(name):
        m = t.get("m", "integer")
        t.finish(hint="a 'module:function' target takes only name and m")
        if not 1 <= m <= _MAX_L:
            raise SpecError(f"target.m: expected an integer in [1, {_MAX_L}], got {_show(m)}")
        if not allow_code:
            raise SpecError(f"target.name: {_show(name)} is code (a 'module:function' target runs that module); "
                            "refused unless allowed explicitly: distntk run --allow-code")
        digest = _source_digest(name)
        params, canon = {"m": m}, {"name": name, "m": m, "source_sha256": digest}
    else:
        if name not in BUILTIN_TARGETS:
            raise SpecError(f"target.name: unknown target {_show(name)}; expected one of "
                            f"{sorted(BUILTIN_TARGETS)} or 'module:function'")
        sig = inspect.signature(BUILTIN_TARGETS[name])
        params = {p: t.get(p, "integer" if p == "m" else "number or list of numbers") for p in sig.parameters}
        t.finish(hint=f"target {name!r} takes {', '.join(['name', *sig.parameters])}")
        params = {k: ([float(x) for x in v] if isinstance(v, list) else v) for k, v in params.items()}
        for k, v in params.items():
            depth = v if k == "m" else len(v) if isinstance(v, list) else 1
            if not 1 <= depth <= _MAX_L:
                what = "an integer" if k == "m" else "a list of length"
                raise SpecError(f"target.{k}: expected {what} in [1, {_MAX_L}] (the target memory m), "
                                f"got {_show(v)}")
        canon = {"name": name, **params}
    try:
        target = make_target(name, **params)
    except TargetError as exc:
        raise SpecError(f"{'target.' + exc.key if exc.key else 'target'}: {one_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # importing user code, or a built-in rejecting a parameter's shape
        raise SpecError(f"target: {_show(name)} rejected its parameters: {type(exc).__name__}: {one_line(exc)}") \
            from None
    return target, canon


def _training(t: "_Table", cfg: RNNConfig, chain, target, max_h: int):
    T = float(t.get("T", "number"))
    if not T > 0:
        raise SpecError(f"training.T: expected a number > 0, got {T:g}")
    if T > _MAX_T:
        raise SpecError(f"training.T: expected a number <= {_MAX_T:g}, got {T:g}")
    times = [float(x) for x in t.get("times", "list of numbers")]
    if not times:
        raise SpecError("training.times: expected a non-empty list of times")
    if len(times) > _MAX_TIMES:
        raise SpecError(f"training.times: expected at most {_MAX_TIMES} times, got {len(times)}")
    if any(b < a for a, b in zip(times[:-1], times[1:], strict=True)) or times[0] < 0 or times[-1] > T:
        raise SpecError(f"training.times: expected sorted times within [0, T = {T:g}], got {_show(times)}")
    if len(set(times)) != len(times):
        raise SpecError(f"training.times: expected distinct times, got {_show(times)}")
    L = t.get("L", "integer", None)
    tol = t.get("memory_tol", "number", None)
    record_risk = t.get("record_risk", "boolean", True)
    t.finish()
    warnings = []
    if L is not None and tol is not None:
        raise SpecError("training.memory_tol: give either training.L or training.memory_tol, not both")
    if L is None:
        tol = _DEFAULT_TOL if tol is None else float(tol)
        if not 0 < tol < 1:
            raise SpecError(f"training.memory_tol: expected a number in (0, 1), got {tol:g}")
        try:
            L, bound = window_length(cfg, chain, target.m, tol, max_histories=max_h)
        except ChainError as exc:
            raise SpecError(f"training.memory_tol: {one_line(exc)} (limit.max_histories = {max_h})") from None
        if L > _MAX_L:
            raise SpecError(f"training.memory_tol: {tol:g} needs L = {L}; expected L <= {_MAX_L} (a larger "
                            "memory_tol, or training.L)")
        if bound > tol:
            warnings.append(f"training.L: limit.max_histories = {max_h} shortens the window to L = {L}, so the "
                            f"memory bound rho^L = {bound:.3g} exceeds training.memory_tol = {tol:g}")
    elif L < max(1, target.m):
        raise SpecError(f"training.L: expected an integer >= the target memory m = {target.m}, got {_show(L)}")
    elif L > _MAX_L:
        raise SpecError(f"training.L: expected an integer <= {_MAX_L}, got {_show(L)}")
    try:
        window_chain(chain, L, max_histories=max_h)
    except ChainError:
        raise SpecError(f"training.L: L = {L} gives more than limit.max_histories = {max_h} histories; expected "
                        f"a smaller L or a larger limit.max_histories (at most {_MAX_HISTORIES})") from None
    training_c = {"T": T, "times": times, "L": int(L), "record_risk": record_risk}
    return T, tuple(times), int(L), record_risk, training_c, warnings


def _memory_mode(memory: str, cfg: RNNConfig, chain, target, max_h: int) -> bool:
    """Whether the limit is over the infinite past (``limit.memory``; ``auto``: when the longest window with
    at most ``max_h`` histories leaves a memory bound ``rho^L`` above 1e-6, docs/model.md#memory and #sampled)."""
    if memory != "auto":
        return memory == "sampled"
    try:
        _, bound = window_length(cfg, chain, target.m, _DEFAULT_TOL, max_histories=max_h)
    except ChainError:
        return True
    return bound > _DEFAULT_TOL


def _replicas(t: "_Table"):
    widths = t.get("widths", "list of integers")
    n_init = t.get("n_init", "integer")
    n_data = t.get("n_data", "integer")
    block = t.get("block", "integer", 16)
    t.finish()
    if not widths or any(w < 1 for w in widths):
        raise SpecError(f"replicas.widths: expected a non-empty list of integers >= 1, got {_show(widths)}")
    if any(w > _MAX_WIDTH for w in widths):
        raise SpecError(f"replicas.widths: expected widths <= {_MAX_WIDTH} (2**24), got {_show(max(widths))}")
    if len(set(widths)) != len(widths):
        raise SpecError(f"replicas.widths: expected distinct widths, got {_show(widths)}")
    for key, v in (("n_init", n_init), ("n_data", n_data), ("block", block)):
        if v < 1:
            raise SpecError(f"replicas.{key}: expected an integer >= 1, got {_show(v)}")
        if v > _MAX_UNITS:
            raise SpecError(f"replicas.{key}: expected an integer <= {_MAX_UNITS}, got {_show(v)}")
    units = len(widths) * n_init * -(-n_data // block)
    if units > _MAX_UNITS:
        raise SpecError(f"replicas: {len(widths)} widths x {n_init} inits x {-(-n_data // block)} data blocks = "
                        f"{units} work units; expected at most {_MAX_UNITS} (fewer replicas or a larger block)")
    out = Replicas(widths=tuple(int(w) for w in widths), n_init=n_init, n_data=n_data, block=block)
    return out, {"widths": list(out.widths), "n_init": n_init, "n_data": n_data, "block": block}


def _probes(t: "_Table", chain, L: int, max_h: int):
    k = t.get("most_likely", "integer", None)
    windows = t.get("windows", "list of windows", None)
    t.finish()
    if (k is None) == (windows is None):
        raise SpecError("probes: expected exactly one of probes.most_likely or probes.windows")
    win = window_chain(chain, L, max_histories=max_h)
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
                if not (w.isascii() and w.isdigit()):
                    raise SpecError(f"{key}: expected a string of state digits, got {_show(w)}")
                w = [int(c) for c in w]
            if len(w) != L:
                raise SpecError(f"{key}: expected a window of L = {L} states, got {len(w)}")
            if any(s < 0 or s >= chain.n_states for s in w):
                raise SpecError(f"{key}: expected states in 0..{chain.n_states - 1}, got {_show(w)}")
            try:
                win.index([w])
            except ChainError as exc:
                raise SpecError(f"{key}: {one_line(exc)}") from None
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
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= _MAX_ABS


def _has_big_number(v, depth: int = 0) -> bool:
    """Whether ``v`` holds (within two list levels) a number that is not finite or above the bound."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return not (math.isfinite(v) and abs(v) <= _MAX_ABS)
    return isinstance(v, list) and depth < 2 and any(_has_big_number(x, depth + 1) for x in v)


def _is_name(v) -> bool:
    return isinstance(v, str) and 0 < len(v) <= _MAX_NAME and v.isprintable()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number_list(v) -> bool:
    return isinstance(v, list) and all(_is_number(x) for x in v)


_KINDS = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "name": (_is_name, f"a non-empty string of at most {_MAX_NAME} printable characters"),
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
    "keyword arguments": (lambda v: isinstance(v, dict) and all(
        isinstance(k, str) and (_is_number(x) or isinstance(x, bool) or _is_name(x) or _number_list(x))
        for k, x in v.items()), "a table of keyword arguments (numbers, lists of numbers, booleans or strings)"),
    "list of windows": (lambda v: isinstance(v, list)
                        and all(isinstance(w, str) or (isinstance(w, list) and all(_is_int(s) for s in w))
                                for w in v),
                        "a list of windows (lists of state indices, or strings of state digits)"),
}


def _show(v) -> str:
    """A value in a message: its repr, cut to 40 characters (no input can make a message long)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10**30:
        return f"an integer of about {int(v.bit_length() * 0.30103) + 1} digits"
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class _Table:
    """A TOML table read key by key; unread keys are reported by :meth:`finish`."""

    def __init__(self, data: dict, prefix: str):
        self.data, self.prefix, self.seen = data, prefix, set()

    def _key(self, k: str) -> str:
        return f"{self.prefix}{k if _is_name(k) and len(k) <= 40 else _show(k)}"

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
            if ("number" in kind or kind in ("matrix", "inputs")) and _has_big_number(v):
                what += f" (finite, |x| <= {_MAX_ABS:g})"
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
