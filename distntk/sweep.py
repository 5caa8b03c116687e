"""Parameter sweeps: one spec with a ``[sweep]`` table stands for a family of ordinary specs.

A sweep spec is an ordinary spec (the *base*) plus a ``[sweep]`` table whose keys are
quoted dotted spec keys and whose values are lists::

    [sweep]
    "model.beta"  = [0.6, 0.8]          # a grid axis
    "model.b_max" = [0.2, 0.4]          # another: 4 members, the Cartesian product

    [sweep.zip]                         # optional: keys varied together, lists of one length
    name = ["sticky", "anti"]           # optional labels of the zipped values, used in member names
    "chain.transition" = [[[0.8, 0.2], [0.3, 0.7]], [[0.2, 0.8], [0.7, 0.3]]]
    "chain.inputs"     = [[-1.0, 1.0], [-1.0, 1.0]]

The members are the Cartesian product of the grid axes and (if present) the one zipped
axis, in the order the keys are written, the last key varying fastest.  Each member is
the base with those keys set: an ordinary spec with its own canonical form, hash and
validation (an error names the member).  ``name``, ``description`` and ``store`` cannot
be swept (they do not change a number); a member's store is ``ROOT/<member>.zarr``.

Member names list the varied keys with their values, ``model.beta=0.6,model.b_max=0.2``;
a list or table value, or one whose text is longer than ``_VALUE_CHARS``, is written as its
index in the sweep (``chain.transition@1``); the zipped keys are named together by the
label ``sweep.zip.name`` gives, else by ``zip@<index>``.  The name is then percent-escaped outside
``[A-Za-z0-9._=,+@-]`` so that it is a safe local file name and object-store key.
A spec without ``[sweep]`` is not a sweep (:func:`parse_sweep` returns ``None``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import tomllib
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ._text import one_line
from .spec import Spec, SpecError, canonical_json, parse_spec, read_spec_text

__all__ = ["Member", "Sweep", "parse_sweep", "load_sweep"]

_VALUE_CHARS = 24  # longer values are named by their index in the sweep
_MAX_MEMBERS = 10_000
_SPEC_NAME_CHARS = 200  # a member spec's name is "<base>.<member>" up to this length, else "<base>.member<k>"
_UNSWEPT = {"name", "description", "store", "sweep"}
_SAFE = "=,+-._@"


@dataclass(frozen=True)
class Member:
    """One member of a sweep: its name (also its store's name), the keys it sets, its spec."""

    name: str
    values: dict  # dotted key -> value set by the sweep
    spec: Spec


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the base spec's name, the swept keys and the members in sweep order."""

    name: str
    keys: tuple[str, ...]  # every swept key, grid then zipped
    members: tuple[Member, ...]
    text: str

    @property
    def manifest(self) -> dict:
        """What identifies the sweep in its root: member names with their spec hashes."""
        return {"name": self.name, "keys": list(self.keys),
                "members": [{"name": m.name, "store": f"{m.name}.zarr", "spec_hash": m.spec.hash,
                             "values": m.values} for m in self.members]}

    @property
    def hash(self) -> str:
        return hashlib.sha256(canonical_json(
            {"members": [[m.name, m.spec.hash] for m in self.members]}).encode()).hexdigest()


def load_sweep(path: str | os.PathLike, allow_code: bool = False) -> Sweep | None:
    """The sweep of the spec file at ``path``, or ``None`` when it has no ``[sweep]`` table."""
    return parse_sweep(read_spec_text(path), default_name=Path(path).stem, source=str(path), allow_code=allow_code)


def parse_sweep(text: str, default_name: str = "experiment", source: str = "spec",
                allow_code: bool = False) -> Sweep | None:
    """Expand ``text`` into its members, or ``None`` if it has no ``[sweep]`` table.

    ``allow_code`` is passed to every member's :func:`~distntk.spec.parse_spec`.
    """
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        raise SpecError(f"{source}: invalid TOML: {one_line(exc)}") from None
    if "sweep" not in raw:
        return None
    table = raw.pop("sweep")
    if not isinstance(table, dict):
        raise SpecError("sweep: expected a table of quoted dotted keys with lists of values")
    zipped = table.pop("zip", {})
    if not isinstance(zipped, dict):
        raise SpecError("sweep.zip: expected a table of quoted dotted keys with lists of one length")
    grid = {k: _values(f"sweep.{_q(k)}", v) for k, v in table.items()}
    zipped = {k: _values(f"sweep.zip.{_q(k)}", v) for k, v in zipped.items()}
    labels = zipped.pop("name", None)
    if labels is not None and not all(isinstance(x, str) and x for x in labels):
        raise SpecError("sweep.zip.name: expected a list of non-empty strings, one label per zipped value")
    if labels is not None and not zipped:
        raise SpecError("sweep.zip.name: labels need zipped keys beside them")
    if not grid and not zipped:
        raise SpecError("sweep: expected at least one quoted dotted key with a list of values")
    both = sorted(set(grid) & set(zipped))
    if both:
        raise SpecError(f"sweep: key {_q(both[0])} is both a grid axis and in sweep.zip; give it once")
    for k in [*grid, *zipped]:
        _check_key(raw, k)
    lengths = {len(v) for v in zipped.values()} | ({len(labels)} if labels is not None else set())
    if len(lengths) > 1:
        sizes = ", ".join(f"{_q(k)}: {len(v)}" for k, v in {**({"name": labels} if labels else {}),
                                                             **zipped}.items())
        raise SpecError(f"sweep.zip: the lists must have one length, got {sizes}")

    axes = [[((k, i, x),) for i, x in enumerate(v)] for k, v in grid.items()]
    if zipped:
        n = lengths.pop()
        axes.append([tuple((k, i, v[i]) for k, v in zipped.items()) for i in range(n)])
    zip_label = (lambda i: labels[i]) if labels is not None else (lambda i: f"zip@{i}")
    count = 1
    for a in axes:
        count *= len(a)
    if count > _MAX_MEMBERS:
        raise SpecError(f"sweep: {count} members; expected at most {_MAX_MEMBERS}")

    base = str(raw.get("name", default_name))
    raw.pop("store", None)
    members, names = [], set()
    for index, combo in enumerate(itertools.product(*axes)):
        sets = [s for part in combo for s in part]
        name = _member_name(sets[:len(grid)], zip_label(sets[-1][1]) if zipped else None)
        if name in names:
            raise SpecError(f"sweep: two members are both named {name!r}; give distinct values")
        names.add(name)
        member = copy.deepcopy(raw)
        for key, _, value in sets:
            _set(member, key, value)
        full = f"{base}.{name}"
        member["name"] = full if len(full) <= _SPEC_NAME_CHARS else f"{base[:100]}.member{index}"
        try:
            member_text = tomli_w.dumps(member)
        except (TypeError, ValueError) as exc:  # pragma: no cover - TOML values always dump back
            raise SpecError(f"sweep member {name}: {one_line(exc)}") from None
        try:
            spec = parse_spec(member_text, default_name=member["name"], source=f"{source} member {name}",
                              allow_code=allow_code)
        except SpecError as exc:
            raise SpecError(f"sweep member {name}: {one_line(exc)}") from None
        members.append(Member(name, {k: v for k, _, v in sets}, spec))
    return Sweep(name=base, keys=(*grid, *zipped), members=tuple(members), text=text)


def _q(key: str) -> str:
    return json.dumps(one_line(key, 80))


def _values(where: str, v) -> list:
    if not isinstance(v, list) or not v:
        raise SpecError(f"{where}: expected a non-empty list of values, got {one_line(repr(v), 80)}")
    return v


def _check_key(raw: dict, key: str) -> None:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise SpecError(f"sweep: key {_q(key)}: expected a dotted spec key such as \"model.beta\"")
    if parts[0] in _UNSWEPT:
        raise SpecError(f"sweep: key {_q(key)} cannot be swept (it changes no number; members get their own "
                        "names and stores)")
    node = raw
    for p in parts[:-1]:
        node = node.get(p, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise SpecError(f"sweep: key {_q(key)}: {p!r} is not a table of the spec")


def _set(d: dict, key: str, value) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def _member_name(grid_sets, zip_label: str | None) -> str:
    parts = []
    for key, index, value in grid_sets:
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        short = not isinstance(value, (list, dict)) and len(text) <= _VALUE_CHARS
        parts.append(f"{key}={text}" if short else f"{key}@{index}")
    if zip_label is not None:
        parts.append(zip_label)
    return urllib.parse.quote(",".join(parts), safe=_SAFE)
