"""Figures of a study and the registry of figure kinds (groupdetr.reporting.figures): units on the axes, the
paper's values beside ours on comparable axes."""
from __future__ import annotations

import numpy as np
import pytest

from groupdetr.reporting import figures
from groupdetr.reporting import study as S
from reporting_fixtures import (all_studies, aruns, assignment, dnstudy, heads, hruns, kruns, kstudy,  # noqa: F401
                                runs_root)


def _is_png(fig) -> bool:
    return S._png(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_render(aruns, kruns):
    for fig in (S.plot_ap_vs_k(kruns), S.plot_ap_vs_epoch(kruns, ["K1", "K11"]), S.plot_per_group(kruns, "K11"),
                S.plot_instability(kruns, ["K1", "K11"]), S.plot_variants(aruns)):
        assert _is_png(fig)
    ax = S.plot_ap_vs_k(kruns).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(k) for k in range(1, 12)]
    labels = [t.get_text() for t in S.plot_variants(aruns).axes[0].get_xticklabels()]
    assert "Naive one-to-many + nms" in labels and len(labels) == 5
    with pytest.raises(S.GatherError):
        S.plot_ap_vs_epoch(kruns, ["K99"])


def _paper_points(ax) -> list[tuple[float, float]]:
    """(x, y) of the paper's markers on ``ax`` (the figures give them gid "paper")."""
    return [tuple(xy) for c in ax.collections if c.get_gid() == "paper" for xy in np.asarray(c.get_offsets())]


def test_comparisons_figure_puts_ours_and_the_papers_on_two_comparable_axes(hruns, heads):
    c = S.comparisons_table(hruns, heads.comparisons)
    fig = S.plot_comparisons(c, "synth")
    assert _is_png(fig)
    diff, rel = fig.axes
    labels = [t.get_text() for t in diff.get_yticklabels()]  # a forest plot: the first comparison on top
    assert labels[1] == "Instance segmentation: K=11 over K=1 (segm/AP)" and len(labels) == 4
    assert diff.get_xlabel() == "b - a (points)" and rel.get_xlabel() == "b - a (% of a's mean)"
    # the paper's delta in points on the left, and relative to its value of a on the right (Table 6: 1.2 on 38.5)
    assert sorted(x for x, _ in _paper_points(diff)) == pytest.approx(sorted([5.0, 1.2, 3.0, 1.4]))
    assert sorted(x for x, _ in _paper_points(rel)) == pytest.approx(sorted(c["paper_rel_pct"]))
    assert 100 * 1.2 / 38.5 == pytest.approx(c.set_index("comparison").loc["seg", "paper_rel_pct"])
    with pytest.raises(S.GatherError):
        S.plot_comparisons(c.iloc[:0])


def test_k_figure_marks_the_papers_k11_endpoint_relative_to_k1(kruns, kstudy):
    c = S.comparisons_table(kruns, kstudy.comparisons)
    fig = S.plot_ap_vs_k(kruns, comparisons=c)
    ap, rel = fig.axes
    assert ap.get_ylabel() == "bbox/AP (points)" and rel.get_ylabel() == "change (% of K = 1's mean)"
    assert _paper_points(rel) == [pytest.approx((11, 100 * 5.0 / 32.6))]  # Table 3: 32.6 -> 37.6
    assert "no per-K values" in rel.get_title()
    assert _paper_points(S.plot_ap_vs_k(kruns).axes[1]) == []  # without comparisons: ours only


def test_per_group_figure_draws_the_papers_band_relative_to_the_median(kruns, kstudy):
    paper = kstudy.figures["per_group_ap"]["paper"]
    assert paper == {"table": "Fig4", "median": 37.5, "spread": 0.1}
    fig = S.plot_per_group(kruns, "K11", paper=paper)
    rel = fig.axes[1]
    (band,) = [p for p in rel.patches if p.get_gid() == "paper"]
    lo, hi = band.get_y(), band.get_y() + band.get_height()
    assert (lo, hi) == pytest.approx((-100 * 0.1 / 37.5, 100 * 0.1 / 37.5))  # 37.5 ± 0.1: ± 0.27 %
    assert rel.get_ylabel() == "offset from the model's median (%)"


def test_variants_figure_puts_the_papers_rows_relative_to_row_a(aruns, assignment):
    c = S.comparisons_table(aruns, assignment.comparisons)
    fig = S.plot_variants(aruns, comparisons=c)
    ap, rel = fig.axes
    assert ap.get_ylabel() == "bbox/AP (points)"
    names = [t.get_text() for t in rel.get_xticklabels()]
    # Table 7 over row (a) = 32.6: (b) 8.4, (c) 34.8, (d) 37.6; the nms evaluation has no paper value
    want = {"Naive one-to-many": 8.4, "Group assignment, shared SA": 34.8, "Group DETR": 37.6}
    got = {names[round(x)]: y for x, y in _paper_points(rel)}
    assert got == pytest.approx({k: 100 * (v - 32.6) / 32.6 for k, v in want.items()})
    assert "paper" in rel.get_title() and _paper_points(S.plot_variants(aruns).axes[1]) == []


def test_instability_figure_says_the_paper_has_no_numbers(kruns):
    ax = S.plot_instability(kruns, ["K1", "K11"]).axes[0]
    assert "no numbers" in ax.get_title() and ax.get_ylabel() == "assignments changed (%)"


def test_every_figure_kind_is_drawn_or_says_why(kruns, hruns, heads):
    from groupdetr.studies import FIGURES

    assert tuple(figures.FIGURES) == FIGURES  # the kinds a study may ask for are the kinds drawn
    comparisons = S.comparisons_table(hruns, heads.comparisons)
    specs = {"per_group_ap": {"variant": "K11"}}  # K1, the default, has no per-group evaluations
    for kind in figures.FIGURES:
        if kind == "query_augmentation":  # drawn from a checkpoint, which fake runs lack (tests/test_visualization.py)
            assert figures._draw(kind, {"variant": "K11"}, kruns).endswith("checkpoint.pth missing")
            continue
        runs = hruns if kind == "comparisons" else kruns
        assert _is_png(figures._draw(kind, specs.get(kind, {}), runs, comparisons)), kind
    assert figures._draw("per_group_ap", {"variant": "K99"}, kruns) == "variant K99 not gathered"
    assert figures._draw("instability", {"variants": ["K99"]}, kruns) == "none of K99 gathered"
    assert figures._draw("comparisons", {}, kruns) == "no comparison has both of its variants gathered"
    with pytest.raises(S.GatherError, match="unknown figure kind 'bogus'"):
        figures._draw("bogus", {}, kruns)
