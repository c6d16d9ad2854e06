"""Paper-style tables in Markdown and LaTeX (groupdetr.reporting.tables): units in the headers, decimals that
show the CIs."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from groupdetr.reporting import study as S
from reporting_fixtures import (all_studies, aruns, assignment, dnstudy, heads, hruns, kruns, kstudy,  # noqa: F401
                                runs_root)
from study_fixtures import make_study_runs, table7_ap

AP_COLUMNS = ["AP (points)", "AP50 (points)", "AP75 (points)", "APs (points)", "APm (points)", "APl (points)"]


def test_results_table_markdown_and_latex_hold_the_values(aruns):
    s = S.summarize(aruns)
    t = S.results_table(s)
    assert list(t.columns) == ["Row", "Variant", "n", *AP_COLUMNS]  # the unit in every header
    assert t["Variant"].tolist() == ["One-to-one (K=1)", "Naive one-to-many", "Naive one-to-many + nms",
                                     "Group assignment, shared SA", "Group DETR"]
    r = s[(s["variant"] == "group_detr") & (s["evaluation"] == "final") & (s["metric"] == "bbox/AP")].iloc[0]
    # the fixture's seeds spread by 0.6 points: every CI of the column is below 1, so two decimals show it
    assert (s.loc[s["metric"] == "bbox/AP", "ci95"].dropna() < 0.95).all()
    cell = f"{r['mean']:.2f} ± {r['ci95']:.2f}"
    assert t.loc[("group_detr", "final"), "AP (points)"] == cell
    md = S.to_markdown(t)
    assert md.splitlines()[0].startswith("| Row | Variant | n | AP (points) |") and f"| (d) | Group DETR | 3 | {cell} |" in md
    assert len(md.splitlines()) == 2 + 5
    tex = S.to_latex(t, caption="Table 7 on 3 seeds", label="tab:t7")
    assert cell.replace("±", r"$\pm$") in tex and r"\begin{tabular}{llrrrrrrr}" in tex
    assert r"\toprule" in tex and r"\label{tab:t7}" in tex and "±" not in tex
    assert S.to_latex(pd.DataFrame({"Variant": ["a_b & 50%"]})).count(r"a\_b \& 50\%") == 1


def test_one_seed_table_shows_the_mean_alone(assignment, runs_root):
    t = S.results_table(S.summarize(S.collect(assignment, runs_root, seeds=[0])))
    assert t.loc[("one_to_one", "final"), "AP (points)"] == f"{100 * table7_ap('one_to_one', 0):.1f}"


def test_sweep_table_has_no_empty_row_column(kruns):
    t = S.results_table(S.summarize(kruns), evaluations=["final"])
    assert "Row" not in t.columns and t["Variant"].tolist() == [f"K{k}" for k in range(1, 12)]
    assert t.columns[1:3].tolist() == ["n", "AP (points)"]


def test_results_table_names_columns_by_family_when_families_mix(hruns):
    s = S.summarize(hruns)
    t = S.results_table(s, ["bbox/AP", "segm/AP", "3d/NDS"])
    assert list(t.columns) == ["Row", "Variant", "n", "bbox/AP (points)", "segm/AP (points)", "3d/NDS (points)"]
    assert t.loc[("det2d_K1", "final"), "segm/AP (points)"] == "–" and t.loc[("det2d_K1", "final"), "3d/NDS (points)"] == "–"
    r = s[(s["variant"] == "seg_K11") & (s["evaluation"] == "final") & (s["metric"] == "segm/AP")].iloc[0]
    d = S.decimals(s.loc[s["metric"] == "segm/AP", "ci95"])
    assert t.loc[("seg_K11", "final"), "segm/AP (points)"] == f"{r['mean']:.{d}f} ± {r['ci95']:.{d}f}"
    # one family: short names; a 3D error keeps its physical unit
    assert list(S.results_table(s, ["segm/AP", "segm/AP50"]).columns)[-2:] == ["AP (points)", "AP50 (points)"]
    errors = S.results_table(s, ["3d/NDS", "3d/ATE", "3d/AOE"])
    assert list(errors.columns)[-3:] == ["NDS (points)", "ATE (m)", "AOE (rad)"]
    assert errors.loc[("det3d_K1", "final"), "ATE (m)"].startswith("0.5")  # the fixture's 0.5 m, not x 100


@pytest.mark.parametrize("halves, means, expected", [
    ([0.9545], [19.6], 1),      # K = 1's "19.6 ± 1.0": one decimal suffices
    ([2.1, 3.2], [22.6], 1),
    ([0.26], [22.7], 2),        # "0.3" would show one digit of the CI
    ([2.1, 0.26], [], 2),       # one number of decimals per column: the row that needs the most
    ([0.004], [0.021], 3),
    ([0.0004], [0.001], 3),     # capped
    ([math.nan], [19.6], 1),    # one seed: the means decide
    ([], [0.03, 12.1], 2),      # means alone: each shows a digit ("0.03", not "0.0")
    ([], [], 1),
])
def test_decimals_show_two_significant_digits_of_the_ci(halves, means, expected):
    assert S.decimals(halves, means) == expected


def test_numbers_never_read_zero_unless_they_are():
    assert S.fmt(19.64, 1) == "19.6" and S.fmt(2.94, 1, signed=True) == "+2.9"
    assert S.fmt(-0.0068, 1, signed=True) == "-0.01"  # not "-0.0": the bound's sign shows
    assert S.fmt(0.0, 1, signed=True) == "+0.0" and S.fmt(math.nan, 1) == "–"


def test_a_table_of_tiny_scores_shows_them(tmp_path, assignment):
    """Scores near zero (a study stuck in DETR's plateau, AP 0.02) get the decimals their CIs need: no "0.0 ± 0.0"."""
    make_study_runs(tmp_path, assignment, [0, 1, 2], variants=["one_to_one"], ap_of=lambda v, s: 0.0002 + 0.00003 * s)
    s = S.summarize(S.collect(assignment, tmp_path, variants=["one_to_one"]))
    r = s[(s["evaluation"] == "final") & (s["metric"] == "bbox/AP")].iloc[0]
    cell = S.results_table(s).loc[("one_to_one", "final"), "AP (points)"]
    assert cell == f"{r['mean']:.3f} ± {r['ci95']:.3f}" and "0.0 ± 0.0" not in cell and not cell.endswith("0.000")


def test_latex_float_with_caption_and_label_escapes_what_latex_reads_otherwise():
    t = pd.DataFrame({"Comparison": ["(d) over (a)"], "p": ["< 0.001"], "Ours b - a (points)": ["+2.9 [+0.9, +4.9]"]})
    tex = S.to_latex(t, caption="Mean ± 95 % CI half-width", label="tab:x")
    assert tex.startswith("\\begin{table}[t]\n\\centering\n\\caption{Mean $\\pm$ 95 \\% CI half-width}\n\\label{tab:x}")
    assert "$<$ 0.001" in tex and tex.rstrip().endswith("\\end{table}") and "\\begin{tabular}{lrr}" in tex
