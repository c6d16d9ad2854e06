"""Figures of a study and the registry of figure kinds (groupdetr.reporting.figures)."""
from __future__ import annotations

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


def test_comparisons_figure_renders(hruns, heads):
    c = S.comparisons_table(hruns, heads.comparisons)
    fig = S.plot_comparisons(c, "synth")
    assert _is_png(fig)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[1] == "Instance segmentation: K=11 over K=1\n(segm/AP)" and len(labels) == 4
    with pytest.raises(S.GatherError):
        S.plot_comparisons(c.iloc[:0])


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
