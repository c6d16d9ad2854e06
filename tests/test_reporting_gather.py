"""Gathering a study into one folder atomically, reading it back, and `groupdetr gather`
(groupdetr.reporting.gather, fake run dirs)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from groupdetr.cli import main as cli_main
from groupdetr.reporting import figures
from groupdetr.reporting import study as S
from reporting_fixtures import (aruns, all_studies, assignment, dnstudy, heads, hruns, kstudy,  # noqa: F401
                                runs_root)
from study_fixtures import STUDIES


def test_gather_writes_every_file(tmp_path, assignment, kstudy, runs_root, aruns):
    out = tmp_path / "results" / "ablation_assignment"
    paths = S.gather(assignment, runs_root, out)
    names = {p.name for p in paths}
    assert names == {"runs.csv", "summary.csv", "effects.csv", "comparisons.csv", "comparisons.tex", "table.md",
                     "table.tex", "README.md", *(f"{k}.png" for k in assignment.figures)}
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for name in names:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs, summary = S.read_gathered(out)
    assert len(runs) == len(aruns) and runs["value"].tolist() == pytest.approx(aruns["value"].tolist())
    pd.testing.assert_frame_equal(summary, S.summarize(aruns), check_dtype=False)
    readme = (out / "README.md").read_text()
    assert "Table 7" in readme and "seeds [0, 1, 2]" in readme and S.NOT_PAPER_DATA in readme  # it has comparisons
    assert "0123456789abcdef" in readme and "groupdetr gather --study ablation_assignment" in readme
    assert (out / "table.md").read_text() in readme
    assert [p for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
    # one unit in every file: the CSVs in points with a unit column, as the tables and the paper
    for name in ("runs.csv", "summary.csv", "effects.csv", "comparisons.csv"):
        assert "unit" in pd.read_csv(out / name).columns, name
    csv = pd.read_csv(out / "summary.csv").query("variant == 'group_detr' and evaluation == 'final' and metric == 'bbox/AP'")
    assert csv["unit"].item() == "points" and 30 < csv["mean"].item() < 40
    assert pd.read_csv(out / "comparisons.csv")["paper_delta"].tolist() == [5.0, -24.2, 2.2, 2.8]
    # LaTeX a paper author pastes: a float with a caption saying what ± is, the seeds, the data, the unit
    tex = (out / "table.tex").read_text()
    assert tex.startswith("\\begin{table}[t]") and "\\label{tab:ablation-assignment}" in tex
    caption = tex.split("\\caption{", 1)[1].split("}\n", 1)[0]
    for words in ("95 \\% CI half-width over seeds (Student t", "3 seeds (0, 1, 2)", "embedded synthetic benchmark",
                  "AP, AP50, AP75, APs, APm, APl in points ($\\times$ 100)", "Table 7"):
        assert words in caption, words
    assert "AP (points)" in tex
    ctex = (out / "comparisons.tex").read_text()
    assert "\\label{tab:ablation-assignment-comparisons}" in ctex and "Welch 95 \\% CI" in ctex
    assert "Paper b - a (points)" in ctex and "-24.2" in ctex and "-74.2" in ctex  # (b): 8.4 - 32.6, in % of 32.6
    assert "- `comparisons.tex`" in readme and "in points (x 100, as the paper reports them)" in readme
    k_out = tmp_path / "results" / "ablation_K"
    k_paths = S.gather(kstudy, runs_root, k_out, seeds=[0, 1])
    assert {p.name for p in k_paths} >= {"ap_vs_k.png", "per_group_ap.png", "ap_vs_epoch.png", "instability.png"}
    k_readme = (k_out / "README.md").read_text()
    epochs = S.per_epoch_table(S.read_gathered(k_out)[0])
    assert epochs["variant"].tolist()[:2] == ["K1", "K2"] and (epochs["n"] == 2).all()
    k11 = S.read_gathered(k_out)[0].query("variant == 'K11' and evaluation == 'epoch' and metric == 'bbox/AP'")
    last = int(k11["epoch"].max())
    assert epochs.set_index("variant").loc["K11", last] == pytest.approx(k11[k11["epoch"] == last]["value"].mean())
    assert "## bbox/AP (points) per epoch (mean over seeds)" in k_readme
    assert "Paper (Fig4, COCO): 37.5 ± 0.1 over 11 groups, ± 0.27 % of its median." in k_readme
    assert "## Where AP flattens with K (paper Fig. 9)" in k_readme and "K = 6: no larger K" in k_readme
    assert "## Every group alike (paper Fig. 4): K11" in k_readme and " of 11 groups" in k_readme
    assert "Where AP flattens" not in readme and "Every group alike" not in readme  # Table 7 has neither


def test_gather_fills_an_empty_out_dir_and_replaces_an_earlier_one(tmp_path, assignment, runs_root):
    out = tmp_path / "g"
    out.mkdir()  # snakemake may create a directory() output beforehand
    S.gather(assignment, runs_root, out, seeds=[0])
    assert S.read_gathered(out)[0]["seed"].unique().tolist() == [0]
    (out / "stale.txt").write_text("from an older gather")
    S.gather(assignment, runs_root, out, seeds=[0, 1])
    assert S.read_gathered(out)[0]["seed"].unique().tolist() == [0, 1] and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_gather_failing_midway_leaves_the_previous_output_untouched(tmp_path, assignment, runs_root, monkeypatch):
    out = tmp_path / "g"
    S.gather(assignment, runs_root, out, seeds=[0])
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("disk full while drawing")

    monkeypatch.setattr(figures, "plot_instability", boom)  # the last figure of the study: files already written
    with pytest.raises(RuntimeError, match="disk full"):
        S.gather(assignment, runs_root, out, seeds=[0, 1])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]  # temporary folder removed
    # a missing run fails before anything is written, and no out_dir appears
    with pytest.raises(S.GatherError):
        S.gather(assignment, runs_root, tmp_path / "new", seeds=[7])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_gather_with_a_variant_subset_skips_figures_it_cannot_draw(tmp_path, kstudy, runs_root):
    out = tmp_path / "k"
    paths = S.gather(kstudy, runs_root, out, seeds=[0, 1], variants=["K1", "K2"])
    assert "per_group_ap.png" not in {p.name for p in paths} and "ap_vs_k.png" in {p.name for p in paths}
    assert "figure per_group_ap not drawn: variant K11 not gathered" in (out / "README.md").read_text()


def test_read_gathered_of_a_study_not_gathered_says_so(tmp_path):
    with pytest.raises(S.GatherError, match="not been gathered yet"):
        S.read_gathered(tmp_path / "ablation_K")
    assert S.find_gathered(tmp_path) == {} and S.read_all_gathered(tmp_path).empty


def test_gather_of_a_study_with_comparisons(tmp_path, heads, dnstudy, runs_root, hruns):
    out = tmp_path / "ablation_heads"
    names = {p.name for p in S.gather(heads, runs_root, out)}
    assert names == {"runs.csv", "summary.csv", "effects.csv", "comparisons.csv", "comparisons.tex", "table.md",
                     "table.tex", "README.md", "comparisons.png", "variants.png"}
    assert (out / "comparisons.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    c = S.read_comparisons(out)
    pd.testing.assert_frame_equal(c, S.comparisons_table(hruns, heads.comparisons), check_dtype=False)
    table = (out / "table.md").read_text()
    header = ("| Row | Variant | n | bbox/AP (points) | bbox/AP50 (points) | segm/AP (points) | segm/AP50 (points) "
              "| 3d/mAP (points) | 3d/NDS (points) |")
    assert table.splitlines()[0] == header
    readme = (out / "README.md").read_text()
    seg = c.set_index("comparison").loc["seg"]
    d = S.decimals((c["high"] - c["low"]) / 2)
    shown = S.comparisons_display(c)
    assert list(shown.columns) == ["Comparison", "Metric", "Ours b - a (points)", "95 % CI", "p", "n", "Significant",
                                   "Detectable at 80 % power (points)", "Ours (% of a) [95 % CI]", "Paper",
                                   "Paper Δ (points)", "Paper (% of a)", "Same sign"]
    assert (f"| Instance segmentation: K=11 over K=1 | segm/AP | {seg['diff']:+.{d}f} | "
            f"[{seg['low']:+.{d}f}, {seg['high']:+.{d}f}] |") in readme
    assert f"| 3, 3 | yes | ±{seg['mde80']:.{d}f} |" in readme and f"| Table6 | +1.2 | +{100 * 1.2 / 38.5:.1f} | yes |" in readme
    assert seg["mde80"] > seg["high"] - seg["diff"]  # 80 % power needs more than the CI's half-width
    assert "## Comparisons the study reports" in readme and "Mask2Former R50 12 ep" in readme and table in readme
    assert S.NOT_PAPER_DATA in readme and S.NOT_COCO not in readme and "## Effects over" not in readme
    dn_out = tmp_path / "ablation_dn"
    assert {p.name for p in S.gather(dnstudy, runs_root, dn_out)} >= {"comparisons.csv", "ap_vs_epoch.png",
                                                                      "comparisons.png", "variants.png"}
    assert "| DN on top of Group DETR | bbox/AP |" in (dn_out / "README.md").read_text()
    # narrowed to one head: the other comparisons keep their rows, empty; the figure shows what there is
    narrow = tmp_path / "narrow"
    S.gather(heads, runs_root, narrow, variants=["seg_K1", "seg_K11"])
    nc = S.read_comparisons(narrow).set_index("comparison")
    assert nc.loc["seg", "n_a"] == 3 and nc.loc["det2d", "n_a"] == 0 and pd.isna(nc.loc["det2d", "sign_match"])
    assert (narrow / "comparisons.png").is_file()
    nothing = tmp_path / "nothing"
    S.gather(heads, runs_root, nothing, variants=["seg_K1", "det2d_K1"])
    assert "figure comparisons not drawn: no comparison has both of its variants gathered" in (
        nothing / "README.md").read_text()


def test_read_comparisons_says_why_it_has_none(tmp_path, assignment, runs_root):
    with pytest.raises(S.GatherError, match="not been gathered yet"):
        S.read_comparisons(tmp_path / "ablation_heads")
    S.gather(dataclasses.replace(assignment, comparisons={}), runs_root, tmp_path / "a", seeds=[0])
    with pytest.raises(S.GatherError, match="declares no comparisons"):
        S.read_comparisons(tmp_path / "a")


def test_cli_gather(tmp_path, runs_root, capsys):
    out = tmp_path / "res" / "ablation_assignment"
    rc = cli_main(["gather", "--studies", str(STUDIES), "--study", "ablation_assignment", "--runs", str(runs_root),
                   "--out", str(out), "--seeds", "0", "1", "--variants", "one_to_one", "group_detr"])
    assert rc == 0 and (out / "table.md").is_file()
    assert str(out / "README.md") in capsys.readouterr().out
    runs, _ = S.read_gathered(out)
    assert set(runs["variant"]) == {"one_to_one", "group_detr"} and set(runs["seed"]) == {0, 1}
    readme = (out / "README.md").read_text()
    assert "--variants one_to_one group_detr" in readme
    # the project's studies file: rows (a) and (d) are ablation_K's K1 and K11 runs, read from there
    dirs = runs.drop_duplicates("run_dir").set_index(["variant", "seed"])["run_dir"]
    assert dirs["one_to_one", 0] == str(runs_root / "ablation_K" / "K1" / "seed0")
    assert dirs["group_detr", 1] == str(runs_root / "ablation_K" / "K11" / "seed1")
    assert "`one_to_one` reuses the runs of `ablation_K/K1`" in readme


@pytest.mark.parametrize("args, message", [
    (["--study", "nope"], "no study 'nope'"),
    (["--study", "ablation_assignment", "--seeds", "9"], "metrics.json: missing"),
    (["--study", "ablation_assignment", "--variants", "K1"], "unknown variant"),
])
def test_cli_gather_errors_are_one_line_exit_2(tmp_path, runs_root, capsys, args, message):
    rc = cli_main(["gather", "--studies", str(STUDIES), "--runs", str(runs_root), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("groupdetr: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_cli_gather_bad_studies_file(tmp_path, capsys):
    rc = cli_main(["gather", "--studies", str(tmp_path / "none.yaml"), "--study", "x", "--runs", str(tmp_path)])
    assert rc == 2 and "no such studies file" in capsys.readouterr().err


def test_a_folder_gathered_before_units_reads_in_points(tmp_path, heads, runs_root):
    """Folders gathered before the unit columns (fractions, paper_delta / 100) are converted when read, so a notebook
    sees one unit whatever the folder's age."""
    new = tmp_path / "new"
    S.gather(heads, runs_root, new)
    old = tmp_path / "old"
    old.mkdir()
    runs, summary, comps = (pd.read_csv(new / f) for f in ("runs.csv", "summary.csv", "comparisons.csv"))
    scale = runs["metric"].map(lambda m: S.metric_unit(m)[0])
    runs.assign(value=runs["value"] / scale).drop(columns="unit").to_csv(old / "runs.csv", index=False)
    sscale = summary["metric"].map(lambda m: S.metric_unit(m)[0])
    cols = ["mean", "std", "sem", "ci95", "low", "high"]
    summary.assign(**{c: summary[c] / sscale for c in cols}).drop(columns="unit").to_csv(old / "summary.csv",
                                                                                     index=False)
    legacy = [c for c in comps.columns if c not in ("unit", "rel_pct", "rel_low_pct", "rel_high_pct", "paper_a",
                                                   "paper_rel_pct")]
    comps.assign(**{c: comps[c] / 100 for c in ("mean_a", "mean_b", "diff", "low", "high", "mde80", "paper_delta")}
                 )[legacy].to_csv(old / "comparisons.csv", index=False)
    (r_new, s_new), (r_old, s_old) = S.read_gathered(new), S.read_gathered(old)
    assert r_old["value"].tolist() == pytest.approx(r_new["value"].tolist(), nan_ok=True)
    assert r_old["unit"].tolist() == r_new["unit"].tolist() and list(r_old.columns) == list(r_new.columns)
    assert s_old["mean"].tolist() == pytest.approx(s_new["mean"].tolist(), nan_ok=True)
    c_old, c_new = S.read_comparisons(old), S.read_comparisons(new)
    assert list(c_old.columns) == list(S.COMPARISON_COLUMNS)
    assert c_old["diff"].tolist() == pytest.approx(c_new["diff"].tolist()) and c_old["paper_delta"].tolist() == [
        5.0, 1.2, 3.0, 1.4]
    assert c_old["paper_rel_pct"].isna().all()  # not in the old file, not invented


def test_read_gathered_reads_a_gzipped_long_table(tmp_path):
    import gzip
    import shutil

    from groupdetr.reporting.gather import read_gathered

    ref = Path(__file__).resolve().parents[1] / "results" / "reference" / "cpu" / "recipe_probe"
    plain = tmp_path / "plain"
    shutil.copytree(ref, plain)
    packed = tmp_path / "packed"
    shutil.copytree(plain, packed)
    with open(plain / "runs.csv", "rb") as src, gzip.open(packed / "runs.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (packed / "runs.csv").unlink()
    runs_plain, summary_plain = read_gathered(plain)
    runs_packed, summary_packed = read_gathered(packed)
    pd.testing.assert_frame_equal(runs_plain, runs_packed)
    pd.testing.assert_frame_equal(summary_plain, summary_packed)
