"""Tests for distntk.report: the report on complete, half-finished and empty stores, and report_main."""

from __future__ import annotations

import re
import warnings

import pytest

from conftest import assemble
from distntk.estimate import memory_contraction, missing_units
from distntk.report import report_main, summary, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_report_on_complete_store(sticky, sticky_store, tmp_path):
    exp, _ = sticky
    mem = memory_contraction(exp.model, exp.chain, 256, seed=exp.seed)
    path = write_report(sticky_store, tmp_path / "rep", memory=mem)
    md = path.read_text()
    # opens with the title, then the plain-language summary before any table
    head = md.split("## 1.")[0]
    assert md.startswith("# ") and "## Summary" in head
    assert "**Headline: fluctuations across data sequences.**" in head
    assert "N = 512" in head and "Poisson-equation prediction" in head
    assert "i.i.d. prediction is rejected" in head
    assert "Complete store" in head and "Memory fixed point" in head
    # every referenced figure exists and is a PNG
    imgs = _images(md)
    assert set(imgs) == {"nvar_vs_t.png", "mean_vs_h.png", "convergence.png", "memory.png"}
    for name in imgs:
        assert (tmp_path / "rep" / name).read_bytes()[:8] == PNG
    assert "None: every unit is done." in md
    # one table row per (width, time, probe) in the variance table, verdicts spelled out
    assert md.count("| 512 | 2 | ") >= 3 * 3  # three tables (within, between, mean) x three probes


def test_report_on_half_finished_store_names_missing_units(sticky, tmp_path):
    exp, results = sticky
    units = exp.units()
    kept = {u: results[u] for k, u in enumerate(units) if k % 2 == 0 and not (u.width == 512 and u.init >= 12)}
    ds = assemble(exp, kept)
    missing = missing_units(ds)
    assert missing == [u for u in units if u not in kept]
    path = write_report(ds, tmp_path / "half")
    md = path.read_text()
    head = md.split("## 1.")[0]
    assert f"{int(ds.done.sum())} of {ds.done.size} replicas done" in head
    assert f"{len(missing)} units missing" in head
    for u in missing:
        assert f"- width {u.width}, init {u.init}, data {u.data_start}-{u.data_stop - 1}" in md
    for name in _images(md):
        assert (tmp_path / "half" / name).read_bytes()[:8] == PNG


def test_report_when_a_width_or_everything_is_missing(sticky, tmp_path):
    exp, results = sticky
    ds = assemble(exp, {u: r for u, r in results.items() if u.width != 512})
    md = write_report(ds, tmp_path / "no512").read_text()
    assert "largest width with data (N = 256)" in md
    assert "- width 512, init 15, data 16-31" in md
    empty = assemble(exp, {})
    md = write_report(empty, tmp_path / "empty").read_text()
    assert "No replica is done yet" in md
    assert md.count("- width ") == len(exp.units())  # all 96 units listed (the list stops at 200)


def test_summary_counts_match_the_estimate(sticky_store):
    from distntk.estimate import estimate

    est = estimate(sticky_store)
    lines = summary(est)
    n = int((est.verdict_poisson != "n/a").sum())
    c = int((est.verdict_poisson == "consistent").sum())
    assert f"{c} of {n} cells consistent" in lines[0]


def test_report_main_reads_a_store_path(sticky, tmp_path, capsys):
    exp, results = sticky
    small = {u: r for u, r in results.items() if u.width == 128}
    ds = assemble(exp, small).sel(width=[128])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3 warns about fixed-width strings
        ds.to_zarr(tmp_path / "s.zarr", mode="w")
        rc = report_main([str(tmp_path / "s.zarr"), "--out", str(tmp_path / "out")])
    assert rc == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "out" / "report.md")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Needs at least two widths with data." in md  # one width: no convergence figure
    assert not (tmp_path / "out" / "convergence.png").exists()


def test_report_main_bad_store_is_one_line_error(tmp_path, capsys):
    rc = report_main([str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("distntk: error: ") and err.count("\n") == 1


@pytest.mark.parametrize("bad", ["nvar_poisson", "h"])
def test_report_main_on_a_store_without_predictions(sticky, tmp_path, capsys, bad):
    exp, _ = sticky
    ds = assemble(exp, {}).sel(width=[128]).drop_vars(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(tmp_path / "s.zarr", mode="w")
    assert report_main([str(tmp_path / "s.zarr"), "--out", str(tmp_path / "o")]) == 2
    assert f"no variable {bad!r}" in capsys.readouterr().err
