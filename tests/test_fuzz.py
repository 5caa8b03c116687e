"""Seeded fuzzing of specs: every mutated spec is accepted or refused on one line, never a traceback or a hang.

1,200 mutations of a valid spec go through :func:`distntk.spec.parse_spec` in-process and 60 through
the command line (``distntk run ... --max-core-hours 1e-12``: a spec that validates is then refused by
its cost estimate, before a store is created or Ray started, so every case ends in one error line).
Mutations replace values with extreme or ill-typed ones (overflowing, subnormal and non-finite
numbers, 5000-digit integers, 100,000-element lists, 5000-deep nesting, 100,000-character and
control-character strings, code targets), delete, duplicate, swap lines, add unknown keys and flip
characters.  A case that takes longer than ``HANG_S`` seconds counts as a hang (SIGALRM).
The seed is fixed, so the cases are the same on every run.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
from raytools import section6_toml

from distntk.cli import main
from distntk.spec import Spec, SpecError, parse_spec

SEED = 20261126
N_SPECS = 1200
N_CLI = 60
HANG_S = 20

BASE = section6_toml(seed=1, widths=(16, 32), n_init=2, n_data=4, block=2, name="fuzz") + "[limit]\nresolution = 8\n"

EVIL = [
    "0", "-1", "1", "2", "64", "65", "13", "1e308", "-1e308", "5e-324", "nan", "inf", "-inf", "1e-300", "0.9999999",
    "1.5", "2.5", "1e6", "1000001", "1000000000", "-1000000000000", "4194305", "16777217", "1" + "0" * 5000,
    "1" + "0" * 40, "true", "false", '"x"', '""', '"' + "a" * 100_000 + '"', '"a\\u0000b"', '"line\\nbreak"',
    '"\\u001b[31mred"', "[]", "[[]]", "{}", "[" * 5000 + "]" * 5000, "[1e308, -1e308]", "[1e6, -1e6]",
    "[[1.0, 5e-324], [0.3, 0.7]]", "[[1.0, 0.0], [0.0, 1.0]]", "[[0.5, 0.5], [0.5, 0.5]]", "[[0.2, 0.8], [0.8, 0.2]]",
    '"sys:exit"', '"pickle:loads"', '"os:system"', '"product"', '"linear"', '"tanh_linear"', '"sigmoid"',
    '"truncated"', '"fast"', '"reference"', "[0.5, 1.0, 1.0]", "[1.0, 0.5]", "[0.0, 1.0]",
    "[" + ", ".join(f"{i / 100_000:.6f}" for i in range(100_000)) + "]", "[16, 16]", "[1000000000]", "[16777216]",
    "[-1.0, 1.0, 2.0]", "[[-1.0], [1.0]]", "[[-1.0, 2.0], [1.0, 0.0]]", '["0000", "1111"]', '["00x0"]',
    "[[0, 0, 0, 9]]",
    "[1.0, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]",
    "1e-12", "0.5", "0.75", "0.99", "100", "4096", "16384", "16385",
]
KEYS = ["m = 3", "weights = [1.0, 2.0]", "max_histories = 8192", "memory_tol = 1e-9", "memory_tol = 1e-300",
        "burn_in = 1", "burn_in = 100000000", "noise_std = 1e300", "alpha = 1e300", "record_risk = 1",
        "store = \"/dev/null\"", "name = \"a/b\\u0007\"", "\u00e9t\u00e9 = 1", "\"\\u0000\" = 2", "kernel = \"nope\""]


def _mutate(text: str, rng: np.random.Generator) -> str:
    lines = text.splitlines()
    for _ in range(int(rng.integers(1, 4))):
        op = rng.integers(0, 8)
        k = int(rng.integers(0, len(lines))) if lines else 0
        if op <= 2 and lines:  # a value replaced
            if " = " in lines[k]:
                key = lines[k].split(" = ", 1)[0]
                lines[k] = f"{key} = {EVIL[int(rng.integers(0, len(EVIL)))]}"
        elif op == 3 and lines:
            del lines[k]
        elif op == 4 and lines:
            lines.insert(k, lines[k])
        elif op == 5:
            lines.insert(k, KEYS[int(rng.integers(0, len(KEYS)))])
        elif op == 6 and len(lines) > 1:
            j = int(rng.integers(0, len(lines)))
            lines[k], lines[j] = lines[j], lines[k]
        elif lines:  # one character flipped to a random one, control characters included
            line = lines[k]
            if line:
                i = int(rng.integers(0, len(line)))
                lines[k] = line[:i] + chr(int(rng.integers(0, 0x250))) + line[i + 1:]
    return "\n".join(lines) + "\n"


def _cases(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [_mutate(BASE, rng) for _ in range(n)]


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def _check(text: str, allow_code: bool = False):
    """``None`` if ``text`` is accepted or refused on one line, else a description of what went wrong."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_S)
    try:
        spec = parse_spec(text, default_name="fuzz", allow_code=allow_code)
        assert isinstance(spec, Spec) and len(spec.hash) == 64
        return None
    except SpecError as exc:
        msg = str(exc)
        if "\n" in msg or len(msg) > 1000 or not msg.isprintable():
            return f"not one short printable line: {msg[:200]!r}"
        return None
    except _Hang:
        return f"hang (> {HANG_S} s)"
    except BaseException as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_the_base_spec_is_valid():
    assert _check(BASE) is None and parse_spec(BASE).experiment.replicas.widths == (16, 32)


def test_mutated_specs_are_accepted_or_refused_on_one_line():
    bad = []
    accepted = 0
    for i, text in enumerate(_cases(N_SPECS, SEED)):
        why = _check(text)
        if why is not None:
            bad.append((i, why, text[:300]))
        else:
            try:
                parse_spec(text)
                accepted += 1
            except SpecError:
                pass
    assert not bad, bad[:5]
    assert 0 < accepted < N_SPECS  # the mutations reach both outcomes (not all trivially refused)


@pytest.mark.parametrize("target", ["sys:exit", "builtins:exit", "math:sqrt", "numpy:sum", "builtins:len",
                                    "json:dumps", "no_such_module_xyz:f", "os.path:join", "distntk.spec:parse_spec"])
def test_code_targets_allowed_still_end_on_one_line(target):
    text = BASE.replace('name = "tanh_linear"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]',
                        f'name = "{target}"\nm = 2')
    assert target in text
    assert _check(text, allow_code=True) is None
    with pytest.raises(SpecError, match="is code"):  # and without --allow-code nothing is imported
        parse_spec(text)


def test_mutated_specs_through_the_command_line(tmp_path, capsys):
    bad = []
    for i, text in enumerate(_cases(N_CLI, SEED + 1)):
        path = tmp_path / f"case{i}.toml"
        path.write_text(text)
        store = tmp_path / f"s{i}.zarr"
        code = main(["run", str(path), "--store", str(store), "--max-core-hours", "1e-12", "--no-progress"])
        out, err = capsys.readouterr()
        if code != 2 or out or err.count("\n") != 1 or not err.startswith("distntk: error: ") or store.exists():
            bad.append((i, code, err[:300]))
    assert not bad, bad[:5]


def test_a_few_mutated_specs_in_a_real_process(tmp_path):
    for i, text in enumerate(_cases(2, SEED + 2)):
        path = tmp_path / f"case{i}.toml"
        path.write_text(text)
        p = subprocess.run([sys.executable, "-m", "distntk", "run", str(path), "--store", str(tmp_path / "s.zarr"),
                            "--max-core-hours", "1e-12"], capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1, p.stderr[-2000:]
        assert p.stderr.startswith("distntk: error: ") and "Traceback" not in p.stderr
