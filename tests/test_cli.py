"""The command line: one-line errors with exit code 2, query formats, the demo through Ray."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from raytools import VENV_BIN, tiny_spec

from distntk.cli import main
from distntk.query import COLUMNS
from distntk.spec import load_spec
from distntk.store import create_store, open_or_create

ROOT = Path(__file__).resolve().parents[1]
NAMES = [name for name, _ in COLUMNS]

BAD_SPECS = {
    "missing-key": ("n_init = 2\n", "", "replicas.n_init: missing; expected an integer"),
    "wrong-type": ("b_max = 0.3", "b_max = 'x'", "model.b_max: expected a number, got 'x'"),
    "non-stochastic": ("[[0.8, 0.2], [0.3, 0.7]]", "[[0.8, 0.2], [0.3, 0.67]]",
                       "chain.transition: transition matrix row 1 sums to 0.97; rows must sum to 1"),
    "rho-ge-1": ("b_max = 0.3", "b_max = 1.0", "model.b_max: contraction factor rho = b_max * sup|sigma'| = 1; "
                 "expected rho < 1"),
    "unknown-target": ('name = "tanh_linear"', 'name = "tanh_lin"', "target.name: unknown target 'tanh_lin'"),
}


def _bad_spec(tmp_path, case) -> Path:
    old, new, _ = BAD_SPECS[case]
    p = tiny_spec(tmp_path / f"{case}.toml")
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))
    return p


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_one_line_exit_2(tmp_path, capsys, case):
    code = main(["run", str(_bad_spec(tmp_path, case)), "--store", str(tmp_path / "s.zarr")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"distntk: error: {BAD_SPECS[case][2]}" + err[len(f"distntk: error: {BAD_SPECS[case][2]}"):]
    assert err.count("\n") == 1 and err.startswith("distntk: error: ")
    assert not (tmp_path / "s.zarr").exists()  # nothing created for a bad spec


@pytest.mark.parametrize("entry", ["console-script", "python-m"])
@pytest.mark.parametrize("case", ["rho-ge-1", "unknown-target"])
def test_bad_spec_in_a_real_process(tmp_path, entry, case):
    cmd = [f"{VENV_BIN}/distntk"] if entry == "console-script" else [sys.executable, "-m", "distntk"]
    p = subprocess.run(cmd + ["run", str(_bad_spec(tmp_path, case))], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith(f"distntk: error: {BAD_SPECS[case][2]}") and p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["run", "no-such.toml"], "distntk: error: spec file 'no-such.toml' not found"),
        (["query", "{tmp}/missing.zarr"], "distntk: error: no distntk store at"),
        (["run", "{spec}", "--store", "/proc/distntk.zarr"],
         "distntk: error: cannot create store at /proc/distntk.zarr"),
        (["run", "{spec}", "--actors", "0"], "distntk: error: --actors 0: expected an integer >= 1"),
        (["query", "{store}", "--width", "5"], "distntk: error: --width 5: not in the store's widths [16, 32]"),
        (["query", "{store}", "--time", "0.7"], "distntk: error: --time 0.7: not on the store's time grid"),
        (["query", "{store}", "--probe", "x"], "distntk: error: --probe x: neither a probe label ("),
        (["query", "{store}", "--format", "xml"], "distntk: error: argument --format: invalid choice"),
        (["frobnicate"], "distntk: error: argument COMMAND: invalid choice"),
        (["query", "{store}", "--probe", "-1"], "distntk: error: --probe -1: neither a probe label ("),
        (["query", "{store}", "--form", "json"], "distntk: error: unrecognized arguments: --form json"),
        (["run", "{spec}", "--stor", "x.zarr"], "distntk: error: unrecognized arguments: --stor x.zarr"),
        (["run", "{other}", "--store", "{store}"], "distntk: error: spec differs from the store's in keys: seed"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, argv, expected):
    spec = tiny_spec(tmp_path / "tiny.toml")
    other = tiny_spec(tmp_path / "other.toml", seed=99)
    store = tmp_path / "s.zarr"
    create_store(store, load_spec(spec), load_spec(spec).experiment.predictions())
    fill = dict(tmp=tmp_path, spec=spec, other=other, store=store)
    code = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(expected) and err.count("\n") == 1, err


def test_query_formats_on_a_partial_store(tmp_path, capsys):
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    store = tmp_path / "s.zarr"
    rs = open_or_create(store, spec, spec.experiment.predictions)
    e = spec.experiment
    for u in e.units()[:3]:  # width 16: init 0 complete (2 units of 4), init 1 half
        rs.write_unit(u, e.compute(u), 0.1, "n")
    assert main(["query", str(store)]) == 0
    table = capsys.readouterr().out
    assert "N =     16:      12/16 replicas (3/4 units,  75.0%)" in table
    assert "N =     32:       0/16 replicas (0/4 units,   0.0%)" in table
    lines = table.splitlines()
    head = lines.index("simulation vs limit vs predictions (columns: docs/guides/laptop.md, \"Query columns\")") + 1
    assert lines[head].split() == NAMES  # the table's header is the one list
    assert len(lines) == head + 1 + 2 * 2 * 2 and all(len(ln.split()) == len(NAMES) for ln in lines[head + 1:])
    assert main(["query", str(store), "--width", "16", "--time", "1", "--probe", "1", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [row] = doc["rows"]
    assert list(row) == NAMES  # the JSON keys, in order
    assert row["width"] == 16 and row["time"] == 1.0 and row["probe"] == e.probe_labels()[1] and row["n"] == 12
    assert row["h"] == pytest.approx(float(e.predictions().h.values[1, 1]))
    assert main(["query", str(store), "--width", "32", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",") == NAMES and len(lines) == 1 + 2 * 2
    assert lines[1].split(",")[5] == ""  # no replicas of width 32 yet: empty mean


def test_docs_column_table_is_the_one_list():
    """The "Query columns" table (docs/guides/laptop.md, moved there from the README): the names and meanings
    of distntk.query.COLUMNS, in order."""
    text = (ROOT / "docs" / "guides" / "laptop.md").read_text()
    section = text[text.index("## Query columns"):text.index("## Verify")]
    rows = [ln.strip().strip("|").split("|") for ln in section.splitlines() if ln.strip().startswith("| `")]
    assert [(name.strip().strip("`"), meaning.strip()) for name, meaning in rows] == list(COLUMNS)
    assert len({name for name, _ in COLUMNS}) == len(COLUMNS)


def test_query_a_memory_url_with_storage_options(tmp_path, capsys):
    """fsspec URLs go through the same query; --storage-option values are JSON when they parse."""
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    url = f"memory://distntk-cli/{uuid.uuid4().hex}/s.zarr"
    rs = open_or_create(url, spec, spec.experiment.predictions)
    u = spec.experiment.units()[0]
    rs.write_unit(u, spec.experiment.compute(u), 0.1, "n")
    # MemoryFileSystem takes (and ignores) keyword arguments; a non-JSON value stays a string
    assert main(["query", url, "--format", "json", "--storage-option", "skip_instance_cache=true",
                 "--storage-option", "note=not json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["units_done"] for p in doc["progress"]] == [1, 0] and doc["store"]["spec_hash"] == spec.hash


def test_storage_option_values_stay_out_of_the_recorded_command():
    from distntk.cli import _redacted

    argv = ["run", "s.toml", "--storage-option", "secret=s1", "--storage-option=key=k1", "--storage-opt", "token=t1",
            "--stora=x=y", "--store", "s3://b/s.zarr"]
    assert _redacted(argv) == ["run", "s.toml", "--storage-option", "secret=...", "--storage-option=key=...",
                               "--storage-opt", "token=...", "--stora=x=...", "--store", "s3://b/s.zarr"]


@pytest.mark.timeout(1000)
def test_demo_runs_the_quickstart_through_ray_and_writes_the_report(quickstart_demo):
    p = quickstart_demo  # `distntk demo --store S --out R` in a subprocess, shared with tests/test_report.py
    assert p.returncode == 0, p.stderr[-3000:]  # its time is measured in bench/, not asserted (loaded machines)
    q = load_spec(ROOT / "jobs" / "quickstart.toml")
    assert "units to compute on an embedded local Ray" in p.stderr and "computed" in p.stderr
    n_rows = len(q.experiment.replicas.widths) * len(q.experiment.times) * len(q.experiment.probes)
    rows = [ln for ln in p.stdout.splitlines() if ln.split() and ln.split()[0] in {"64", "128", "256"}]
    assert len(rows) == n_rows
    per_width = q.experiment.replicas.n_init * q.experiment.replicas.n_data
    assert f"{per_width}/{per_width} replicas" in p.stdout
    # the within-initialisation variance follows the Poisson prediction, not the i.i.d. one
    for ln in rows:
        nvar, poisson, iid = (float(x) for x in ln.split()[7:10])
        assert abs(nvar - poisson) < abs(nvar - iid)
    # it ends by writing the report, printing its summary and then its path
    report = p.out / "report.md"
    assert p.stdout.rstrip().splitlines()[-1] == f"report: {report}"
    assert "report summary" in p.stdout and "**Headline: fluctuations across data sequences.**" in p.stdout
    # the summary printed is the report's own (report.summary()), bullet for bullet
    printed = p.stdout.split("report summary\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert printed and all(ln.startswith("- ") and ln in report.read_text() for ln in printed)
    assert "estimate for the whole spec: 6144 replicas in 192 units" in p.stderr
    md = report.read_text()
    assert "Complete store" in md and "None: every unit is done." in md
    for png in ("nvar_vs_t.png", "mean_vs_h.png", "convergence.png", "memory.png"):
        assert (p.out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_query_into_a_closed_pipe_is_quiet(tmp_path):
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    create_store(tmp_path / "s.zarr", spec, spec.experiment.predictions())
    # `true` has exited long before Python has started, so the first write meets a closed pipe
    p = subprocess.run(f"{VENV_BIN}/distntk query {tmp_path / 's.zarr'} | true; echo ${{PIPESTATUS[0]}}",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=300)
    assert p.stdout.strip() == "141" and p.stderr == "", p.stderr


# --------------------------------------------------------------------------- code, cost, memory (issue 10)


def _spec_with(tmp_path, old, new, name="case") -> Path:
    p = tiny_spec(tmp_path / f"{name}.toml")
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))
    return p


def _one_error(capsys, code, expected, lines=1):
    out, err = capsys.readouterr()
    assert code == 2 and out == "", err
    assert err.count("\n") == lines and err.splitlines()[-1].startswith(f"distntk: error: {expected}"), err
    return err


def test_run_refuses_code_targets_unless_allowed(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "usercode.py").write_text(f"open({str(marker)!r}, 'w').close()\n\ndef f(x):\n    return x[:, -1, 0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = _spec_with(tmp_path, 'name = "tanh_linear"\ninner = [1.0, 0.8]\nouter = [0.0, 0.0, 0.3]',
                      'name = "usercode:f"\nm = 1')
    store = tmp_path / "s.zarr"
    _one_error(capsys, main(["run", str(spec), "--store", str(store)]),
               "target.name: 'usercode:f' is code (a 'module:function' target runs that module); refused unless "
               "allowed explicitly: distntk run --allow-code")
    assert not marker.exists() and not store.exists()
    # opted in: imported, validated, then (here) refused by its cost before anything is created
    _one_error(capsys, main(["run", str(spec), "--store", str(store), "--allow-code", "--max-core-hours", "1e-12"]),
               "the estimate is")
    assert marker.exists() and not store.exists()


def test_run_refuses_above_max_core_hours_naming_the_estimate(tmp_path, capsys):
    spec = tiny_spec(tmp_path / "tiny.toml")
    from distntk.cost import estimate_cost

    cost = estimate_cost(load_spec(spec).experiment)
    # the formula of distntk/cost.py's docstring, by hand: burn-in L = 4 plus T N training steps, and at each of the
    # 2 times the 2 probes and the 2**4 = 16 histories of the two-state chain (risk), L = 4 steps each
    by_hand = sum(2 * 8 * N * ((4 + N) + 2 * 4 * (2 + 16)) for N in (16, 32))
    assert cost.unit_steps == by_hand and cost.replicas == 32 and cost.units == 8
    assert cost.store_bytes == 8 * 32 * 2 * (2 + 1)  # output (2 times x 2 probes) and risk (2 times)
    err = _one_error(capsys, main(["run", str(spec), "--store", str(tmp_path / "s.zarr"), "--max-core-hours", "1e-12"]),
                     f"the estimate is {cost.core_hours:.2g} core-hours ({cost.unit_steps:.3g} unit-steps), above "
                     "--max-core-hours 1e-12")
    assert "raise --max-core-hours" in err
    _one_error(capsys, main(["run", str(spec), "--max-core-hours", "0"]), "--max-core-hours 0: expected a number > 0")


def test_run_refuses_a_unit_that_cannot_fit_in_an_actor(tmp_path, capsys):
    """N = 2**24, 512 replicas per unit: about 0.5 TiB of parameters and memory state per unit, more than the
    whole machine (``--actors 1``: one actor may use all of it); refused before any store or Ray."""
    spec = _spec_with(tmp_path, "widths = [16, 32]", "widths = [16777216]")
    spec.write_text(spec.read_text().replace("T = 1.0", "T = 1e-06").replace("times = [0.5, 1.0]", "times = [1e-06]")
                    .replace("n_data = 8", "n_data = 512").replace("block = 4", "block = 512"))
    _one_error(capsys, main(["run", str(spec), "--store", str(tmp_path / "s.zarr"), "--actors", "1"]),
               "one work unit needs about")
    assert not (tmp_path / "s.zarr").exists()


def test_run_warns_when_the_history_limit_shortens_L(tmp_path, capsys):
    spec = _spec_with(tmp_path, "L = 4", "memory_tol = 1e-12")
    err = _one_error(capsys, main(["run", str(spec), "--store", str(tmp_path / "s.zarr"), "--max-core-hours", "1e-12"]),
                     "the estimate is", lines=2)
    assert err.startswith("distntk run: warning: training.L: limit.max_histories = 4096 shortens the window to L = 12")


def test_verify_command_on_a_missing_store(tmp_path, capsys):
    _one_error(capsys, main(["verify", str(tmp_path / "nope.zarr")]), "no distntk store at")


def test_version_and_help_on_every_option(capsys):
    from distntk import __version__
    from distntk.cli import _parser

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"distntk {__version__}"
    parser = _parser()
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0]
    for name, sub in [("distntk", parser), *subs.choices.items()]:
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"


def test_tilde_and_file_urls_name_local_stores(tmp_path, capsys, monkeypatch):
    spec = load_spec(tiny_spec(tmp_path / "tiny.toml"))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    rs = open_or_create(home / "s.zarr", spec, spec.experiment.predictions)
    u = spec.experiment.units()[0]
    rs.write_unit(u, spec.experiment.compute(u), 0.1, "n")
    assert main(["query", "~/s.zarr", "--format", "json"]) == 0
    by_tilde = json.loads(capsys.readouterr().out)["rows"]
    assert main(["query", f"file://{home}/s.zarr", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == by_tilde
    assert by_tilde[0]["n"] == u.data_stop - u.data_start
    assert not (tmp_path / "~").exists() and not Path("~").exists()
