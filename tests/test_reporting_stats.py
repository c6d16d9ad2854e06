"""Statistics over seeds: mean ± CI, Welch effects, relative effects, comparisons, flattening point
(groupdetr.reporting.stats). The fixtures' runs hold fractions (COCO's); the long table, and so every statistic, is
in points (x 100)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from groupdetr.reporting import study as S
from reporting_fixtures import (SEEDS, all_studies, aruns, assignment, dnstudy, heads, hruns, kruns,  # noqa: F401
                                kstudy, runs_root)
from study_fixtures import heads_ap, k_ap, make_study_runs, map_3d, nds, segm_ap, table7_ap


def test_summary_ci_matches_a_hand_computation(aruns):
    s = S.summarize(aruns)
    row = s[(s["variant"] == "group_detr") & (s["evaluation"] == "final") & (s["metric"] == "bbox/AP")].iloc[0]
    x = 100 * np.array([table7_ap("group_detr", seed) for seed in SEEDS])
    sd = math.sqrt(((x - x.mean()) ** 2).sum() / 2)
    half = st.t.ppf(0.975, 2) * sd / math.sqrt(3)  # t(0.975, 2 dof) = 4.303
    assert row["n"] == 3 and row["mean"] == pytest.approx(x.mean()) and row["std"] == pytest.approx(sd)
    assert row["ci95"] == pytest.approx(half) and half == pytest.approx(4.3027 * sd / math.sqrt(3), rel=1e-4)
    assert (row["low"], row["high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert row["label"] == "Group DETR" and row["paper_row"] == "(d)" and row["num_groups"] == 11
    assert row["unit"] == "points"
    assert not (s["evaluation"] == "epoch").any()
    nms = s[(s["evaluation"] == "nms") & (s["metric"] == "bbox/AP")].iloc[0]
    assert nms["mean"] == pytest.approx(100 * np.mean([table7_ap("naive_one_to_many", k) + 0.05 for k in SEEDS]))


def test_one_seed_gives_nan_ci_not_zero(assignment, runs_root):
    s = S.summarize(S.collect(assignment, runs_root, seeds=[1]))
    assert (s["n"] == 1).all() and s["ci95"].isna().all() and s["std"].isna().all()
    assert s["mean"].notna().all()
    assert math.isnan(S.mean_ci([0.3])["low"]) and S.mean_ci([])["n"] == 0


def test_a_seed_counted_twice_is_refused(aruns):
    with pytest.raises(S.GatherError, match="more than once"):
        S.summarize(pd.concat([aruns, aruns[aruns["seed"] == 0]]))


def test_effect_sign_ci_and_significance(aruns, assignment, runs_root):
    e = S.effect(aruns, "one_to_one", "group_detr")
    a = 100 * np.array([table7_ap("one_to_one", s) for s in SEEDS])
    b = 100 * np.array([table7_ap("group_detr", s) for s in SEEDS])
    ref = st.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert e["diff"] == pytest.approx(b.mean() - a.mean()) and e["diff"] > 0 and e["significant"]
    assert (e["low"], e["high"]) == pytest.approx((ci.low, ci.high)) and e["p_value"] == pytest.approx(ref.pvalue)
    assert S.effect(aruns, "group_detr", "one_to_one")["diff"] == pytest.approx(-e["diff"])  # sign flips
    naive = S.effect(aruns, "one_to_one", "naive_one_to_many")
    assert naive["diff"] < 0 and naive["significant"] and naive["high"] < 0
    # negative control: a variant against itself is no effect
    same = S.effect(aruns, "group_detr", "group_detr")
    assert same["diff"] == 0 and not same["significant"] and same["low"] < 0 < same["high"]
    # evaluations can differ: nms over the plain naive model
    assert S.effect(aruns, "naive_one_to_many", "naive_one_to_many", evaluation_b="nms")["diff"] == pytest.approx(5.0)
    assert e["unit"] == "points"
    one = S.effect(S.collect(assignment, runs_root, seeds=[0]), "one_to_one", "group_detr")
    assert math.isnan(one["low"]) and not one["significant"]  # one seed: unknown, never "significant"
    with pytest.raises(S.GatherError, match="no bbox/AP of variant 'K1'"):
        S.effect(aruns, "one_to_one", "K1")


def test_noise_larger_than_the_effect_is_not_significant(tmp_path, assignment):
    noisy = {0: 0.30, 1: 0.36, 2: 0.31}
    make_study_runs(tmp_path, assignment, SEEDS, ap_of=lambda v, s: noisy[s] + (0.005 if v == "group_detr" else 0))
    e = S.effect(S.collect(assignment, tmp_path), "one_to_one", "group_detr")
    assert e["diff"] == pytest.approx(0.5) and not e["significant"] and e["low"] < 0 < e["high"]


def test_flattening_point_and_per_group_summary(kruns):
    flat = S.flattening_point(kruns)
    assert flat["k"] == 6 and flat["best_k"] >= 6  # k_ap rises until K = 6, flat afterwards
    assert flat["table"]["below_best"].tolist() == [True] * 5 + [False] * 6
    groups, spread = S.per_group_summary(kruns, "K11")
    assert groups["group"].tolist() == list(range(11))
    means = [100 * np.mean([k_ap("K11", s) - 0.002 * g for s in (0, 1)]) for g in range(11)]
    assert groups["mean"].tolist() == pytest.approx(means)
    assert spread["median"] == pytest.approx(np.median(means)) and spread["half_range"] == pytest.approx(1.0)
    g0 = groups.iloc[0]
    inside = sum(g0["low"] <= m <= g0["high"] for m in means)
    assert (spread["group0_low"], spread["group0_high"], spread["within_group0_ci"]) == (g0["low"], g0["high"], inside)
    assert 1 <= inside < 11  # group 0 is inside its own CI; the fixture's groups drift by 0.002 each
    with pytest.raises(S.GatherError, match="per-group"):
        S.per_group_summary(kruns, "K3")


def _welch(x, y):
    """mean(y) - mean(x) with its Welch 95 % CI and dof, by hand."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    dof = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1))
    half = st.t.ppf(0.975, dof) * math.sqrt(va + vb)
    d = y.mean() - x.mean()
    return d, d - half, d + half, dof


def test_comparisons_table_matches_a_hand_welch_computation(hruns, heads):
    c = S.comparisons_table(hruns, heads.comparisons)
    assert list(c.columns) == list(S.COMPARISON_COLUMNS)
    c = c.set_index("comparison")
    assert list(c.index) == ["det2d", "seg", "det3d_NDS", "det3d_mAP"]
    of = {"det2d": (lambda ap: ap, "det2d"), "seg": (segm_ap, "seg"), "det3d_NDS": (nds, "det3d"),
          "det3d_mAP": (map_3d, "det3d")}
    for name, (value, head) in of.items():
        x = [100 * value(heads_ap(f"{head}_K1", s)) for s in SEEDS]
        y = [100 * value(heads_ap(f"{head}_K11", s)) for s in SEEDS]
        d, lo, hi, dof = _welch(x, y)
        row = c.loc[name]
        assert row["diff"] == pytest.approx(d) and (row["low"], row["high"]) == pytest.approx((lo, hi))
        assert row["dof"] == pytest.approx(dof) and row["mean_a"] == pytest.approx(np.mean(x))
        assert row["n_a"] == row["n_b"] == 3 and row["significant"] and row["sign"] == 1
        assert row["sign_match"] and row["confirms_paper"]
    assert c.loc["seg", "dof"] < 4  # unequal seed noise: Welch, not the pooled 4 dof
    assert c.loc["det3d_NDS", "diff"] == pytest.approx(5 / 8 * c.loc["det3d_mAP", "diff"])  # NDS = (5 mAP + ...) / 8
    assert c.loc["seg", "paper_delta"] == pytest.approx(1.2) and c.loc["seg", "paper_table"] == "Table6"
    assert "Mask2Former" in c.loc["seg", "paper_note"]
    e = S.effect(hruns, "seg_K1", "seg_K11", "segm/AP")
    assert c.loc["seg", "p_value"] == pytest.approx(e["p_value"])
    # one unit: ours and the paper's in points, as the paper prints them (5.0, not 0.05)
    assert c["paper_delta"].tolist() == pytest.approx([5.0, 1.2, 3.0, 1.4]) and (c["unit"] == "points").all()
    # relative to a: ours from the runs, the paper's from its value of a (Table 6: 38.5 -> 39.7)
    assert c["paper_a"].tolist() == [32.6, 38.5, 42.0, 37.4]
    assert c.loc["seg", "paper_rel_pct"] == pytest.approx(100 * 1.2 / 38.5)
    r = S.relative_effect(hruns, "seg_K1", "seg_K11", "segm/AP")
    assert (c.loc["seg", "rel_pct"], c.loc["seg", "rel_low_pct"]) == pytest.approx((r["rel_pct"], r["rel_low_pct"]))
    assert c.loc["seg", "rel_pct"] == pytest.approx(100 * c.loc["seg", "diff"] / c.loc["seg", "mean_a"])


def test_sign_match_and_confirmation_follow_the_paper(tmp_path, heads):
    from groupdetr.studies import Comparison

    gathered = ["det2d_K1", "det2d_K11", "seg_K1", "seg_K11"]
    make_study_runs(tmp_path, heads, SEEDS, variants=gathered,
                    ap_of=lambda v, s: heads_ap(v, s) - (0.03 if v == "seg_K11" else 0.0))  # masks: K=11 below K=1
    runs = S.collect(heads, tmp_path, variants=gathered)
    c = S.comparisons_table(runs, heads.comparisons).set_index("comparison")
    assert c.loc["seg", "sign"] == -1 and c.loc["seg", "significant"]
    assert not c.loc["seg", "sign_match"] and not c.loc["seg", "confirms_paper"]
    assert c.loc["det2d", "sign_match"] and c.loc["det2d", "confirms_paper"]
    # a head not gathered keeps its row, without numbers
    row = c.loc["det3d_NDS"]
    assert row["n_a"] == row["n_b"] == 0 and math.isnan(row["diff"]) and not row["significant"]
    assert pd.isna(row["sign"]) and pd.isna(row["sign_match"]) and pd.isna(row["confirms_paper"])
    assert row["paper_delta"] == pytest.approx(3.0) and math.isnan(row["rel_pct"])
    # one seed: the sign is known, a confirmation is not
    one = S.comparisons_table(S.collect(heads, tmp_path, seeds=[0], variants=gathered), heads.comparisons)
    one = one.set_index("comparison")
    assert one.loc["det2d", "sign_match"] and pd.isna(one.loc["det2d", "confirms_paper"])
    assert not one.loc["det2d", "significant"]
    # no paper delta: nothing to match
    t = S.comparisons_table(runs, [Comparison("x", "det2d_K1", "det2d_K11", "bbox/AP", "x")])
    assert t.loc[0, "sign"] == 1 and pd.isna(t.loc[0, "sign_match"]) and pd.isna(t.loc[0, "confirms_paper"])
    assert math.isnan(t.loc[0, "paper_a"]) and math.isnan(t.loc[0, "paper_rel_pct"])
    # a gathered variant without the metric is an error naming the comparison
    with pytest.raises(S.GatherError, match="comparison y: no segm/AP of variant 'det2d_K1'"):
        S.comparisons_table(runs, [Comparison("y", "det2d_K1", "seg_K1", "segm/AP", "y")])


def test_relative_effect_ci_by_the_delta_method(aruns):
    """The relative effect's CI: with a baseline that does not vary it is exactly b's t CI over mean(a); otherwise
    a's spread counts through the ratio (delta method, Welch-Satterthwaite dof); it covers the true ratio about
    95 % of the time."""
    a, b = [20.0, 20.0, 20.0], [22.0, 23.0, 24.5]
    r = S.ratio_ci(a, b)
    lo, hi = st.ttest_1samp(b, 20.0).confidence_interval(0.95)  # a exact: b's one-sample t CI
    assert r["rel_pct"] == pytest.approx(100 * (np.mean(b) / 20 - 1))
    assert (r["rel_low_pct"], r["rel_high_pct"]) == pytest.approx((100 * (lo / 20 - 1), 100 * (hi / 20 - 1)))
    a = np.array([19.0, 20.0, 21.0])
    noisy = S.ratio_ci(a, b)
    ratio = np.mean(b) / a.mean()
    ca, cb = ratio ** 2 * a.var(ddof=1) / 3 / a.mean() ** 2, np.var(b, ddof=1) / 3 / a.mean() ** 2  # delta method
    dof = (ca + cb) ** 2 / (ca ** 2 / 2 + cb ** 2 / 2)
    half = 100 * st.t.ppf(0.975, dof) * math.sqrt(ca + cb)
    assert noisy["rel_pct"] == pytest.approx(r["rel_pct"]) and noisy["rel_dof"] == pytest.approx(dof)
    assert noisy["rel_high_pct"] - noisy["rel_pct"] == pytest.approx(half)
    # undefined, never a number: an empty side, a baseline at or below zero; one value per side: no CI
    assert math.isnan(S.ratio_ci([], b)["rel_pct"]) and math.isnan(S.ratio_ci([0.0, 0.0], b)["rel_pct"])
    one = S.ratio_ci([20.0], [22.0])
    assert one["rel_pct"] == pytest.approx(10.0) and math.isnan(one["rel_low_pct"])
    # coverage: 2000 experiments of 5 seeds each, true ratio 1.15 (AP 20 -> 23, seed sd 1.0 and 1.5)
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        c = S.ratio_ci(rng.normal(20, 1.0, 5), rng.normal(23, 1.5, 5))
        hits += c["rel_low_pct"] <= 15.0 <= c["rel_high_pct"]
    assert 0.93 <= hits / 2000 <= 0.97
    # on a long table, relative_effect is ratio_ci of the two variants' final values
    e, rel = S.effect(aruns, "one_to_one", "group_detr"), S.relative_effect(aruns, "one_to_one", "group_detr")
    assert rel["rel_pct"] == pytest.approx(100 * e["diff"] / e["mean_a"]) and rel["unit"] == "%"


def test_per_group_offsets_pair_each_group_with_its_models_median(kruns):
    offsets, per_seed = S.per_group_offsets(kruns, "K11")
    # the fixture: group g of every seed = the seed's AP - 0.002 g (0.2 points), so the offsets are the same
    # for every seed and their CI is zero: the seed moves all groups together and pairing takes it out
    assert offsets["group"].tolist() == list(range(11))
    assert offsets["mean"].tolist() == pytest.approx([0.2 * (5 - g) for g in range(11)])
    assert np.allclose(offsets["ci95"], 0, atol=1e-9)
    med = per_seed.groupby("seed")["value"].median()
    row = per_seed[(per_seed["seed"] == 1) & (per_seed["group"] == 0)].iloc[0]
    assert row["offset_pct"] == pytest.approx(100 * (row["value"] - med[1]) / med[1])
    with pytest.raises(S.GatherError, match="per-group"):
        S.per_group_offsets(kruns, "K3")


def _epoch_rows(curves: dict[str, list[list[float]]]) -> pd.DataFrame:
    """A long table of per-epoch bbox/AP (points): variant -> one AP curve per seed."""
    rows = [{"variant": v, "label": f"{v} label", "paper_row": "", "seed": s, "evaluation": "epoch", "epoch": e + 1,
             "metric": "bbox/AP", "unit": "points", "value": ap}
            for v, seeds in curves.items() for s, curve in enumerate(seeds) for e, ap in enumerate(curve)]
    return pd.DataFrame(rows)


def test_epochs_to_reach_counts_the_first_epoch_at_the_threshold_and_never_the_missing_ones():
    runs = _epoch_rows({"slow": [[0.0, 2.0, 9.9, 12.0], [0.0, 0.1, 3.0, 8.0]],
                        "fast": [[4.0, 10.0, 8.0, 30.0], [11.0, 20.0, 25.0, 30.0], [0.5, 9.0, 10.0, 31.0]]})
    t = S.epochs_to_reach(runs, threshold=10.0).set_index("variant")
    assert t.index.tolist() == ["slow", "fast"]  # study order
    assert t.loc["slow", "first_epoch"][0] == 4.0 and math.isnan(t.loc["slow", "first_epoch"][1])  # never: NaN
    assert (t.loc["slow", "n"], t.loc["slow", "reached"]) == (2, 1)
    assert t.loc["slow", "mean"] == 4.0 and math.isnan(t.loc["slow", "ci95"])  # one seed reached it: no CI
    assert t.loc["fast", "first_epoch"] == (2.0, 1.0, 3.0)  # a later dip below does not move the first epoch
    assert t.loc["fast", "mean"] == pytest.approx(2.0)
    assert t.loc["fast", "ci95"] == pytest.approx(st.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))
    assert (t["unit"] == "points").all() and t.loc["fast", "label"] == "fast label"
    with pytest.raises(S.GatherError, match="no bbox/AP50 per epoch"):
        S.epochs_to_reach(runs, 10.0, metric="bbox/AP50")
