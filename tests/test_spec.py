"""TOML specs: validation messages name the key, canonical form and diffs."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from raytools import section6_toml

from distntk.spec import SpecError, load_spec, parse_spec, spec_diff

ROOT = Path(__file__).resolve().parents[1]

BASE = section6_toml(seed=1, widths=(16,), n_init=2, n_data=4)  # block and name left to their defaults


def _with(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


def _error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_base_spec_builds_the_experiment():
    s = parse_spec(BASE, default_name="base")
    e = s.experiment
    assert s.name == "base" and s.store == "stores/base.zarr"
    assert e.L == 4 and e.model.burn_in == 4 and e.replicas.block == 16
    assert e.probes.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert s.canonical["model"]["beta"] == 0.75  # RNNConfig default filled in
    assert len(s.hash) == 64


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("b_max = 0.3", "b_max = 'x'", "model.b_max: expected a number, got 'x'"),
        ("b_max = 0.3", "b_max = 1.5", "model.b_max: contraction factor rho"),
        ("b_max = 0.3", "b_max = 0.3\nbeta = 0.4", "model.beta: beta is 0.4"),
        ("b_max = 0.3", "b_max = 0.3\ndepth = 3", "model.depth: unknown key"),
        ("[[0.8, 0.2], [0.3, 0.7]]", "[[0.8, 0.2], [0.3, 0.67]]",
         "chain.transition: transition matrix row 1 sums to 0.97; rows must sum to 1"),
        ("[[0.8, 0.2], [0.3, 0.7]]", "[[0.0, 1.0], [1.0, 0.0]]", "chain.transition: chain is periodic"),
        ("[[0.8, 0.2], [0.3, 0.7]]", "[[0.8, 0.2, 0.0], [0.3, 0.7]]", "chain.transition: expected a square"),
        ("inputs = [-1.0, 1.0]", "inputs = [-1.0, 1.0, 2.0]", "chain.inputs: state inputs have shape"),
        ("seed = 1\n", "", "seed: missing; expected an integer"),
        ("seed = 1\n", "seed = 1.5\n", "seed: expected an integer, got 1.5"),
        ("name = \"tanh_linear\"", "name = \"tanh_lineer\"", "target.name: unknown target 'tanh_lineer'"),
        ("outer = [0.0, 0.0, 0.3]", "outer = [0.0, 0.0, 0.3]\nslope = 2", "target.slope: unknown key"),
        ("name = \"tanh_linear\"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]",
         "name = \"no_such_module_xyz:f\"\nm = 2", "target.name: 'no_such_module_xyz:f' is code"),
        ("L = 4", "L = 2", "training.L: expected an integer >= the target memory m = 3"),
        ("times = [0.5, 1.0]", "times = [1.0, 0.5]", "training.times: expected sorted times"),
        ("times = [0.5, 1.0]", "times = [0.5, 2.0]", "training.times: expected sorted times within [0, T = 1]"),
        ("widths = [16]", "widths = []", "replicas.widths: expected a non-empty list"),
        ("n_init = 2", "n_init = 0", "replicas.n_init: expected an integer >= 1"),
        ("most_likely = 2", "most_likely = 99", "probes.most_likely: expected an integer in [1, 16]"),
        ("most_likely = 2", "windows = [\"0000\", [0, 1, 0, 1]]", None),
        ("most_likely = 2", "windows = [\"000\"]", "probes.windows[0]: expected a window of L = 4 states"),
        ("most_likely = 2", "", "probes: expected exactly one of"),
        ("[probes]\nmost_likely = 2\n", "", "[probes]: missing section"),
        ("seed = 1\n", "seed = 1\nextra = true\n", "extra: unknown key"),
        ("T = 1.0", "T = -1.0", "training.T: expected a number > 0"),
    ],
)
def test_errors_name_the_key(old, new, expected):
    text = _with(old, new)
    if expected is None:
        parse_spec(text)
        return
    msg = _error(text)
    assert msg.startswith(expected), msg


def test_invalid_toml_is_one_line():
    msg = _error("seed = \n")
    assert "invalid TOML" in msg


def test_zero_probability_window_is_rejected():
    text = _with("[[0.8, 0.2], [0.3, 0.7]]", "[[0.5, 0.5], [1.0, 0.0]]")
    text = text.replace("most_likely = 2", 'windows = ["0110"]')
    assert _error(text).startswith("probes.windows[0]: window has zero stationary probability")


def test_memory_tol_resolves_L():
    s = parse_spec(_with("L = 4", "memory_tol = 1e-3"))
    assert s.experiment.L == 6  # ceil(log 1e-3 / log 0.3)
    assert s.canonical["training"]["L"] == 6


def test_user_target(tmp_path, monkeypatch):
    (tmp_path / "mytargets.py").write_text("def last(x):\n    return x[:, -1, 0]\n\ndef bad(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = _with('name = "tanh_linear"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]', 'name = "mytargets:last"\nm = 1')
    s = parse_spec(text, allow_code=True)
    assert s.experiment.target.m == 1
    digest = hashlib.sha256((tmp_path / "mytargets.py").read_bytes()).hexdigest()
    assert s.canonical["target"] == {"name": "mytargets:last", "m": 1, "source_sha256": digest}
    with pytest.raises(SpecError) as info:
        parse_spec(text.replace("last", "bad"), allow_code=True)
    assert str(info.value).startswith("target: target mytargets:bad returned shape")
    with pytest.raises(SpecError, match=r"^target.scale: unknown key; a 'module:function' target takes only"):
        parse_spec(text.replace("m = 1", "m = 1\nscale = 2"), allow_code=True)


def test_canonical_hash_ignores_layout_and_names_differences():
    a = parse_spec(BASE)
    b = parse_spec("# comment\n" + BASE.replace("T = 1.0", "T = 1").replace("seed = 1", 'seed = 1\nname = "other"'))
    assert a.hash == b.hash
    c = parse_spec(_with("b_max = 0.3", "b_max = 0.3\nbeta = 0.7").replace("widths = [16]", "widths = [16, 32]"))
    assert spec_diff(a.canonical, c.canonical) == ["model.beta", "replicas.widths"]


def test_shipped_specs_validate():
    q = load_spec(ROOT / "jobs" / "quickstart.toml")
    s = load_spec(ROOT / "jobs" / "sticky-binary.toml")
    for spec in (q, s):
        e = spec.experiment
        assert e.model.b_max == 0.3 and e.model.beta == 0.75 and e.T == 2.0 and e.L == 8
        np.testing.assert_array_equal(e.chain.P, [[0.8, 0.2], [0.3, 0.7]])
    assert max(q.experiment.replicas.widths) <= 256
    assert s.experiment.replicas.widths[0] == 256 and s.experiment.replicas.widths[-1] == 8192


def test_missing_file():
    with pytest.raises(SpecError, match="spec file 'nope.toml' not found"):
        load_spec("nope.toml")


# --------------------------------------------------------------------------- what the issue measured (issue 10)


TARGET = 'name = "tanh_linear"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]'


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("[[0.8, 0.2], [0.3, 0.7]]", "[[1.0, 5e-324], [0.3, 0.7]]", "chain.transition: expected probabilities that"),
        ("inputs = [-1.0, 1.0]", "inputs = [1e308, -1e308]", "chain.inputs: expected one input per state"),
        ("inputs = [-1.0, 1.0]", "inputs = " + "[" * 5000 + "]" * 5000, "spec: invalid TOML"),
        ("seed = 1\n", "seed = 1" + "0" * 5000 + "\n", "spec: invalid TOML"),
        ("b_max = 0.3", "b_max = 0.3\nalpha = 1e308", "model.alpha: expected a number (finite, |x| <= 1e+06)"),
        ("T = 1.0", "T = 1e308", "training.T: expected a number (finite, |x| <= 1e+06)"),
        ("T = 1.0", "T = 1e5", "training.T: expected a number <= 10000"),
        ("times = [0.5, 1.0]", "times = [" + ", ".join(f"{i / 1e5:.5f}" for i in range(100_000)) + "]",
         "training.times: expected at most 1000 times"),
        ("most_likely = 2", "most_likely = 2\n[limit]\nresolution = 1000", "limit.resolution: expected an integer in"),
        ("n_init = 2", "n_init = 1000000000", "replicas.n_init: expected an integer <= 4194304"),
        ("n_data = 4", "n_data = 1000000000", "replicas.n_data: expected an integer <= 4194304"),
        ("n_init = 2", "n_init = 1" + "0" * 40, "replicas.n_init: expected an integer <= 4194304, got "
         "an integer of about 41 digits"),
        ("widths = [16]", "widths = [1000000000]", "replicas.widths: expected widths <= 16777216"),
        ("n_init = 2", "n_init = 2097152\nblock = 1", "replicas: 1 widths x 2097152 inits x 4 data blocks"),
        (TARGET, 'name = "' + "x" * 100_000 + '"', "target.name: expected a non-empty string of at most 200"),
        ("seed = 1\n", 'seed = 1\nname = "a\\nb"\n', "name: expected a non-empty string of at most 200 printable"),
        ("seed = 1\n", 'seed = 1\nname = "a\\u0000b"\n', "name: expected a non-empty string of at most 200 printable"),
        (TARGET, 'name = "sys:exit"\nm = 2', "target.name: 'sys:exit' is code"),
        (TARGET, 'name = "pickle:loads"\nm = 2', "target.name: 'pickle:loads' is code"),
        ("L = 4", "L = 13", "training.L: L = 13 gives more than limit.max_histories = 4096 histories"),
        ("L = 4", "L = 65", "training.L: expected an integer <= 64"),
        (TARGET, 'name = "product"\nm = 0.5', "target.m: expected an integer, got 0.5"),
        (TARGET, 'name = "linear"\nweights = [' + ", ".join(["0.1"] * 65) + "]", "target.weights: expected a list of"),
    ],
)
def test_issue_inputs_are_refused_on_one_line(old, new, expected):
    msg = _error(_with(old, new))
    assert msg.startswith(expected) and len(msg) <= 400 and msg.isprintable(), msg


def test_long_and_control_character_values_are_cut_in_messages():
    msg = _error(_with("b_max = 0.3", 'b_max = "' + "\\u0007" * 5000 + '"'))
    assert msg.startswith("model.b_max: expected a number, got") and len(msg) < 120 and msg.isprintable()
    msg = _error(_with("b_max = 0.3", "b_max = 0.3\n" + "k" * 5000 + " = 1"))
    assert msg.startswith("model.'kkkkk") and len(msg) < 200


def test_product_target_works():
    """The documented built-in ``product``: f = X_k X_{k-1} ... over the last m lags (first coordinate)."""
    s = parse_spec(_with(TARGET, 'name = "product"\nm = 2'))
    e = s.experiment
    assert s.canonical["target"] == {"name": "product", "m": 2} and e.target.m == 2
    win = np.array([[0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 0]])
    inputs = np.array([[-1.0], [1.0]])  # state 0 -> -1, state 1 -> +1
    np.testing.assert_array_equal(e.target.on_windows(inputs, win), [1.0, -1.0, -1.0])
    out = e.compute(e.units()[0])["output"]
    assert out.shape == (4, 2, 2) and np.isfinite(out).all()  # 4 data sequences x 2 times x 2 probes
    pred = e.predictions()
    assert np.isfinite(pred.h.values).all() and (pred.nvar_poisson.values >= 0).all()


def test_code_targets_are_never_imported_without_allow_code(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef f(x):\n    return x[:, -1, 0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = _with(TARGET, 'name = "evilmod:f"\nm = 1')
    with pytest.raises(SpecError, match=r"^target.name: 'evilmod:f' is code .* distntk run --allow-code$"):
        parse_spec(text)
    assert not marker.exists()
    s = parse_spec(text, allow_code=True)  # explicitly allowed: imported
    assert marker.exists() and s.experiment.target.m == 1
    # the module's source digest is part of the hash: changed code, another experiment
    (tmp_path / "evilmod.py").write_text((tmp_path / "evilmod.py").read_text() + "# changed\n")
    again = parse_spec(text, allow_code=True)
    assert again.hash != s.hash and spec_diff(s.canonical, again.canonical) == ["target.source_sha256"]


def test_target_raising_system_exit_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "quitter.py").write_text("import sys\n\ndef f(x):\n    sys.exit(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SpecError) as info:
        parse_spec(_with(TARGET, 'name = "quitter:f"\nm = 1'), allow_code=True)
    msg = str(info.value)
    assert msg.startswith("target: 'quitter:f' failed on the chain's windows: SystemExit") and "\n" not in msg


def test_builtin_hashes_are_those_of_earlier_versions():
    """The canonical form of a built-in-target spec gained no key: its hash is the one distntk 0.1.0 gave.

    The constant is the hash of BASE computed by the main branch before this change (issue 10), not by
    the code under test.
    """
    s = parse_spec(BASE)
    assert s.canonical["limit"] == {"resolution": None} and "source_sha256" not in s.canonical["target"]
    assert s.hash == "33db4573eb975f821c548c6e83f43e274506a53dca46f09d391b51eda3ab15ea"


def test_one_history_limit_named_by_its_key():
    """limit.max_histories (default 4096) bounds L in load_spec and in the limit the run solves."""
    text = _with("L = 4", "L = 13")
    assert "limit.max_histories" in _error(text)
    s = parse_spec(text.replace("most_likely = 2", "most_likely = 2\n[limit]\nmax_histories = 8192"))
    assert s.experiment.L == 13 and s.experiment.limit.max_histories == 8192
    assert s.canonical["limit"] == {"resolution": None, "max_histories": 8192}
    # the run solves the limit with the same limit (a smaller spec keeps this fast)
    small = parse_spec(_with("most_likely = 2", "most_likely = 2\n[limit]\nmax_histories = 16"))
    assert small.experiment.solve().window.n_histories == 16
    # a memory_tol that the limit cannot reach: L is shortened, with a warning naming both keys
    w = parse_spec(_with("L = 4", "memory_tol = 1e-12"))
    assert w.experiment.L == 12  # 2**12 = 4096 histories on the two-state chain; rho^12 = 0.3^12 = 5.3e-7
    [msg] = w.warnings
    assert msg.startswith("training.L: limit.max_histories = 4096 shortens the window to L = 12") and \
        "exceeds training.memory_tol = 1e-12" in msg
    assert parse_spec(_with("L = 4", "memory_tol = 1e-3")).warnings == ()


def test_engine_key_and_its_old_name_kernel_give_one_hash():
    """The training engine's spec key is ``engine``; ``kernel`` (its old name) still reads, hashing the same."""
    new = parse_spec(BASE.replace("seed = ", 'engine = "reference"\nseed = ', 1))
    old = parse_spec(BASE.replace("seed = ", 'kernel = "reference"\nseed = ', 1))
    assert new.canonical == old.canonical and new.canonical["engine"] == "reference"
    assert new.hash == old.hash and new.hash != parse_spec(BASE).hash
    assert old.experiment.engine == "reference" and any("old name" in w for w in old.warnings)
    assert not new.warnings
    with pytest.raises(SpecError, match="kernel: the old name of engine; give engine only"):
        parse_spec(BASE.replace("seed = ", 'engine = "fast"\nkernel = "fast"\nseed = ', 1))
    with pytest.raises(SpecError, match="engine: unknown engine 'turbo'"):
        parse_spec(BASE.replace("seed = ", 'engine = "turbo"\nseed = ', 1))


def test_a_store_written_before_the_engine_rename_still_opens_and_resumes(tmp_path):
    """A store as distntk wrote it before the rename (canonical key and attribute ``kernel``) is the same spec."""
    import json

    from distntk.store import open_or_create, open_result_store, open_store, store_model

    spec = parse_spec(BASE)
    path = tmp_path / "old.zarr"
    rs = open_or_create(path, spec, spec.experiment.predictions)
    g = rs.group
    canonical = json.loads(g.attrs["spec_canonical"])
    canonical = {("kernel" if k == "engine" else k): v for k, v in canonical.items()}  # the old layout
    attrs = dict(g.attrs)
    attrs["kernel"] = attrs.pop("engine")
    attrs["spec_canonical"] = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    g.attrs.clear()
    g.attrs.update(attrs)
    assert "engine" not in open_result_store(path).canonical
    again = open_or_create(path, spec, spec.experiment.predictions)  # not refused: the same experiment
    assert again.pending(spec.experiment.units()) == spec.experiment.units()
    cfg, chain, seed = store_model(open_store(path))
    assert seed == spec.experiment.seed and cfg == spec.experiment.model
    other = parse_spec(BASE.replace("seed = ", 'engine = "reference"\nseed = ', 1))
    with pytest.raises(Exception, match=r"spec differs from the store's in keys: engine \("):
        open_or_create(path, other, other.experiment.predictions)


def test_each_table_is_one_value_object_with_the_specs_key_names():
    """``[model]``, ``[replicas]`` and ``[limit]`` reach the experiment as frozen value objects whose fields
    are the tables' keys: every key of the canonical (hashed) table is a field of the same name holding the
    same value, so a parameter has one name from the TOML file to the solver."""
    import dataclasses

    text = _with("most_likely = 2", "most_likely = 2\n[limit]\ntol = 1e-5\nmax_histories = 8192\n"
                 'memory = "sampled"\nl0 = 3\nsegments = 4\nsegment_steps = 512')
    s = parse_spec(text)
    e = s.experiment
    for table, obj in (("model", e.model), ("replicas", e.replicas), ("limit", e.limit)):
        assert dataclasses.is_dataclass(obj) and obj.__dataclass_params__.frozen
        names = {f.name for f in dataclasses.fields(obj)}
        canon = s.canonical[table]
        assert set(canon) <= names, (table, set(canon) - names)
        for key, value in canon.items():
            got = getattr(obj, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, (table, key)
    assert set(s.canonical["limit"]) >= {"tol", "max_histories", "memory", "l0", "segments", "segment_steps"}
    assert not {"widths", "n_init", "kernel_tol", "quad_tol", "L0"} & {f.name for f in dataclasses.fields(e)}


@pytest.mark.parametrize(("make", "key"), [
    (lambda: __import__("distntk").RNNConfig(sigma_a=-1.0), "sigma_a"),
    (lambda: __import__("distntk").RNNConfig(b_max=2.0), "b_max"),  # the message starts "contraction factor"
    (lambda: __import__("distntk").markov_chain([[0.5, 0.5], [0.5, 0.5]], [1.0, 2.0, 3.0]), "inputs"),
    (lambda: __import__("distntk").markov_chain([[0.0, 1.0], [1.0, 0.0]]), "transition"),  # periodic
    (lambda: __import__("distntk").make_target("no_such_module_here:f", m=1), "name"),
])
def test_errors_carry_the_key_they_belong_to(make, key):
    """The science modules' errors name their input in ``key``; the spec prefixes its table from there,
    never from the message's words."""
    from distntk import DistntkError

    with pytest.raises(DistntkError) as info:
        make()
    assert info.value.key == key


def test_a_model_error_is_named_by_its_key_not_its_wording():
    assert _error(_with("b_max = 0.3", "b_max = 2.0")).startswith("model.b_max: contraction")
    assert _error(_with("b_max = 0.3", "b_max = 0.3\nsigma_w = -1.0")).startswith("model.sigma_w: ")
