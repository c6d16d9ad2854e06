"""Paper-style tables in Markdown and LaTeX (groupdetr.reporting.tables)."""
from __future__ import annotations

import pandas as pd

from groupdetr.reporting import study as S
from reporting_fixtures import (all_studies, aruns, assignment, dnstudy, heads, hruns, kruns, kstudy,  # noqa: F401
                                runs_root)
from study_fixtures import table7_ap


def test_results_table_markdown_and_latex_hold_the_values(aruns):
    s = S.summarize(aruns)
    t = S.results_table(s)
    assert list(t.columns) == ["Row", "Variant", "n", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert t["Variant"].tolist() == ["One-to-one (K=1)", "Naive one-to-many", "Naive one-to-many + nms",
                                     "Group assignment, shared SA", "Group DETR"]
    r = s[(s["variant"] == "group_detr") & (s["evaluation"] == "final") & (s["metric"] == "bbox/AP")].iloc[0]
    cell = f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}"
    assert t.loc[("group_detr", "final"), "AP"] == cell
    md = S.to_markdown(t)
    assert md.splitlines()[0].startswith("| Row | Variant | n | AP |") and f"| (d) | Group DETR | 3 | {cell} |" in md
    assert len(md.splitlines()) == 2 + 5
    tex = S.to_latex(t, caption="Table 7 on 3 seeds", label="tab:t7")
    assert cell.replace("±", r"$\pm$") in tex and r"\begin{tabular}{llrrrrrrr}" in tex
    assert r"\toprule" in tex and r"\label{tab:t7}" in tex and "±" not in tex
    assert S.to_latex(pd.DataFrame({"Variant": ["a_b & 50%"]})).count(r"a\_b \& 50\%") == 1


def test_one_seed_table_shows_the_mean_alone(assignment, runs_root):
    t = S.results_table(S.summarize(S.collect(assignment, runs_root, seeds=[0])))
    assert t.loc[("one_to_one", "final"), "AP"] == f"{100 * table7_ap('one_to_one', 0):.1f}"


def test_sweep_table_has_no_empty_row_column(kruns):
    t = S.results_table(S.summarize(kruns), evaluations=["final"])
    assert "Row" not in t.columns and t["Variant"].tolist() == [f"K{k}" for k in range(1, 12)]


def test_results_table_names_columns_by_family_when_families_mix(hruns):
    s = S.summarize(hruns)
    t = S.results_table(s, ["bbox/AP", "segm/AP", "3d/NDS"])
    assert list(t.columns) == ["Row", "Variant", "n", "bbox/AP", "segm/AP", "3d/NDS"]
    assert t.loc[("det2d_K1", "final"), "segm/AP"] == "–" and t.loc[("det2d_K1", "final"), "3d/NDS"] == "–"
    r = s[(s["variant"] == "seg_K11") & (s["evaluation"] == "final") & (s["metric"] == "segm/AP")].iloc[0]
    assert t.loc[("seg_K11", "final"), "segm/AP"] == f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}"
    assert list(S.results_table(s, ["segm/AP", "segm/AP50"]).columns)[-2:] == ["AP", "AP50"]  # one family: short
