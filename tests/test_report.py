"""Tests for distntk.report on real stores: complete, half-finished, empty, damaged; `distntk report`.

The stores are written by distntk.store's writer from in-process ``Experiment.compute``
results (conftest.py), by a real ``distntk demo`` through Ray (``quickstart_demo``),
or by a ``distntk run`` SIGKILLed mid-way (tests/test_resume.py).
"""

from __future__ import annotations

import re
import shutil
import warnings

import numpy as np
import pytest
import zarr
from conftest import sticky_spec, write_store

from distntk.cli import main
from distntk.estimator import estimate, missing_units
from distntk.report import summary, write_report
from distntk.store import open_store

PNG = b"\x89PNG\r\n\x1a\n"


def _images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def _head(md: str) -> str:
    return md.split("## 1.")[0]


def test_report_on_complete_store(sticky_store, tmp_path):
    path = write_report(sticky_store, tmp_path / "rep")
    md = path.read_text()
    # opens with the title, then the plain-language summary before any table
    head = _head(md)
    assert md.startswith("# distntk Monte Carlo: sticky-test") and "## Summary" in head
    assert "**Headline: fluctuations across data sequences.**" in head
    assert "N = 512" in head and "Poisson-equation prediction" in head
    assert "i.i.d. prediction is rejected" in head
    assert "Correlated inputs of the chain add variance" in head and "remove variance" not in head
    assert "Complete store" in head
    # memory fixed point: the experiment is rebuilt from the spec in the store's attributes
    assert "Memory fixed point" in head and "N = 512 network" in head
    assert "Width 512, init 0: fitted rate" in md
    # every referenced figure exists and is a PNG
    imgs = _images(md)
    assert set(imgs) == {"nvar_vs_t.png", "mean_vs_h.png", "convergence.png", "extrapolation.png", "memory.png"}
    for name in imgs:
        assert (tmp_path / "rep" / name).read_bytes()[:8] == PNG
    assert "None: every unit is done." in md
    # one table row per (width, time, probe) in the variance table, verdicts spelled out
    assert md.count("| 512 | 2 | ") >= 3 * 3  # three tables (within, between, mean) x three probes


def test_memory_section_says_why_when_the_spec_does_not_match(sticky_store, tmp_path):
    ds = sticky_store.copy()
    ds.attrs = {**ds.attrs, "spec_canonical": ds.attrs["spec_canonical"].replace('"seed":11', '"seed":12')}
    assert ds.attrs["spec_canonical"] != sticky_store.attrs["spec_canonical"]
    md = write_report(ds, tmp_path / "rep").read_text()
    assert ("## 6. Memory fixed point (docs/model.md#memory)\n\n"
            "Not computed: the canonical spec stored in 'sticky-test' does not "
            "hash to the store's") in md
    assert not (tmp_path / "rep" / "memory.png").exists()


def test_report_on_half_finished_store_names_missing_units(sticky, tmp_path):
    units = sticky.experiment.units()
    kept = {u: sticky.results[u] for k, u in enumerate(units) if k % 2 == 0 and not (u.width == 512 and u.init >= 12)}
    ds = write_store(tmp_path / "half.zarr", sticky.spec, kept)
    missing = missing_units(ds)
    assert missing == [u for u in units if u not in kept]
    path = write_report(tmp_path / "half.zarr", tmp_path / "half")
    md = path.read_text()
    head = _head(md)
    assert f"store `{tmp_path / 'half.zarr'}`" in md
    assert f"{int(ds.done.sum())} of {ds.done.size} replicas done" in head
    assert f"{len(missing)} units missing" in head
    for u in missing:
        assert f"- width {u.width}, init {u.init}, data {u.data_start}-{u.data_stop - 1}" in md
    for name in _images(md):
        assert (tmp_path / "half" / name).read_bytes()[:8] == PNG


def test_report_when_a_width_or_everything_is_missing(sticky, tmp_path):
    no512 = {u: r for u, r in sticky.results.items() if u.width != 512}
    md = write_report(write_store(tmp_path / "no512.zarr", sticky.spec, no512), tmp_path / "no512").read_text()
    assert "largest width with data (N = 256)" in md
    assert "- width 512, init 15, data 16-31" in md
    empty = write_store(tmp_path / "empty.zarr", sticky.spec, {})
    md = write_report(empty, tmp_path / "empty").read_text()
    assert "No replica is done yet" in md
    assert md.count("- width ") == len(sticky.experiment.units())  # all 96 units listed (the list stops at 200)


def test_summary_counts_match_the_estimate(sticky_store):
    est = estimate(sticky_store)
    lines = summary(est)
    n = int((est.verdict_poisson != "n/a").sum())
    c = int((est.verdict_poisson == "consistent").sum())
    assert f"{c} of {n} cells consistent" in lines[0]


def test_distntk_report_reads_a_store_path(sticky, tmp_path, capsys, monkeypatch):
    spec = sticky_spec(widths=(128,))  # same seeds: the width-128 units of the 3-width run
    write_store(tmp_path / "s128.zarr", spec, {u: r for u, r in sticky.results.items() if u.width == 128})
    monkeypatch.chdir(tmp_path)
    assert main(["report", "s128.zarr"]) == 0  # default folder: reports/<store name>
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "reports" / "s128" / "report.md").removeprefix(f"{tmp_path}/")
    md = (tmp_path / "reports" / "s128" / "report.md").read_text()
    assert "Needs at least two widths with data." in md  # one width: no convergence figure
    assert not (tmp_path / "reports" / "s128" / "convergence.png").exists()
    assert (tmp_path / "reports" / "s128" / "memory.png").read_bytes()[:8] == PNG
    assert main(["report", "s128.zarr", "--out", "elsewhere"]) == 0
    assert capsys.readouterr().out.strip() == "elsewhere/report.md"


def _one_line_error(capsys, code, expected):
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"distntk: error: {expected}") and err.count("\n") == 1, err


def test_report_on_bad_stores_is_one_line_error(tmp_path, capsys):
    _one_line_error(capsys, main(["report", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "o")]),
                    "no distntk store at")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3).create_array("x", shape=(2,), dtype="f8")
    _one_line_error(capsys, main(["report", str(tmp_path / "plain.zarr"), "--out", str(tmp_path / "o")]),
                    f"{tmp_path / 'plain.zarr'} is a Zarr group without distntk attributes")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A real, empty store of one width (the report still runs: every unit is missing)."""
    path = tmp_path_factory.mktemp("small") / "s.zarr"
    write_store(path, sticky_spec(widths=(128,), n_init=2), {})
    return path


def test_report_into_a_file_is_one_line_error(small_store, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    _one_line_error(capsys, main(["report", str(small_store), "--out", str(tmp_path / "file")]),
                    f"cannot write the report to {tmp_path / 'file'}")


@pytest.mark.parametrize("bad,what", [("nvar_poisson", "array"), ("h", "array"), ("h", "chunk")])
def test_report_on_a_store_that_lost_its_predictions(small_store, tmp_path, capsys, bad, what):
    path = tmp_path / "s.zarr"
    shutil.copytree(small_store, path)
    if what == "array":
        del zarr.open_group(str(path), mode="r+", zarr_format=3)[bad]  # a damaged store
        why = f"{bad!r} is missing"
    else:  # its one chunk deleted: it reads as NaN, its fill value
        (path / bad / "c" / "0" / "0").unlink()
        why = f"{bad!r} has non-finite values"
    for cmd in (["report", str(path), "--out", str(tmp_path / "o")], ["query", str(path)]):
        _one_line_error(capsys, main(cmd), f"{path} lost its predictions: {why}")
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- a real quickstart store (Ray)


@pytest.mark.timeout(1000)
def test_quickstart_store_headline_poisson_consistent_iid_rejected(quickstart_demo):
    """The store that `distntk demo` wrote through Ray (jobs/quickstart.toml: N = 64, 128, 256,
    16 inits x 128 data sequences, 4 times, 3 probes).

    Declared before the run, as in the report: the headline cell is the most likely window
    (00000000) at t = T = 2 at the largest width, N = 256.  Its 99% interval (init-robust, t with
    15 df, about +-10% here) holds 1.  If the Poisson prediction were exact at N = 256 this check
    would fail with probability about 1%; the finite-N bias of N Var (the O(N^(1/2-beta)) initial
    offset) adds to that, which is why the cell is at the largest width.  The outcome is fixed by
    the spec's seed.  The i.i.d. prediction is ~4x too small on this
    chain, so its 99% interval excludes 1 in every one of the 36 cells (in this store: ratios
    3.6-4.6, intervals +-9-30%, lowest bound 2.97; the headline cell 0.96 [0.87, 1.07] for Poisson,
    3.62 [3.27, 4.00] for i.i.d.).
    """
    assert quickstart_demo.returncode == 0, quickstart_demo.stderr[-3000:]
    ds = open_store(quickstart_demo.store)
    assert ds.attrs["name"] == "quickstart" and bool(ds.done.all())
    est = estimate(ds)
    N = int(est.width.max())
    likeliest = str(est.probe.values[int(np.argmax(est.pi_probe.values))])
    head = est.sel(width=N, time=float(est.time.max()), probe=likeliest)
    assert (N, str(head.probe.values)) == (256, "00000000")
    assert head.ratio_poisson_lo <= 1.0 <= head.ratio_poisson_hi, (float(head.ratio_poisson_lo),
                                                                   float(head.ratio_poisson_hi))
    assert head.verdict_poisson == "consistent"
    assert not head.ratio_iid_lo <= 1.0 <= head.ratio_iid_hi
    assert (est.verdict_iid == "inconsistent").all() and (est.ratio_iid_lo > 1.0).all()


# --------------------------------------------------------------------------- wording follows the data


@pytest.fixture(scope="module")
def anti_store(tmp_path_factory):
    """An anti-persistent chain (P = [[0.1, 0.9], [0.9, 0.1]]) recorded from t = 0, every unit computed."""
    from raytools import section6_toml

    from distntk.spec import parse_spec

    text = section6_toml(seed=3, widths=(16, 32), n_init=4, n_data=8, block=4, T=1.0, times=(0.0, 0.5, 1.0),
                         L=4, name="anti").replace("[[0.8, 0.2], [0.3, 0.7]]", "[[0.1, 0.9], [0.9, 0.1]]")
    spec = parse_spec(text)
    e = spec.experiment
    return write_store(tmp_path_factory.mktemp("anti") / "anti.zarr", spec, {u: e.compute(u) for u in e.units()})


def test_wording_follows_the_data_on_an_anti_persistent_chain(anti_store, tmp_path):
    pred_p, pred_i = anti_store.nvar_poisson.values[1:], anti_store.nvar_iid.values[1:]
    assert (pred_p < pred_i).all()  # the chain's correlations remove variance here
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # t = 0 cells: no 0/0 warnings either
        lines = []
        md = write_report(anti_store, tmp_path / "rep", summary_out=lines).read_text()
    head = _head(md)
    assert "remove variance" in head and "add variance" not in head
    assert "At t = 0 no data have been seen" in head
    assert "| 16 | 0 | 0101 | deterministic (no data seen) |" in md  # the likeliest windows alternate
    assert "slope [99%]" in md and "slope [95%]" not in md  # brackets at the verdict level
    assert lines and all(ln in head for ln in lines)  # the summary handed out is the report's own
    est = estimate(anti_store)
    assert (est.verdict_poisson.sel(time=0.0) == "n/a").all() and bool(est.deterministic.sel(time=0.0).all())
    assert not bool(est.deterministic.sel(time=0.5).any())


def test_memory_window_shortened_is_said(sticky, tmp_path):
    """memory_tol = 1e-12 needs L = 23; limit.max_histories = 16 caps it at 4: the summary says so."""
    from distntk.spec import parse_spec

    text = sticky.spec.text.replace("L = 8", "memory_tol = 1e-12").replace("n_init = 16", "n_init = 2")
    text = text.replace("widths = [128, 256, 512]", "widths = [16]").replace("n_data = 32", "n_data = 2")
    # limit.memory = "auto" would take the infinite past here (no window of 16 histories meets 1e-6)
    assert parse_spec(text + "[limit]\nmax_histories = 16\n").experiment.limit.memory == "sampled"
    spec = parse_spec(text + '[limit]\nmax_histories = 16\nmemory = "window"\n')
    assert spec.experiment.L == 4 and spec.warnings
    md = write_report(write_store(tmp_path / "w.zarr", spec, {}), tmp_path / "rep", memory=None).read_text()
    assert "**Memory window shortened.**" in _head(md) and "exceeds training.memory_tol = 1e-12" in md


def test_query_and_report_agree_on_an_unbalanced_partial_store(sticky, tmp_path, capsys):
    """One estimator: `distntk query` prints the numbers of distntk.estimate, including on unbalanced stores.

    Width 128: init 0 has both blocks (32 replicas), inits 1-3 one block (16), init 4 none.  The mean is
    the mean of the per-init means (computed here by hand), not the mean over replicas.
    """
    import json

    units = [u for u in sticky.experiment.units() if u.width == 128 and u.init < 5]
    kept = {u: sticky.results[u] for u in units if u.init == 0 or (u.init < 4 and u.data_start == 0)}
    ds = write_store(tmp_path / "unb.zarr", sticky.spec, kept)
    assert main(["query", str(tmp_path / "unb.zarr"), "--width", "128", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    est = estimate(ds).sel(width=128)
    out = ds.output.sel(width=128).values
    for r in rows:
        e = est.sel(time=r["time"], probe=r["probe"])
        assert r["n"] == 32 + 3 * 16 == int(e.n_obs)
        assert r["mean"] == float(e["mean"]) and r["se"] == float(e.mean_se)
        assert r["nvar"] == 128 * float(e.within) and r["var_init"] == float(e.between_raw)
        ti, pi = list(ds.time.values).index(r["time"]), list(ds.probe.values).index(r["probe"])
        by_hand = np.mean([out[0, :, ti, pi].mean()] + [out[i, :16, ti, pi].mean() for i in (1, 2, 3)])
        assert r["mean"] == pytest.approx(by_hand, rel=1e-12, abs=1e-15)
        grand = np.concatenate([out[0, :, ti, pi]] + [out[i, :16, ti, pi] for i in (1, 2, 3)]).mean()
        assert abs(grand - by_hand) > 1e-9 or ti == 0  # the unbalance matters: the old query's grand mean differs
    assert main(["report", str(tmp_path / "unb.zarr"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    r = rows[-1]
    assert f"| 128 | {r['time']:g} | {r['probe']} | {r['mean']:.4g} ± {r['se']:.2g} |" in md


# --------------------------------------------------------------------------- read at a glance (issue 23)


def _tables(md: str) -> list[int]:
    """Line numbers where a Markdown table starts."""
    lines = md.splitlines()
    return [i for i, ln in enumerate(lines) if ln.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))]


def _heading_above(md: str, i: int) -> str:
    lines = md.splitlines()
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    return lines[j]


def _model_refs(md: str) -> list[str]:
    """The anchors of docs/model.md the text refers to, as links or named in text."""
    return re.findall(r"model\.md#([A-Za-z0-9_-]+)", md)


def test_report_reads_at_a_glance(sticky_store, tmp_path):
    from distntk.estimator import convergence_rates
    from distntk.report import MODEL_ANCHORS

    md = write_report(sticky_store, tmp_path / "rep").read_text()
    # every table sits under a heading that says what it shows
    starts = _tables(md)
    assert len(starts) >= 3 + 3 + 2
    for i in starts:
        assert _heading_above(md, i).startswith("### "), (i, _heading_above(md, i))
    # unresolved rate cells: one line with their count, none as table rows
    est = estimate(sticky_store)
    rates = convergence_rates(est, level=est.attrs["verdict_level"])
    slope = rates.slope.values
    n_un, n_all = int(np.isnan(slope).sum()), slope.size
    assert 0 < n_un < n_all  # the fixture has both kinds, so both paths are exercised
    assert md.count(f"**Not resolved: {n_un} of {n_all} (quantity, t, probe) cells**") == 1
    assert "| not resolved |" not in md
    rate_rows = md.split("### Slopes in N at every")[1].split("**Not resolved")[0]
    assert sum(ln.startswith("| ") for ln in rate_rows.splitlines()) == 1 + n_all - n_un  # header + resolved rows
    r_un = int(np.isnan(rates.risk_slope.values).sum())
    assert (f"**Not resolved: {r_un} of {rates.risk_slope.size} (quantity, t) cells**" in md) == (r_un > 0)
    # a glossary of the report's words, each linking into docs/model.md at one of its anchors
    glossary = md.split("## Glossary")[1]
    terms = re.findall(r"^- \*\*(.+?)\*\*", glossary, re.M)
    for word in ("h_t", "V_t", "N·Var", "E_t C_0 E_tᵀ", "probe", "init-robust", "MLS", "verdict"):
        assert any(word in t for t in terms), word
    assert all(ln.count("model.md#") == 1 for ln in glossary.splitlines() if ln.startswith("- **"))
    refs = _model_refs(md)
    assert refs and set(refs) <= set(MODEL_ANCHORS)
    assert f"`docs/model.md#{'poisson'}`" in glossary  # written outside the repository: the anchor named in text
    # every prediction in the summary is interpreted, not only stated
    head = _head(md)
    for lead in ("**Headline", "**The naive i.i.d.", "**Fluctuations across initialisations.**", "**Mean.**",
                 "**Stationary risk.**", "**Rates**", "**Memory fixed point.**"):
        [bullet] = [ln for ln in head.splitlines() if ln.startswith(f"- {lead}")]
        assert "*What it means:*" in bullet, bullet


def test_glossary_links_relative_inside_the_repository():
    """A report written inside the repository (docs/results/...) links to docs/model.md relatively."""
    from pathlib import Path

    from distntk.report import MODEL_ANCHORS, _model_ref

    root = Path(__file__).resolve().parents[1]
    out = root / "docs" / "results" / "some-store"
    for anchor in MODEL_ANCHORS:
        link = _model_ref(anchor, out)
        m = re.fullmatch(r"\[docs/model\.md#([a-z-]+)\]\(([^)#]+)#([a-z-]+)\)", link)
        assert m and m.group(1) == m.group(3) == anchor, link
        assert (out / m.group(2)).resolve() == root / "docs" / "model.md"
    assert _model_ref("poisson", "/elsewhere/rep") == "`docs/model.md#poisson`"
    with pytest.raises(ValueError):
        _model_ref("no-such-anchor", out)


def _legends(fig) -> int:
    return len(fig.legends) + sum(ax.get_legend() is not None for ax in fig.axes)


def _check_figure(fig):
    """Every axis labelled, one legend, no symlog axis and log axes strictly positive."""
    for ax in fig.axes:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax.get_title()
        assert ax.get_yscale() in ("linear", "log")
        if ax.get_yscale() == "log":
            assert ax.get_ylim()[0] > 0
    assert _legends(fig) == 1


def test_every_figure_has_labelled_axes_and_one_legend(sticky_store):
    import matplotlib.pyplot as plt

    from distntk.estimator import convergence_rates
    from distntk.memory import memory_contraction
    from distntk.report import plot_convergence, plot_mean, plot_memory, plot_nvar
    from distntk.store import store_model

    est = estimate(sticky_store)
    rates = convergence_rates(est, level=est.attrs["verdict_level"])
    cell = {"probe": est.probe.values[0], "time": est.time.values[-1]}
    cfg, chain, seed = store_model(sticky_store)
    figs = [plot_nvar(est), plot_mean(est), plot_convergence(rates, cell),
            plot_memory(memory_contraction(cfg, chain, 128, seed=seed, init=0))]
    for fig in figs:
        _check_figure(fig)
    # the convergence figure's bars: 2 delta-method standard errors of log q on a resolved point (q >= 2 se),
    # so no bar spans more than a factor e^2 (the old bars, clipped at q/100, spanned up to two decades)
    conv = figs[2]
    bars = [seg for ax in conv.axes for c in ax.containers for seg in c.lines[2][0].get_segments()]
    assert bars and all(0 < lo <= hi <= lo * np.e**2 * (1 + 1e-9) for (_, lo), (_, hi) in bars)
    for fig in figs:
        plt.close(fig)
