"""The paper's numbers beside a gathered study (groupdetr.reporting.versus; the paper's deltas are each study's
``comparisons:``), and the study spec the gatherer reads (groupdetr.studies: comparisons, metrics, reuse,
evaluation jobs)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from groupdetr.reporting import study as S
from groupdetr.reporting.paper import (gains, load_reported, main_results, reported_value, table1, table2, table5, table6,
                                       table7)
from groupdetr.reporting.versus import main_results_comparison, paper_rows, rank_agreement, table7_comparison
from groupdetr.config import load_config
from groupdetr.studies import StudyError, load_studies, run_dir
from reporting_fixtures import (SEEDS, all_studies, aruns, assignment, dnstudy, druns, heads, hruns,  # noqa: F401
                                kstudy, runs_root)
from study_fixtures import REPO, STUDIES, make_study_runs, table7_ap


@pytest.fixture(scope="module")
def reported():
    return load_reported(REPO / "results" / "paper" / "reported.csv")


def test_table7_comparison_joins_by_paper_row_and_ranks(reported, aruns, assignment):
    paper7 = table7(reported)
    c = table7_comparison(paper7, S.summarize(aruns))
    assert c["row"].tolist() == ["a", "b", "b", "c", "d"] and c["evaluation"].tolist()[2] == "nms"
    assert c["variant"].tolist() == ["one_to_one", "naive_one_to_many", "naive_one_to_many", "group_shared_sa",
                                     "group_detr"]
    assert c.loc[c["evaluation"] == "final", "paper_mAP"].tolist() == [32.6, 8.4, 34.8, 37.6]
    assert math.isnan(c.loc[2, "paper_mAP"]) and math.isnan(c.loc[2, "our_rank"])
    assert c.loc[4, "ours"] == pytest.approx(100 * np.mean([table7_ap("group_detr", s) for s in SEEDS]))
    ranks = rank_agreement(c)
    assert ranks["paper_order"] == ["d", "c", "a", "b"] and ranks["same_order"] and ranks["kendall_tau"] == 1.0
    # the paper's claims are the study's comparisons: each confirmed by our CI on the paper's side
    claims = S.comparisons_table(aruns, assignment.comparisons)
    assert claims["confirms_paper"].tolist() == [True] * 4
    b_over_a = claims.set_index("comparison").loc["b_over_a"]
    assert b_over_a["paper_delta"] == pytest.approx(-24.2) and b_over_a["paper_a"] == 32.6  # points, as printed
    assert b_over_a["paper_rel_pct"] == pytest.approx(100 * (8.4 - 32.6) / 32.6)


def test_table7_rows_without_a_variant_are_not_run(reported, aruns):
    """The join follows the study spec's paper_row; a row no variant claims stays the paper's alone."""
    summary = S.summarize(aruns)
    summary = summary.assign(paper_row=summary["paper_row"].where(summary["variant"] != "group_shared_sa"))
    c = table7_comparison(table7(reported), summary)
    row_c = c[c["row"] == "c"].iloc[0]
    assert pd.isna(row_c["variant"]) and row_c["n"] == 0 and "not run" in row_c["setting"]
    assert paper_rows(summary) == {"a": "one_to_one", "b": "naive_one_to_many", "d": "group_detr"}
    twice = summary.assign(paper_row=summary["paper_row"].replace("(b)", "(a)"))
    with pytest.raises(S.GatherError, match="both say paper_row"):
        paper_rows(twice)


def test_table7_claims_fail_when_the_runs_disagree(tmp_path, assignment, reported):
    flipped = {"one_to_one": 0.30, "naive_one_to_many": 0.25, "group_shared_sa": 0.36, "group_detr": 0.33}
    make_study_runs(tmp_path, assignment, SEEDS, ap_of=lambda v, s: flipped[v] + 0.002 * s)
    runs = S.collect(assignment, tmp_path)
    claims = S.comparisons_table(runs, assignment.comparisons).set_index("comparison")
    # shared SA above separate SA: (d) over (c) goes against the paper; the other three still agree
    assert claims["confirms_paper"].tolist() == [True, True, True, False]
    assert claims.loc["d_over_c", "diff"] < 0 and not claims.loc["d_over_c", "sign_match"]
    ranks = rank_agreement(table7_comparison(table7(reported), S.summarize(runs)))
    assert ranks["our_order"] == ["c", "d", "a", "b"] and not ranks["same_order"]
    one_seed = S.comparisons_table(S.collect(assignment, tmp_path, seeds=[0]), assignment.comparisons)
    assert one_seed["confirms_paper"].isna().all()  # unknown with one seed


def test_main_results_comparison_only_reproduces_coco_runs(reported, aruns):
    main = main_results(reported)
    synth = main_results_comparison(main, aruns)
    assert (synth["n_baseline"] == 0).all() and synth["ours_baseline_mAP"].isna().all()
    coco = aruns.assign(dataset="coco", backbone="ResNet-50", epochs=12)
    both = main_results_comparison(main, pd.concat([coco, coco]))  # gathered twice: counted once
    hit = both[both["n_baseline"] > 0]
    assert hit[["table", "detector", "epochs"]].values.tolist() == [["Table3", "C-DETR", 12.0]]
    row = hit.iloc[0]
    o2o = 100 * np.mean([table7_ap("one_to_one", s) for s in SEEDS])
    gd = 100 * np.mean([table7_ap("group_detr", s) for s in SEEDS])
    assert row["n_baseline"] == 3 and row["ours_baseline_mAP"] == pytest.approx(o2o)
    assert row["ours_gain"] == pytest.approx(gd - o2o) and row["delta_group_detr"] == pytest.approx(gd - 37.6)
    assert reported_value(reported, "Fig4", "mAP_median_over_groups") == 37.5
    # Table 1's runs (started from another run, parts frozen) are no reproduction of Table 3's rows
    started = coco.assign(init_from="results/runs/ablation_K/K1/seed0", config_hash=coco["config_hash"] + "x")
    frozen = coco.assign(frozen="backbone,input_proj,encoder", config_hash=coco["config_hash"] + "y")
    again = main_results_comparison(main, pd.concat([coco, started, frozen]))
    assert again[again["n_baseline"] > 0]["n_baseline"].tolist() == [3]


def test_table5_table6_from_the_transcription(reported):
    t5 = table5(reported)
    assert t5[["detector", "metric", "baseline", "group_detr", "gain"]].values.tolist() == [
        ["PETR", "NDS", 42.0, 45.0, 3.0], ["PETR", "mAP", 37.4, 38.8, 1.4],
        ["PETR v2", "NDS", 50.3, 51.3, 1.0], ["PETR v2", "mAP", 40.7, 41.9, 1.2]]
    assert (t5["backbone"] == "VoVNetV2").all() and (t5["epochs"] == 24).all()
    t6 = table6(reported)
    assert t6[["epochs", "metric", "baseline", "group_detr", "gain"]].values.tolist() == [
        [12, "mask mAP", 38.5, 39.7, 1.2], [50, "mask mAP", 43.7, 44.0, 0.3]]
    assert len(table6(reported, ("mask mAP", "mask APs"))) == 4
    with pytest.raises(ValueError, match="no rows of table 'Table6'"):
        table6(reported.assign(table=reported["table"].replace("Table6", "Table9")))


def _paper_deltas(reported) -> dict[tuple[str, str], tuple[str, float, float]]:
    """What each comparison's paper numbers must be, computed here from reported.csv (the test's own mapping of
    comparisons to paper rows; the library has none): (study, comparison) -> (paper table, its value of a, delta)."""
    t3 = gains(reported, "Table3", ("mAP",))
    t3 = t3[(t3["backbone"] == "ResNet-50") & (t3["epochs"] == 12)].set_index("detector")
    t5 = table5(reported).set_index(["detector", "metric"])
    t6 = table6(reported).set_index("epochs")
    t7 = table7(reported).set_index("row")["mAP"]
    dab, dn = t3.loc["DAB-DETR"], t3.loc["DN-DETR"]
    fig8 = reported_value(reported, "Fig8", "mAP_gain_over_GroupDETR")
    assert fig8 == round(dn["group_detr"] - dab["group_detr"], 1)  # the text's +1.5 is Table 3's difference
    t1 = table1(reported).set_index("row")["mAP"]
    t2 = table2(reported)
    t2 = t2[(t2["detector"] == "C-DETR") & (t2["schedule"] == 12)].set_index("arm")["mAP"]  # our preset's 1x
    cdetr = t3.loc["C-DETR"]
    return {
        ("ablation_enhancement", "decoder"): ("Table1", t1["a"], t1["b"] - t1["a"]),
        ("ablation_enhancement", "encoder"): ("Table1", t1["b"], t1["c"] - t1["b"]),
        ("ablation_training_time", "group_over_equal_time"): ("Table2", t2["baseline longer"],
                                                              t2["w/ Group"] - t2["baseline longer"]),
        ("ablation_training_time", "equal_time_over_1x"): ("Table2", t2["baseline"],
                                                           t2["baseline longer"] - t2["baseline"]),
        ("ablation_training_time", "group_over_1x"): ("Table2", t2["baseline"], t2["w/ Group"] - t2["baseline"]),
        ("ablation_K", "K11_over_K1"): ("Table3", cdetr["baseline"], cdetr["gain"]),
        ("ablation_assignment", "d_over_a"): ("Table7", t7["a"], t7["d"] - t7["a"]),
        ("ablation_assignment", "b_over_a"): ("Table7", t7["a"], t7["b"] - t7["a"]),
        ("ablation_assignment", "c_over_a"): ("Table7", t7["a"], t7["c"] - t7["a"]),
        ("ablation_assignment", "d_over_c"): ("Table7", t7["c"], t7["d"] - t7["c"]),
        ("ablation_heads", "det2d"): ("Table3", cdetr["baseline"], cdetr["gain"]),
        ("ablation_heads", "seg"): ("Table6", t6.loc[12, "baseline"], t6.loc[12, "gain"]),
        ("ablation_heads", "det3d_NDS"): ("Table5", t5.loc[("PETR", "NDS"), "baseline"], t5.loc[("PETR", "NDS"), "gain"]),
        ("ablation_heads", "det3d_mAP"): ("Table5", t5.loc[("PETR", "mAP"), "baseline"], t5.loc[("PETR", "mAP"), "gain"]),
        ("ablation_dn", "dn"): ("Table3", dab["baseline"], dn["baseline"] - dab["baseline"]),
        ("ablation_dn", "groups"): ("Table3", dab["baseline"], dab["gain"]),
        ("ablation_dn", "dn_on_groups"): ("Fig8", dab["group_detr"], fig8),
        ("ablation_dn", "groups_on_dn"): ("Table3", dn["baseline"], dn["gain"]),
        ("ablation_dn", "dn_and_groups"): ("Table3", dab["baseline"], dn["group_detr"] - dab["baseline"]),
        ("recipe_probe", "groups_pretrained"): ("Table3", cdetr["baseline"], cdetr["gain"]),
        ("ablation_detectors", "cdetr"): ("Table3", cdetr["baseline"], cdetr["gain"]),
        ("ablation_detectors", "dab"): ("Table3", dab["baseline"], dab["gain"]),
        ("ablation_detectors", "dn"): ("Table3", dn["baseline"], dn["gain"]),
        ("ablation_detectors", "dab_deformable"): ("Table3", t3.loc["DAB-Deformable-DETR", "baseline"],
                                                   t3.loc["DAB-Deformable-DETR", "gain"]),
        ("ablation_detectors", "dino"): ("Table3", t3.loc["DINO-4scale", "baseline"], t3.loc["DINO-4scale", "gain"]),
    }


def test_the_studies_paper_deltas_are_the_transcriptions(reported, all_studies):
    """studies.yaml states each comparison's paper delta and the paper's value of a it is over (the only place the
    library has them); every one must be what reported.csv gives, and a new one must be added to the mapping
    above."""
    expected = _paper_deltas(reported)
    stated = {(s.name, c.name): (c.paper_table, c.paper_base, c.paper_delta)
              for s in all_studies.values() for c in s.comparisons.values() if c.paper_delta is not None}
    assert set(stated) == set(expected)
    for key, (table, base, delta) in expected.items():
        assert stated[key] == (table, pytest.approx(float(base)), pytest.approx(round(float(delta), 1))), key


def test_the_k_studys_fig4_band_is_the_transcription(reported, all_studies):
    """Fig. 4's median and spread, which the per-group figure draws, are what reported.csv gives."""
    paper = all_studies["ablation_K"].figures["per_group_ap"]["paper"]
    assert paper["table"] == "Fig4"
    assert paper["median"] == reported_value(reported, "Fig4", "mAP_median_over_groups")
    assert paper["spread"] == reported_value(reported, "Fig4", "mAP_spread_pm")


def test_heads_comparisons_put_our_effect_beside_the_papers(hruns, heads):
    h = S.comparisons_table(hruns, heads.comparisons).set_index("comparison")
    assert h["paper_table"].tolist() == ["Table3", "Table6", "Table5", "Table5"]
    e = S.effect(hruns, "det3d_K1", "det3d_K11", "3d/NDS")
    nds = h.loc["det3d_NDS"]
    assert (nds["metric"], nds["paper_delta"], nds["paper_a"]) == ("3d/NDS", pytest.approx(3.0), 42.0)
    assert (nds["diff"], nds["low"], nds["high"]) == pytest.approx((e["diff"], e["low"], e["high"]))
    assert h["sign_match"].tolist() == [True] * 4 and h["confirms_paper"].tolist() == [True] * 4
    assert "PETRv2" in nds["paper_note"]  # the note names the paper rows the one delta stands beside


def test_fig8_comparisons_flag_an_effect_of_the_other_sign(tmp_path, dnstudy, druns):
    ok = S.comparisons_table(druns, dnstudy.comparisons)
    assert ok["confirms_paper"].tolist() == [True] * 5
    row = ok.set_index("comparison").loc["dn_on_groups"]
    e = S.effect(druns, "dab_group", "dab_dn_group")
    assert row["diff"] == pytest.approx(e["diff"]) and (row["paper_table"], row["paper_delta"]) == ("Fig8", 1.5)
    flipped = dict(zip(["dab", "dab_dn", "dab_group", "dab_dn_group"], [0.352, 0.386, 0.391, 0.371]))
    make_study_runs(tmp_path, dnstudy, SEEDS, ap_of=lambda v, s: flipped[v] + 0.002 * s)  # DN hurts with groups
    runs = S.collect(dnstudy, tmp_path)
    bad = S.comparisons_table(runs, dnstudy.comparisons)
    # DN on top of groups and groups on top of DN now go against the paper; the other three still agree
    assert bad["sign_match"].tolist() == [True, True, False, False, True]
    assert bad["confirms_paper"].tolist() == [True, True, False, False, True]
    one = S.comparisons_table(S.collect(dnstudy, tmp_path, seeds=[0]), dnstudy.comparisons)
    assert one["sign_match"].notna().all() and one["confirms_paper"].isna().all()


def test_new_studies_parse_and_resolve_against_a_recipe():
    from groupdetr.config import load_config

    s = load_studies(STUDIES, "cpu_study", [])
    heads, dn = s["ablation_heads"], s["ablation_dn"]
    assert list(heads.variants) == ["det2d_K1", "det2d_K11", "seg_K1", "seg_K11", "det3d_K1", "det3d_K11"]
    assert list(dn.variants) == ["dab", "dab_dn", "dab_group", "dab_dn_group"]
    assert heads.seeds == dn.seeds == (0, 1, 2)
    cfg = load_config("cpu_study", list(heads.variants["seg_K11"].overrides))
    assert (cfg.model.task, cfg.model.num_groups, cfg.matcher.assignment, cfg.model.self_attention) == (
        "instance_segmentation", 11, "group", "separate")
    assert load_config("cpu_study", list(heads.variants["det3d_K1"].overrides)).model.task == "detection_3d"
    both = load_config("cpu_study", list(dn.variants["dab_dn_group"].overrides)).model
    assert (both.decoder, both.num_groups, both.denoising.enabled, both.denoising.sharing) == (
        "dab", 11, True, "per_group")
    plain = load_config("cpu_study", list(dn.variants["dab"].overrides)).model
    assert (plain.decoder, plain.num_groups, plain.denoising.enabled) == ("dab", 1, False)
    assert {(c.a, c.b, c.metric) for c in heads.comparisons.values()} == {
        ("det2d_K1", "det2d_K11", "bbox/AP"), ("seg_K1", "seg_K11", "segm/AP"), ("det3d_K1", "det3d_K11", "3d/NDS"),
        ("det3d_K1", "det3d_K11", "3d/mAP")}
    c = dn.comparisons["dn_on_groups"]
    assert (c.a, c.b, c.metric, c.paper_table, c.paper_delta) == ("dab_group", "dab_dn_group", "bbox/AP", "Fig8", 1.5)
    assert {"segm/AP", "3d/NDS", "3d/mAP", "bbox/AP"} <= set(heads.metrics) and dn.metrics is None
    for old in ("ablation_K", "ablation_assignment"):  # box AP only: no metrics list
        assert s[old].metrics is None
    k = s["ablation_K"].comparisons["K11_over_K1"]
    assert (k.a, k.b, k.paper_table, k.paper_delta) == ("K1", "K11", "Table3", 5.0)
    t7 = {n: (c.a, c.b, c.paper_delta) for n, c in s["ablation_assignment"].comparisons.items()}
    assert t7 == {"d_over_a": ("one_to_one", "group_detr", 5.0), "b_over_a": ("one_to_one", "naive_one_to_many", -24.2),
                  "c_over_a": ("one_to_one", "group_shared_sa", 2.2), "d_over_c": ("group_shared_sa", "group_detr", 2.8)}


_REUSE = """\
own:
  overrides: {matcher.assignment: group}
  variants:
    K1: {overrides: {model.num_groups: 1}}
    K3: {overrides: {model.num_groups: 3}}
user:
  variants:
"""


def test_a_reused_variant_reads_the_other_studys_runs(tmp_path):
    path = tmp_path / "studies.yaml"
    path.write_text(_REUSE + "    base: {label: Baseline, overrides: {model.num_groups: 1, matcher.assignment: group}, "
                    "reuse: own/K1}\n    mine: {overrides: {model.num_groups: 2, matcher.assignment: group}}\n")
    s = load_studies(path, "cpu_small", [])  # the configs resolve equal: accepted
    user = s["user"]
    assert user.variants["base"].reuse == ("own", "K1") and user.variants["mine"].reuse is None
    assert user.run_path(tmp_path, "base", 2) == run_dir(tmp_path, "own", "K1", 2)
    assert user.run_path(tmp_path, "mine", 2) == run_dir(tmp_path, "user", "mine", 2)
    runs = tmp_path / "runs"
    make_study_runs(runs, s["own"], [0, 1], ap_of=lambda v, seed: 0.2 + 0.01 * seed)
    make_study_runs(runs, user, [0, 1], variants=["mine"], ap_of=lambda v, seed: 0.3)
    assert not (runs / "user" / "base").exists()
    long = S.collect(user, runs, seeds=[0, 1])
    final = long[(long["evaluation"] == "final") & (long["metric"] == "bbox/AP")].set_index(["variant", "seed"])
    assert final.loc[("base", 1), "value"] == pytest.approx(21.0)  # own/K1's run at seed 1, in points
    assert final.loc[("base", 0), "run_dir"] == str(runs / "own" / "K1" / "seed0")
    assert final.loc[("base", 0), "label"] == "Baseline"  # named as the reusing study names it
    # a missing reused run names the owner's path
    with pytest.raises(S.GatherError, match=r"own/K1/seed5/metrics.json: missing"):
        S.collect(user, runs, seeds=[5], variants=["base"])


@pytest.mark.parametrize("variant, message", [
    ("{overrides: {model.num_groups: 1, matcher.assignment: one_to_one}, reuse: own/K1}",
     "study user, variant base: reuse own/K1: the configs differ at matcher.assignment ('one_to_one' here, 'group' "
     "there); a reused run must be the same experiment"),
    ("{overrides: {model.num_groups: 3, matcher.assignment: group}, reuse: own/K1}",
     "the configs differ at model.num_groups (3 here, 1 there)"),
    ("{reuse: own/K9}", "study user, variant base: reuse own/K9: study own has no such variant"),
    ("{reuse: nope/K1}", "study user, variant base: reuse nope/K1: no such study"),
    ("{reuse: K1}", "study user: variant base: reuse must read <study>/<variant>"),
    ("{reuse: user/x}", "study user: variant base: reuse names its own study"),
])
def test_a_reuse_that_is_not_the_same_experiment_is_refused(tmp_path, variant, message):
    path = tmp_path / "studies.yaml"
    path.write_text(_REUSE + f"    base: {variant}\n")
    with pytest.raises(StudyError) as e:
        load_studies(path, "cpu_small", [])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_reuse_chain_or_an_evaluation_of_a_reused_variant_is_refused(tmp_path):
    path = tmp_path / "studies.yaml"
    chain = "    base: {reuse: own/K1}\nthird:\n  variants:\n    c: {reuse: user/base}\n"
    path.write_text(_REUSE + chain)
    with pytest.raises(StudyError, match="reuses own/K1 itself; name the study that owns the runs"):
        load_studies(path)
    path.write_text(_REUSE + "    base: {reuse: own/K1}\n  evaluations:\n    nms: {variants: [base]}\n")
    with pytest.raises(StudyError, match="variant base reuses the runs of own/K1; declare its evaluations in that study"):
        load_studies(path)


def test_eval_jobs_put_every_group_of_a_run_in_one_job(tmp_path, kstudy, assignment):
    from groupdetr.studies import EvalJob

    (job,) = kstudy.eval_jobs("K11", 11)
    assert job == EvalJob(name="per_group", groups=tuple(range(11)))
    assert kstudy.eval_jobs("K1", 1) == []
    assert [e.job for e in kstudy.evaluations_for("K11", 11)] == ["per_group"] * 11  # the files the job writes
    (nms,) = assignment.eval_jobs("naive_one_to_many", 11)
    assert nms == EvalJob(name="nms", overrides=("postprocess.nms_iou=0.7",))
    path = tmp_path / "studies.yaml"
    path.write_text("s:\n  variants:\n    a: {overrides: {model.num_groups: 4}}\n"
                    "  evaluations:\n    some: {variants: [a], groups: [3, 1]}\n")
    (job,) = load_studies(path)["s"].eval_jobs("a", 4)
    assert job.groups == (3, 1)
    path.write_text("s:\n  variants:\n    a: {overrides: {model.num_groups: 4}}\n"
                    "  evaluations:\n    group3: {variants: [a], groups: all}\n")
    with pytest.raises(StudyError, match="evaluations.group3: name must be a plain word other than group<g>"):
        load_studies(path)


def test_the_projects_reuses_are_the_same_experiments():
    """Table 7's rows (a), (d), the heads study's 2D rows and the detectors study's Conditional DETR, DAB and DN
    rows are runs of ablation_K and ablation_dn, config for config (load_studies checks it under the recipe)."""
    s = load_studies(STUDIES, "cpu_study", [])
    reuses = {(st.name, v.name): v.reuse for st in s.values() for v in st.variants.values() if v.reuse}
    assert reuses == {("ablation_assignment", "one_to_one"): ("ablation_K", "K1"),
                      ("ablation_assignment", "group_detr"): ("ablation_K", "K11"),
                      ("ablation_heads", "det2d_K1"): ("ablation_K", "K1"),
                      ("ablation_heads", "det2d_K11"): ("ablation_K", "K11"),
                      ("ablation_detectors", "cdetr_K1"): ("ablation_K", "K1"),
                      ("ablation_detectors", "cdetr_K11"): ("ablation_K", "K11"),
                      ("ablation_detectors", "dab_K1"): ("ablation_dn", "dab"),
                      ("ablation_detectors", "dab_K11"): ("ablation_dn", "dab_group"),
                      ("ablation_detectors", "dn_K1"): ("ablation_dn", "dab_dn"),
                      ("ablation_detectors", "dn_K11"): ("ablation_dn", "dab_dn_group"),
                      ("ablation_enhancement", "start"): ("ablation_K", "K1"),
                      ("ablation_training_time", "baseline_1x"): ("ablation_K", "K1"),
                      ("ablation_training_time", "group_1x"): ("ablation_K", "K11")}


def test_table1_starts_from_the_k1_runs_and_table2_derives_its_schedule():
    """Table 1's retrained rows start from ablation_K's K = 1 run of the same seed, encoder side only (the decoder
    side is a fresh model's), (a) and (b) with it frozen; Table 2's longer baseline is the 1x baseline's config
    with an equal_time schedule matched to the K = 11 runs."""
    s = load_studies(STUDIES, "cpu_study", [])
    t1 = s["ablation_enhancement"]
    encoder_side = ("backbone", "input_proj", "encoder")
    assert {v.paper_row: v.name for v in t1.variants.values() if v.paper_row} == {
        "(a)": "enc_fixed_dec_K1", "(b)": "enc_fixed_dec_K11", "(c)": "enc_dec_K11"}
    for name, k, frozen in (("enc_fixed_dec_K1", 1, encoder_side), ("enc_fixed_dec_K11", 11, encoder_side),
                            ("enc_dec_K11", 11, ())):
        v = t1.variants[name]
        assert v.init_from.variant == "start" and v.init_from.parts == encoder_side
        assert t1.start_run("R", name, 3) == run_dir("R", "ablation_K", "K1", 3)
        cfg = load_config("cpu_study", list(v.overrides) + t1.start_overrides("R", name, 3))
        assert (cfg.model.num_groups, cfg.train.freeze) == (k, frozen)
        assert (cfg.model.init_from.run, cfg.model.init_from.parts) == (str(run_dir("R", "ablation_K", "K1", 3)),
                                                                        encoder_side)
    assert t1.start_overrides("R", "start", 0) == [] and t1.start_run("R", "start", 0) is None
    assert {(c.a, c.b) for c in t1.comparisons.values()} == {("enc_fixed_dec_K1", "enc_fixed_dec_K11"),
                                                             ("enc_fixed_dec_K11", "enc_dec_K11")}
    t2 = s["ablation_training_time"]
    longer = t2.variants["baseline_equal_time"]
    assert (longer.equal_time.to, longer.equal_time.measured_on) == ("group_1x", "baseline_1x")
    assert longer.overrides == t2.variants["baseline_1x"].overrides  # the same config but for the schedule


_BASE = """\
s:
  variants:
    a: {overrides: {model.num_groups: 1}}
    b: {overrides: {model.num_groups: 2}}
"""


@pytest.mark.parametrize("extra, message", [
    ("  comparisons:\n    c: {a: a, b: nope, metric: bbox/AP}\n", "study s: comparisons.c.b: unknown variant 'nope'"),
    ("  comparisons:\n    c: {a: [a], b: b, metric: bbox/AP}\n", "study s: comparisons.c.a: unknown variant ['a']"),
    ("  comparisons:\n    c: {a: a, b: b, metric: AP}\n",
     "study s: comparisons.c: metric 'AP' must read <family>/<stat>"),
    ("  comparisons:\n    c: {a: a, b: b, metric: box/AP}\n", "metric 'box/AP' has unknown family 'box'"),
    ("  comparisons:\n    c: {a: a, b: a, metric: bbox/AP}\n", "study s: comparisons.c: a and b are the same variant"),
    ("  comparisons:\n    c: {a: a, b: b}\n", "study s: comparisons.c: missing metric"),
    ("  comparisons:\n    c: {a: a, b: b, metric: bbox/AP, sign: +}\n", "study s: comparisons.c: unknown key 'sign'"),
    ("  comparisons:\n    c: {a: a, b: b, metric: bbox/AP, paper: {delta: 1.5}}\n",
     "study s: comparisons.c.paper: keys are table (required), delta, base, note"),
    ("  comparisons:\n    c: {a: a, b: b, metric: bbox/AP, paper: {table: Fig8, delta: 1.5, base: 0}}\n",
     "study s: comparisons.c.paper.base must be a positive number"),
    ("  figures:\n    per_group_ap: {variant: b, paper: {table: Fig4, median: 37.5}}\n",
     "study s: figures.per_group_ap.paper: keys are median, spread, table"),
    ("  figures:\n    per_group_ap: {variant: b, paper: {table: Fig4, median: 37.5, spread: tiny}}\n",
     "study s: figures.per_group_ap.paper.spread must be a number"),
    ("  figures:\n    variants: {paper: {table: Table7}}\n", "study s: figures.variants: keys are metric, variant, variants"),
    ("  comparisons:\n    c: {a: a, b: b, metric: bbox/AP, paper: {table: Fig8, delta: plus}}\n",
     "study s: comparisons.c.paper.delta must be a number"),
    ("  comparisons: [a, b]\n", "study s: comparisons must be a mapping"),
    ("  metrics: bbox/AP\n", "study s: metrics must be a non-empty list"),
    ("  metrics: [bbox/AP, segm]\n", "study s: metrics: metric 'segm' must read"),
    ("  metrics: [bbox/AP, bbox/AP]\n", "study s: metrics repeat"),
    ("  figures:\n    comparisons: {}\n", "study s: figures.comparisons needs a comparisons entry"),
    ("  figures:\n    variants: {metric: bbox-AP}\n", "study s: figures.variants: metric 'bbox-AP' must read"),
    ("  figures:\n    variants: {colour: red}\n", "study s: figures.variants: keys are metric, variant, variants"),
])
def test_comparison_and_metric_errors_are_one_line(tmp_path, extra, message):
    path = tmp_path / "studies.yaml"
    path.write_text(_BASE + extra)
    with pytest.raises(StudyError) as e:
        load_studies(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    # negative control: a well-formed entry of every new key parses
    path.write_text(_BASE + "  metrics: [bbox/AP, segm/APs, 3d/AP@0.5]\n  comparisons:\n"
                    "    c: {a: a, b: b, metric: 3d/NDS, paper: {table: Table5, delta: 3}}\n"
                    "    d: {a: a, b: b, metric: bbox/AP, paper: {table: Table3, base: 32.6, delta: 5}}\n"
                    "  figures:\n    comparisons: {}\n    variants: {metric: segm/AP}\n"
                    "    per_group_ap: {variant: b, paper: {table: Fig4, median: 37.5, spread: 0.1}}\n")
    study = load_studies(path)["s"]
    c, d = study.comparisons["c"], study.comparisons["d"]
    assert (c.label, c.paper_delta, c.paper_note, c.paper_base) == ("b - a", 3.0, None, None)
    assert (d.paper_base, d.paper_delta) == (32.6, 5.0)
    assert study.figures["per_group_ap"]["paper"] == {"table": "Fig4", "median": 37.5, "spread": 0.1}


_STARTS = """\
s:
  variants:
    base: {overrides: {model.num_groups: 1}}
    k3: {overrides: {model.num_groups: 3}}
"""


@pytest.mark.parametrize("variant, message", [
    ("{init_from: {variant: nope}}", "study s: variant v: init_from.variant: unknown variant 'nope'"),
    ("{init_from: {parts: [encoder]}}", "study s: variant v: init_from: keys are variant (required"),
    ("{init_from: {variant: base, parts: []}}", "study s: variant v: init_from.parts must be a non-empty list"),
    ("{init_from: {variant: v}}", "study s: variant v: init_from loops through v -> v"),
    ("{init_from: {variant: base}, reuse: other/x}", "reuses the runs of other/x, so it cannot also say how they start"),
    ("{equal_time: {to: k3}}", "study s: variant v: equal_time: keys are to"),
    ("{equal_time: {to: k3, measured_on: v}}", "equal_time.measured_on: 'v' is not another variant of the study"),
    ("{equal_time: {to: nope, measured_on: base}}", "equal_time.to: 'nope' is not another variant of the study"),
    ("{equal_time: {to: k3, measured_on: base}}\n    w: {equal_time: {to: v, measured_on: base}}",
     "study s: variant w: equal_time.to: v has a derived schedule itself"),
])
def test_starts_and_schedules_that_cannot_be_are_one_line(tmp_path, variant, message):
    path = tmp_path / "studies.yaml"
    path.write_text(_STARTS + f"    v: {variant}\n")
    with pytest.raises(StudyError) as e:
        load_studies(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_start_loop_and_a_misspelt_part_are_refused(tmp_path):
    path = tmp_path / "studies.yaml"
    path.write_text(_STARTS + "    a: {init_from: {variant: b}}\n    b: {init_from: {variant: a}}\n")
    with pytest.raises(StudyError, match="variant a: init_from loops through a -> b -> a"):
        load_studies(path)
    path.write_text(_STARTS + "    c: {init_from: {variant: k3}}\n    d: {init_from: {variant: c, parts: [encodr]}}\n")
    s = load_studies(path)["s"]  # a chain is fine: d starts from c, which starts from k3
    assert s.start_run("R", "d", 1) == run_dir("R", "s", "c", 1) and s.start_run("R", "c", 1) == run_dir("R", "s", "k3", 1)
    with pytest.raises(StudyError, match="study s, variant d: model.init_from.parts: unknown part 'encodr' "
                                         "\\(did you mean 'encoder'\\?\\)"):
        load_studies(path, "cpu_small", [])
