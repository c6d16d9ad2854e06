"""Training cost from the runs' logs (paper Fig. 7, Table 2) and the paper's Tables 1-2 beside ours."""
from __future__ import annotations

import math

import pytest

from groupdetr.reporting import study as S
from groupdetr.reporting.paper import load_reported, table1, table2, training_cost
from groupdetr.reporting.versus import fig7_comparison, rank_agreement, table1_comparison, table2_comparison
from study_fixtures import REPO, make_cost_runs, make_study_runs, studies, table1_ap

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def reported():
    return load_reported(REPO / "results" / "paper" / "reported.csv")


@pytest.fixture(scope="module")
def cost_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost")
    s = studies()
    make_cost_runs(root, s["ablation_K"], s["ablation_training_time"], SEEDS)
    return S.collect(s["ablation_K"], root), S.collect(s["ablation_training_time"], root)


def test_run_costs_sum_the_logged_epochs(cost_runs):
    kruns, _ = cost_runs
    c = S.run_costs(kruns).set_index(["variant", "seed"])
    k11 = c.loc[("K11", 2)]
    assert (k11["epochs"], k11["iterations"], k11["num_groups"]) == (3, 30, 11)  # 3 epochs of 10 iterations
    assert k11["train_seconds"] == pytest.approx(3 * (1.0 + 0.55 + 0.02))
    assert k11["sec_per_iter"] == pytest.approx((1.0 + 0.55 + 0.02) / 10) and k11["peak_memory_mib"] == 212.0


def test_cost_against_k_is_fig7_with_the_papers_values_beside(cost_runs, reported):
    kruns, _ = cost_runs
    cost = S.cost_vs_k(kruns)
    assert cost["K"].tolist() == list(range(1, 12)) and (cost["n"] == 3).all()
    k1, k11 = cost.iloc[0], cost.iloc[-1]
    assert k11["sec_per_iter"] == pytest.approx((1.0 + 0.55 + 0.01) / 10)  # the mean over seeds 0-2
    assert k11["time_vs_K1"] == pytest.approx(1.56 / 1.06) and k1["time_vs_K1"] == 1.0
    assert k11["extra_memory_mib"] == pytest.approx(100.0) and k1["extra_memory_mib"] == 0.0
    assert k11["sec_per_iter_ci95"] > 0  # the seeds differ: a CI, never 0
    both = fig7_comparison(cost, training_cost(reported))
    assert both.loc[both["K"] == 11, "paper_time_vs_K1"].item() == pytest.approx(28 / 23)
    assert both.loc[both["K"] == 11, "paper_extra_memory_gb"].item() == 1.2
    assert both.loc[both["K"] == 1, "paper_extra_memory_gb"].item() == 0.0
    assert both.loc[both["K"].between(2, 10), "paper_time_vs_K1"].isna().all()  # the paper reports K = 1, 11 only
    dab = fig7_comparison(cost, training_cost(reported), detector="DAB-DETR")
    assert dab.loc[dab["K"] == 11, "paper_extra_memory_gb"].item() == 1.7
    assert S.plot_cost_vs_k(both, "synth").axes  # draws


def test_paper_tables_1_2_and_the_cost_from_the_transcription(reported):
    t1 = table1(reported)
    assert t1[["row", "mAP", "K"]].values.tolist() == [["a", 40.6, 1], ["b", 41.5, 11], ["c", 42.9, 11]]
    t2 = table2(reported)
    c12 = t2[(t2["detector"] == "C-DETR") & (t2["schedule"] == 12)]
    assert c12[["arm", "epochs", "train_hours", "mAP"]].values.tolist() == [
        ["baseline", 12, 4.6, 32.6], ["baseline longer", 15, 5.8, 34.4], ["w/ Group", 12, 5.6, 37.6]]
    assert len(t2) == 12 and set(t2["schedule"]) == {12, 50}
    c50 = t2[(t2["detector"] == "C-DETR") & (t2["schedule"] == 50)].set_index("arm")
    assert (c50.loc["baseline longer", "epochs"], c50.loc["w/ Group", "train_hours"]) == (60, 23.3)
    cost = training_cost(reported).set_index(["detector", "K"])
    assert cost.loc[("C-DETR", 11), "min_per_epoch"] == 28.0 and cost.loc[("C-DETR", 1), "time_vs_K1"] == 1.0


def test_table2_puts_our_training_time_beside_the_papers(cost_runs, reported):
    _, truns = cost_runs
    times = S.training_time_table(truns)
    assert times["variant"].tolist() == ["baseline_1x", "baseline_equal_time", "group_1x"]
    assert times["epochs"].tolist() == [12, 15, 12]
    assert times["train_hours"].iloc[1] == pytest.approx(15 * 4.6 / 12, rel=2e-3)
    assert times["time_vs_first"].tolist() == pytest.approx([1.0, 15 / 12, 5.6 / 4.6], rel=2e-3)
    both = table2_comparison(table2(reported), times).set_index("arm")
    assert both.loc["baseline longer", "variant"] == "baseline_equal_time"
    assert both.loc["baseline longer", "paper_time_vs_1x"] == pytest.approx(5.8 / 4.6)
    assert both.loc["w/ Group", "ours"] == pytest.approx(100 * (0.376 + 0.005 / 3))  # mean of seeds 0-2
    assert (both["n"] == 3).all()
    partial = table2_comparison(table2(reported), times[times["variant"] != "baseline_equal_time"]).set_index("arm")
    assert partial.loc["baseline longer", "n"] == 0 and math.isnan(partial.loc["baseline longer", "ours"])
    with pytest.raises(S.GatherError, match="no rows of C-DETR at 24 epochs"):
        table2_comparison(table2(reported), times, schedule=24)


def test_table1_joins_by_paper_row(tmp_path, reported):
    study = studies()["ablation_enhancement"]
    make_study_runs(tmp_path, study, SEEDS, ap_of=table1_ap)
    summary = S.summarize(S.collect(study, tmp_path, seeds=SEEDS))
    c = table1_comparison(table1(reported), summary)
    assert c["row"].tolist() == ["a", "b", "c"]
    assert c["variant"].tolist() == ["enc_fixed_dec_K1", "enc_fixed_dec_K11", "enc_dec_K11"]
    assert c["paper_mAP"].tolist() == [40.6, 41.5, 42.9]
    ranks = rank_agreement(c)
    assert ranks["paper_order"] == ranks["our_order"] == ["c", "b", "a"]
