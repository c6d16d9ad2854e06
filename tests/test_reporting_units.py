"""One unit per metric (groupdetr.reporting.units): the rule, and the long table that applies it."""
from __future__ import annotations

import pytest

from groupdetr.evaluation.det3d import TP_ERRORS
from groupdetr.reporting import units as U
from reporting_fixtures import all_studies, assignment, dnstudy, heads, hruns, kstudy, runs_root  # noqa: F401
from study_fixtures import ERRORS_3D, heads_ap, map_3d, nds


@pytest.mark.parametrize("metric, scale, unit", [
    ("bbox/AP", 100, "points"), ("bbox/AP50", 100, "points"), ("bbox/AR100", 100, "points"),
    ("segm/AP", 100, "points"), ("segm/APl", 100, "points"),
    ("3d/mAP", 100, "points"), ("3d/NDS", 100, "points"), ("3d/AP@0.5", 100, "points"),
    ("3d/ATE", 1, "m"), ("3d/AOE", 1, "rad"), ("3d/ASE", 1, "1 - IoU"),
    ("matching_instability", 100, "%"),
    ("seconds", 1, "s"), ("eval_seconds", 1, "s"), ("iterations", 1, "steps"), ("peak_memory_mib", 1, "MiB"),
    ("loss", 1, "unitless"), ("loss_giou_3", 1, "unitless"), ("lr_backbone", 1, "unitless"),
    ("something_new", 1, "as logged"), ("kpt/OKS", 1, "as logged"),
])
def test_metric_unit_decides_scale_and_unit(metric, scale, unit):
    assert U.metric_unit(metric) == (scale, unit)


def test_every_3d_error_has_its_physical_unit():
    """A new TP error of the 3D evaluator must be given its unit here, not be scaled as if it were a score."""
    assert set(U.ERRORS_3D) == set(TP_ERRORS)


def test_labels_name_the_unit():
    assert U.with_unit("AP", "points") == "AP (points)" and U.with_unit("3d/ATE", "m") == "3d/ATE (m)"
    assert U.with_unit("loss", "unitless") == "loss" and U.with_unit("x", "as logged") == "x"


def test_the_long_table_holds_scores_in_points_and_errors_in_their_units(hruns):
    final = hruns[(hruns["evaluation"] == "final") & (hruns["variant"] == "det3d_K1") & (hruns["seed"] == 0)]
    by = final.set_index("metric")
    ap = heads_ap("det3d_K1", 0)
    assert by.loc["3d/mAP", "value"] == pytest.approx(100 * map_3d(ap)) and by.loc["3d/mAP", "unit"] == "points"
    assert by.loc["3d/NDS", "value"] == pytest.approx(100 * nds(ap))
    assert by.loc["3d/ATE", "value"] == pytest.approx(ERRORS_3D["ATE"]) and by.loc["3d/ATE", "unit"] == "m"
    assert by.loc["3d/AOE", "unit"] == "rad" and by.loc["bbox/AP", "value"] == pytest.approx(100 * ap)


def test_in_units_scales_by_row_and_places_the_unit_after_the_metric():
    import pandas as pd

    t = pd.DataFrame({"metric": ["bbox/AP", "3d/ATE"], "mean": [0.25, 0.5], "n": [3, 3]})
    out = U.in_units(t, ["mean"])
    assert list(out.columns) == ["metric", "unit", "mean", "n"] and out["mean"].tolist() == [25.0, 0.5]
    assert t["mean"].tolist() == [0.25, 0.5]  # the input is not modified
    assert U.in_units(t.iloc[:0], ["mean"]).columns.tolist() == ["metric", "unit", "mean", "n"]
