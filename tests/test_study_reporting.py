"""Gathering a study: long table, statistics, tables, figures, atomic output, CLI (fake run dirs)."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from groupdetr.cli import main as cli_main
from groupdetr.evaluation.coco import STAT_NAMES
from groupdetr.reporting import study as S
from groupdetr.reporting.paper import (BENCHMARK, TABLE7_VARIANTS, effects_vs_paper, fig8, fig8_comparison,
                                       heads_comparison, load_reported, main_results, main_results_comparison,
                                       rank_agreement, reported_value, table5, table6, table7, table7_claims,
                                       table7_comparison)
from groupdetr.studies import StudyError, load_studies, run_dir
from study_fixtures import (EPOCHS, LOG_SCALARS, REPO, STUDIES, dn_ap, heads_ap, k_ap, make_study_runs, map_3d, nds,
                            segm_ap, studies, table7_ap)

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def all_studies():
    return studies()


@pytest.fixture(scope="module")
def assignment(all_studies):
    """Table 7 at the fixtures' three seeds (the project's study has five)."""
    return dataclasses.replace(all_studies["ablation_assignment"], seeds=tuple(SEEDS))


@pytest.fixture(scope="module")
def kstudy(all_studies):
    return all_studies["ablation_K"]


@pytest.fixture(scope="module")
def heads(all_studies):
    return all_studies["ablation_heads"]


@pytest.fixture(scope="module")
def dnstudy(all_studies):
    return all_studies["ablation_dn"]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, assignment, kstudy, heads, dnstudy):
    root = tmp_path_factory.mktemp("runs")
    make_study_runs(root, assignment, SEEDS, ap_of=table7_ap)
    make_study_runs(root, kstudy, [0, 1], ap_of=k_ap)
    make_study_runs(root, heads, SEEDS, ap_of=heads_ap)
    make_study_runs(root, dnstudy, SEEDS, ap_of=dn_ap)
    return root


@pytest.fixture(scope="module")
def hruns(heads, runs_root):
    return S.collect(heads, runs_root)


@pytest.fixture(scope="module")
def druns(dnstudy, runs_root):
    return S.collect(dnstudy, runs_root)


@pytest.fixture(scope="module")
def aruns(assignment, runs_root):
    return S.collect(assignment, runs_root)


@pytest.fixture(scope="module")
def kruns(kstudy, runs_root):
    return S.collect(kstudy, runs_root, seeds=[0, 1])


def _copy_runs(runs_root, tmp_path, study_name):
    dst = tmp_path / "runs"
    shutil.copytree(runs_root / study_name, dst / study_name)
    return dst


# --- collect -------------------------------------------------------------------------------------


def test_long_table_has_one_row_per_variant_seed_evaluation_epoch_metric(aruns, kruns, assignment):
    n_stats = len(STAT_NAMES)
    per_run = n_stats + EPOCHS * (len(LOG_SCALARS) + n_stats) + (EPOCHS - 1)  # instability is null in epoch 1
    # ablation_assignment: 4 variants x 3 seeds, plus the nms evaluation of naive one-to-many (3 seeds)
    assert len(aruns) == 4 * 3 * per_run + 3 * n_stats
    # ablation_K: 11 variants x 2 seeds, plus 11 per-group evaluations of K11 (2 seeds)
    assert len(kruns) == 11 * 2 * per_run + 11 * 2 * n_stats
    assert list(aruns.columns) == list(S.COLUMNS)
    assert not aruns.duplicated(["variant", "seed", "evaluation", "epoch", "metric"]).any()
    assert list(dict.fromkeys(aruns["variant"])) == list(assignment.variants)  # study order
    assert set(aruns["evaluation"]) == {"final", "epoch", "nms"}
    assert set(kruns["evaluation"]) == {"final", "epoch"} | {f"group{g}" for g in range(11)}


def test_rows_carry_provenance_and_the_right_values(aruns, runs_root):
    final = aruns[(aruns["evaluation"] == "final") & (aruns["metric"] == "bbox/AP")]
    row = final[(final["variant"] == "group_detr") & (final["seed"] == 1)].iloc[0]
    assert row["value"] == pytest.approx(table7_ap("group_detr", 1))
    assert row["epoch"] == EPOCHS and row["num_groups"] == 11 and row["assignment"] == "group"
    assert row["self_attention"] == "separate" and row["label"] == "Group DETR" and row["paper_row"] == "(d)"
    assert row["recipe"] == "cpu_small" and row["dataset"] == "synth" and row["device"] == "cpu"
    assert row["run_dir"] == str(run_dir(runs_root, "ablation_assignment", "group_detr", 1))
    manifest = json.loads((run_dir(runs_root, "ablation_assignment", "group_detr", 1) / "manifest.json").read_text())
    assert row["config_hash"] == manifest["config_hash"] and row["git_commit"] == manifest["git_commit"]
    assert row["groupdetr_version"] == "0.1.0" and row["world_size"] == 1 and row["epochs"] == EPOCHS
    o2o = final[final["variant"] == "one_to_one"].iloc[0]
    assert o2o["num_groups"] == 1 and o2o["assignment"] == "group" and math.isnan(o2o["nms_iou"])
    nms = aruns[aruns["evaluation"] == "nms"]
    assert (nms["nms_iou"] == 0.7).all() and (nms["variant"] == "naive_one_to_many").all()
    naive_final = aruns[(aruns["variant"] == "naive_one_to_many") & (aruns["evaluation"] == "final")]
    assert naive_final["nms_iou"].isna().all()  # the override belongs to the eval file only


def test_epoch_rows_hold_the_log_and_skip_null_instability(kruns):
    log = kruns[(kruns["evaluation"] == "epoch") & (kruns["variant"] == "K3") & (kruns["seed"] == 0)]
    inst = log[log["metric"] == "matching_instability"]
    assert sorted(inst["epoch"]) == list(range(2, EPOCHS + 1))
    loss = log[log["metric"] == "loss"].sort_values("epoch")["value"].tolist()
    assert loss == pytest.approx([3.0 / e for e in range(1, EPOCHS + 1)])
    assert set(log["metric"]) >= {"seconds", "peak_memory_mib", "bbox/AP"}
    groups = kruns[kruns["evaluation"] == "group4"]
    assert (groups["eval_group"] == 4).all() and (groups["variant"] == "K11").all()


def test_coco_minus_one_becomes_nan(tmp_path, assignment, runs_root):
    root = _copy_runs(runs_root, tmp_path, assignment.name)
    path = run_dir(root, assignment.name, "group_detr", 0) / "metrics.json"
    m = json.loads(path.read_text())
    m["bbox/APs"] = -1.0
    path.write_text(json.dumps(m))
    runs = S.collect(assignment, root, variants=["group_detr"])
    aps = runs[(runs["evaluation"] == "final") & (runs["metric"] == "bbox/APs")].set_index("seed")["value"]
    assert math.isnan(aps[0]) and not math.isnan(aps[1])
    s = S.summarize(runs)
    assert s[(s["evaluation"] == "final") & (s["metric"] == "bbox/APs")]["n"].item() == 2


def test_missing_run_is_one_error_naming_the_path(tmp_path, assignment, runs_root):
    root = _copy_runs(runs_root, tmp_path, assignment.name)
    missing = run_dir(root, assignment.name, "group_shared_sa", 2)
    (missing / "metrics.json").unlink()
    with pytest.raises(S.GatherError, match="run not finished") as e:
        S.collect(assignment, root)
    assert str(missing / "metrics.json") in str(e.value) and "\n" not in str(e.value)
    shutil.rmtree(missing)
    with pytest.raises(S.GatherError, match="run missing"):
        S.collect(assignment, root)
    # negative control: without that seed it gathers
    assert set(S.collect(assignment, root, seeds=[0, 1])["seed"]) == {0, 1}


def test_missing_eval_file_is_one_error(tmp_path, assignment, runs_root):
    root = _copy_runs(runs_root, tmp_path, assignment.name)
    path = run_dir(root, assignment.name, "naive_one_to_many", 1) / "eval" / "nms.json"
    path.unlink()
    with pytest.raises(S.GatherError, match="evaluation nms") as e:
        S.collect(assignment, root)
    assert str(path) in str(e.value)
    S.collect(assignment, root, variants=["one_to_one", "group_detr"])  # other variants need no eval file


def test_a_run_of_another_variant_or_a_stale_eval_is_refused(tmp_path, assignment, runs_root):
    root = _copy_runs(runs_root, tmp_path, assignment.name)
    # group_detr's seed0 directory filled with group_shared_sa's run
    src = run_dir(root, assignment.name, "group_shared_sa", 0)
    dst = run_dir(root, assignment.name, "group_detr", 0)
    shutil.rmtree(dst)
    shutil.copytree(src, dst)
    with pytest.raises(S.GatherError, match="model.self_attention is 'shared' but the variant sets 'separate'"):
        S.collect(assignment, root, variants=["group_detr"])
    path = run_dir(root, assignment.name, "naive_one_to_many", 0) / "eval" / "nms.json"
    record = json.loads(path.read_text())
    record["epoch"] = 1
    path.write_text(json.dumps(record))
    with pytest.raises(S.GatherError, match="epoch 1 but the run finished at epoch"):
        S.collect(assignment, root, variants=["naive_one_to_many"])


def test_unknown_variant_is_refused(assignment, runs_root):
    with pytest.raises(S.GatherError, match="unknown variant.*K3"):
        S.collect(assignment, runs_root, variants=["K3"])


# --- statistics ----------------------------------------------------------------------------------


def test_summary_ci_matches_a_hand_computation(aruns):
    s = S.summarize(aruns)
    row = s[(s["variant"] == "group_detr") & (s["evaluation"] == "final") & (s["metric"] == "bbox/AP")].iloc[0]
    x = np.array([table7_ap("group_detr", seed) for seed in SEEDS])
    sd = math.sqrt(((x - x.mean()) ** 2).sum() / 2)
    half = st.t.ppf(0.975, 2) * sd / math.sqrt(3)  # t(0.975, 2 dof) = 4.303
    assert row["n"] == 3 and row["mean"] == pytest.approx(x.mean()) and row["std"] == pytest.approx(sd)
    assert row["ci95"] == pytest.approx(half) and half == pytest.approx(4.3027 * sd / math.sqrt(3), rel=1e-4)
    assert (row["low"], row["high"]) == pytest.approx((x.mean() - half, x.mean() + half))
    assert row["label"] == "Group DETR" and row["paper_row"] == "(d)" and row["num_groups"] == 11
    assert not (s["evaluation"] == "epoch").any()
    nms = s[(s["evaluation"] == "nms") & (s["metric"] == "bbox/AP")].iloc[0]
    assert nms["mean"] == pytest.approx(np.mean([table7_ap("naive_one_to_many", k) + 0.05 for k in SEEDS]))


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
    a = np.array([table7_ap("one_to_one", s) for s in SEEDS])
    b = np.array([table7_ap("group_detr", s) for s in SEEDS])
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
    assert S.effect(aruns, "naive_one_to_many", "naive_one_to_many", evaluation_b="nms")["diff"] == pytest.approx(0.05)
    one = S.effect(S.collect(assignment, runs_root, seeds=[0]), "one_to_one", "group_detr")
    assert math.isnan(one["low"]) and not one["significant"]  # one seed: unknown, never "significant"
    with pytest.raises(S.GatherError, match="no bbox/AP of variant 'K1'"):
        S.effect(aruns, "one_to_one", "K1")


def test_noise_larger_than_the_effect_is_not_significant(tmp_path, assignment):
    noisy = {0: 0.30, 1: 0.36, 2: 0.31}
    make_study_runs(tmp_path, assignment, SEEDS, ap_of=lambda v, s: noisy[s] + (0.005 if v == "group_detr" else 0))
    e = S.effect(S.collect(assignment, tmp_path), "one_to_one", "group_detr")
    assert e["diff"] == pytest.approx(0.005) and not e["significant"] and e["low"] < 0 < e["high"]


def test_flattening_point_and_per_group_summary(kruns):
    flat = S.flattening_point(kruns)
    assert flat["k"] == 6 and flat["best_k"] >= 6  # k_ap rises until K = 6, flat afterwards
    assert flat["table"]["below_best"].tolist() == [True] * 5 + [False] * 6
    groups, spread = S.per_group_summary(kruns, "K11")
    assert groups["group"].tolist() == list(range(11))
    means = [np.mean([k_ap("K11", s) - 0.002 * g for s in (0, 1)]) for g in range(11)]
    assert groups["mean"].tolist() == pytest.approx(means)
    assert spread["median"] == pytest.approx(np.median(means)) and spread["half_range"] == pytest.approx(0.01)
    g0 = groups.iloc[0]
    inside = sum(g0["low"] <= m <= g0["high"] for m in means)
    assert (spread["group0_low"], spread["group0_high"], spread["within_group0_ci"]) == (g0["low"], g0["high"], inside)
    assert 1 <= inside < 11  # group 0 is inside its own CI; the fixture's groups drift by 0.002 each
    with pytest.raises(S.GatherError, match="per-group"):
        S.per_group_summary(kruns, "K3")
    pts = S.as_points(groups)
    assert pts["mean"].tolist() == pytest.approx([100 * m for m in means]) and (pts["group"] == groups["group"]).all()
    assert groups["mean"].tolist() == pytest.approx(means)  # the input is not modified


# --- tables --------------------------------------------------------------------------------------


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


# --- figures -------------------------------------------------------------------------------------


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


# --- gather --------------------------------------------------------------------------------------


def test_gather_writes_every_file(tmp_path, assignment, kstudy, runs_root, aruns):
    out = tmp_path / "results" / "ablation_assignment"
    paths = S.gather(assignment, runs_root, out)
    names = {p.name for p in paths}
    assert names == {"runs.csv", "summary.csv", "effects.csv", "comparisons.csv", "table.md", "table.tex", "README.md",
                     *(f"{k}.png" for k in assignment.figures)}
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
    k_out = tmp_path / "results" / "ablation_K"
    k_paths = S.gather(kstudy, runs_root, k_out, seeds=[0, 1])
    assert {p.name for p in k_paths} >= {"ap_vs_k.png", "per_group_ap.png", "ap_vs_epoch.png", "instability.png"}
    k_readme = (k_out / "README.md").read_text()
    epochs = S.per_epoch_table(S.read_gathered(k_out)[0])
    assert epochs["variant"].tolist()[:2] == ["K1", "K2"] and (epochs["n"] == 2).all()
    k11 = S.read_gathered(k_out)[0].query("variant == 'K11' and evaluation == 'epoch' and metric == 'bbox/AP'")
    last = int(k11["epoch"].max())
    assert epochs.set_index("variant").loc["K11", last] == pytest.approx(k11[k11["epoch"] == last]["value"].mean())
    assert "## bbox/AP x 100 per epoch (mean over seeds)" in k_readme
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

    monkeypatch.setattr(S, "plot_instability", boom)  # the last figure of the study: files already written
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


# --- CLI -----------------------------------------------------------------------------------------


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


# --- paper beside ours ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reported():
    return load_reported(REPO / "results" / "paper" / "reported.csv")


def test_table7_comparison_ranks_and_claims(reported, aruns):
    paper7 = table7(reported)
    c = table7_comparison(paper7, S.summarize(aruns))
    assert c["row"].tolist() == ["a", "b", "b", "c", "d"] and c["evaluation"].tolist()[2] == "nms"
    assert c["variant"].tolist() == [TABLE7_VARIANTS[r] for r in "abbcd"]
    assert c.loc[c["evaluation"] == "final", "paper_mAP"].tolist() == [32.6, 8.4, 34.8, 37.6]
    assert math.isnan(c.loc[2, "paper_mAP"]) and math.isnan(c.loc[2, "our_rank"])
    assert c.loc[4, "ours"] == pytest.approx(100 * np.mean([table7_ap("group_detr", s) for s in SEEDS]))
    ranks = rank_agreement(c)
    assert ranks["paper_order"] == ["d", "c", "a", "b"] and ranks["same_order"] and ranks["kendall_tau"] == 1.0
    claims = table7_claims(aruns, paper7)
    assert claims["paper_holds"].all() and claims["ours_holds"].tolist() == [True] * 4
    assert claims.loc[0, "paper_diff"] == -24.2


def test_table7_claims_fail_when_the_runs_disagree(tmp_path, assignment, reported):
    flipped = {"one_to_one": 0.30, "naive_one_to_many": 0.25, "group_shared_sa": 0.36, "group_detr": 0.33}
    make_study_runs(tmp_path, assignment, SEEDS, ap_of=lambda v, s: flipped[v] + 0.002 * s)
    runs = S.collect(assignment, tmp_path)
    claims = table7_claims(runs, table7(reported))
    # naive o2m only 5 points below (not "far"), shared SA above separate SA: those two claims fail
    assert claims["ours_holds"].tolist() == [False, True, False, True]
    assert claims.loc[2, "ours_diff"] > 0 and claims.loc[0, "ours_ratio"] > 0.5
    ranks = rank_agreement(table7_comparison(table7(reported), S.summarize(runs)))
    assert ranks["our_order"] == ["c", "d", "a", "b"] and not ranks["same_order"]
    one_seed = table7_claims(S.collect(assignment, tmp_path, seeds=[0]), table7(reported))
    assert one_seed["ours_holds"].isna().all()  # unknown with one seed


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


# --- studies with comparisons and per-head metrics (Tables 5-6, Fig. 8) ---------------------------------


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
    assert final.loc[("base", 1), "value"] == pytest.approx(0.21)  # own/K1's run at seed 1
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
    assert job == EvalJob(name="per_group", groups=tuple(range(11)), all_groups=True)
    assert kstudy.eval_jobs("K1", 1) == []
    assert [e.job for e in kstudy.evaluations_for("K11", 11)] == ["per_group"] * 11  # the files the job writes
    (nms,) = assignment.eval_jobs("naive_one_to_many", 11)
    assert nms == EvalJob(name="nms", overrides=("postprocess.nms_iou=0.7",))
    path = tmp_path / "studies.yaml"
    path.write_text("s:\n  variants:\n    a: {overrides: {model.num_groups: 4}}\n"
                    "  evaluations:\n    some: {variants: [a], groups: [3, 1]}\n")
    (job,) = load_studies(path)["s"].eval_jobs("a", 4)
    assert job.groups == (3, 1) and not job.all_groups
    path.write_text("s:\n  variants:\n    a: {overrides: {model.num_groups: 4}}\n"
                    "  evaluations:\n    group3: {variants: [a], groups: all}\n")
    with pytest.raises(StudyError, match="evaluations.group3: name must be a plain word other than group<g>"):
        load_studies(path)


def test_the_projects_reuses_are_the_same_experiments():
    """Table 7's rows (a), (d) and the heads study's 2D rows are ablation_K's K1 and K11, config for config."""
    s = load_studies(STUDIES, "cpu_study", [])
    reuses = {(st.name, v.name): v.reuse for st in s.values() for v in st.variants.values() if v.reuse}
    assert reuses == {("ablation_assignment", "one_to_one"): ("ablation_K", "K1"),
                      ("ablation_assignment", "group_detr"): ("ablation_K", "K11"),
                      ("ablation_heads", "det2d_K1"): ("ablation_K", "K1"),
                      ("ablation_heads", "det2d_K11"): ("ablation_K", "K11")}


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
     "study s: comparisons.c.paper: keys are table (required), delta, note"),
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
                    "  figures:\n    comparisons: {}\n    variants: {metric: segm/AP}\n")
    c = load_studies(path)["s"].comparisons["c"]
    assert (c.label, c.paper_delta, c.paper_note) == ("b - a", 3.0, None)


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
        x = [value(heads_ap(f"{head}_K1", s)) for s in SEEDS]
        y = [value(heads_ap(f"{head}_K11", s)) for s in SEEDS]
        d, lo, hi, dof = _welch(x, y)
        row = c.loc[name]
        assert row["diff"] == pytest.approx(d) and (row["low"], row["high"]) == pytest.approx((lo, hi))
        assert row["dof"] == pytest.approx(dof) and row["mean_a"] == pytest.approx(np.mean(x))
        assert row["n_a"] == row["n_b"] == 3 and row["significant"] and row["sign"] == 1
        assert row["sign_match"] and row["confirms_paper"]
    assert c.loc["seg", "dof"] < 4  # unequal seed noise: Welch, not the pooled 4 dof
    assert c.loc["det3d_NDS", "diff"] == pytest.approx(5 / 8 * c.loc["det3d_mAP", "diff"])  # NDS = (5 mAP + ...) / 8
    assert c.loc["seg", "paper_delta"] == pytest.approx(0.012) and c.loc["seg", "paper_table"] == "Table6"
    assert "Mask2Former" in c.loc["seg", "paper_note"]
    e = S.effect(hruns, "seg_K1", "seg_K11", "segm/AP")
    assert c.loc["seg", "p_value"] == pytest.approx(e["p_value"])
    assert S.as_points(c)["paper_delta"].tolist() == pytest.approx([5.0, 1.2, 3.0, 1.4])


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
    assert row["paper_delta"] == pytest.approx(0.03)
    # one seed: the sign is known, a confirmation is not
    one = S.comparisons_table(S.collect(heads, tmp_path, seeds=[0], variants=gathered), heads.comparisons)
    one = one.set_index("comparison")
    assert one.loc["det2d", "sign_match"] and pd.isna(one.loc["det2d", "confirms_paper"])
    assert not one.loc["det2d", "significant"]
    # no paper delta: nothing to match
    t = S.comparisons_table(runs, [Comparison("x", "det2d_K1", "det2d_K11", "bbox/AP", "x")])
    assert t.loc[0, "sign"] == 1 and pd.isna(t.loc[0, "sign_match"]) and pd.isna(t.loc[0, "confirms_paper"])
    # a gathered variant without the metric is an error naming the comparison
    with pytest.raises(S.GatherError, match="comparison y: no segm/AP of variant 'det2d_K1'"):
        S.comparisons_table(runs, [Comparison("y", "det2d_K1", "seg_K1", "segm/AP", "y")])


def test_provenance_names_task_decoder_and_denoising(hruns, druns, aruns, tmp_path, assignment, runs_root):
    per = hruns.drop_duplicates("variant").set_index("variant")
    assert per["task"].to_dict() == {"det2d_K1": "detection", "det2d_K11": "detection",
                                     "seg_K1": "instance_segmentation", "seg_K11": "instance_segmentation",
                                     "det3d_K1": "detection_3d", "det3d_K11": "detection_3d"}
    final = hruns[hruns["evaluation"] == "final"]
    metrics = final.groupby("variant")["metric"].agg(set)
    assert "segm/AP" in metrics["seg_K11"] and "3d/NDS" in metrics["det3d_K1"] and "bbox/AP" in metrics["det3d_K1"]
    assert not any(m.startswith(("segm/", "3d/")) for m in metrics["det2d_K1"])
    d = druns.drop_duplicates("variant").set_index("variant")
    assert d["detector"].to_dict() == {"dab": "DAB-DETR", "dab_dn": "DN-DETR", "dab_group": "DAB-DETR",
                                       "dab_dn_group": "DN-DETR"}
    assert d["denoising"].to_dict() == {"dab": "none", "dab_dn": "per_group", "dab_group": "none",
                                        "dab_dn_group": "per_group"}
    assert (d["decoder"] == "dab").all() and d["num_groups"].tolist() == [1, 1, 11, 11]
    assert (set(aruns["detector"]), set(aruns["decoder"]), set(aruns["denoising"])) == ({"C-DETR"}, {"conditional"},
                                                                                      {"none"})
    # a run directory written before these switches existed reads as Conditional DETR without DN
    import yaml

    root = _copy_runs(runs_root, tmp_path, assignment.name)
    path = run_dir(root, assignment.name, "group_detr", 0) / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    for key in ("task", "decoder", "denoising"):
        del cfg["model"][key]
    path.write_text(yaml.safe_dump(cfg))
    old = S.collect(assignment, root, seeds=[0], variants=["group_detr"]).iloc[0]
    assert (old["task"], old["decoder"], old["denoising"], old["detector"]) == ("detection", "conditional", "none",
                                                                                "C-DETR")


def test_results_table_names_columns_by_family_when_families_mix(hruns):
    s = S.summarize(hruns)
    t = S.results_table(s, ["bbox/AP", "segm/AP", "3d/NDS"])
    assert list(t.columns) == ["Row", "Variant", "n", "bbox/AP", "segm/AP", "3d/NDS"]
    assert t.loc[("det2d_K1", "final"), "segm/AP"] == "–" and t.loc[("det2d_K1", "final"), "3d/NDS"] == "–"
    r = s[(s["variant"] == "seg_K11") & (s["evaluation"] == "final") & (s["metric"] == "segm/AP")].iloc[0]
    assert t.loc[("seg_K11", "final"), "segm/AP"] == f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}"
    assert list(S.results_table(s, ["segm/AP", "segm/AP50"]).columns)[-2:] == ["AP", "AP50"]  # one family: short


def test_gather_of_a_study_with_comparisons(tmp_path, heads, dnstudy, runs_root, hruns):
    out = tmp_path / "ablation_heads"
    names = {p.name for p in S.gather(heads, runs_root, out)}
    assert names == {"runs.csv", "summary.csv", "effects.csv", "comparisons.csv", "table.md", "table.tex", "README.md",
                     "comparisons.png", "variants.png"}
    assert (out / "comparisons.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    c = S.read_comparisons(out)
    pd.testing.assert_frame_equal(c, S.comparisons_table(hruns, heads.comparisons), check_dtype=False)
    table = (out / "table.md").read_text()
    header = "| Row | Variant | n | bbox/AP | bbox/AP50 | segm/AP | segm/AP50 | 3d/mAP | 3d/NDS |"
    assert table.splitlines()[0] == header
    readme = (out / "README.md").read_text()
    seg = c.set_index("comparison").loc["seg"]
    assert ("| Instance segmentation: K=11 over K=1 | segm/AP | "
            f"{100 * seg['diff']:+.1f} | [{100 * seg['low']:+.1f}, {100 * seg['high']:+.1f}] | 3, 3 | yes | "
            f"±{100 * seg['mde80']:.1f} | Table6 | +1.2 | yes |") in readme
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


def test_comparisons_figure_renders(hruns, heads):
    c = S.comparisons_table(hruns, heads.comparisons)
    fig = S.plot_comparisons(c, "synth")
    assert _is_png(fig)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[1] == "Instance segmentation: K=11 over K=1\n(segm/AP)" and len(labels) == 4
    with pytest.raises(S.GatherError):
        S.plot_comparisons(c.iloc[:0])


# --- the paper's Tables 5-6 and Fig. 8 beside ours --------------------------------------------------


def test_table5_table6_fig8_from_the_transcription(reported):
    t5 = table5(reported)
    assert t5[["detector", "metric", "baseline", "group_detr", "gain"]].values.tolist() == [
        ["PETR", "NDS", 42.0, 45.0, 3.0], ["PETR", "mAP", 37.4, 38.8, 1.4],
        ["PETR v2", "NDS", 50.3, 51.3, 1.0], ["PETR v2", "mAP", 40.7, 41.9, 1.2]]
    assert (t5["backbone"] == "VoVNetV2").all() and (t5["epochs"] == 24).all()
    t6 = table6(reported)
    assert t6[["epochs", "metric", "baseline", "group_detr", "gain"]].values.tolist() == [
        [12, "mask mAP", 38.5, 39.7, 1.2], [50, "mask mAP", 43.7, 44.0, 0.3]]
    assert len(table6(reported, ("mask mAP", "mask APs"))) == 4
    f8 = fig8(reported)
    assert f8[["a", "b", "paper_a", "paper_b", "paper_delta"]].values.tolist() == [
        ["dab", "dab_dn", 35.2, 38.6, 3.4], ["dab", "dab_group", 35.2, 39.1, 3.9],
        ["dab_group", "dab_dn_group", 39.1, 40.6, 1.5], ["dab_dn", "dab_dn_group", 38.6, 40.6, 2.0],
        ["dab", "dab_dn_group", 35.2, 40.6, 5.4]]
    stated = f8.dropna(subset=["stated"])  # the text's +1.5 on Fig. 8 is Table 3's DN-DETR - DAB-DETR with groups
    assert len(stated) == 1 and stated["stated"].item() == stated["paper_delta"].item() == 1.5
    with pytest.raises(ValueError, match="no rows of table 'Table6'"):
        table6(reported.assign(table=reported["table"].replace("Table6", "Table9")))


def test_the_studies_paper_deltas_are_the_transcriptions(reported, heads, dnstudy):
    """studies.yaml states each comparison's paper delta; it must be what reported.csv gives."""
    h = heads_comparison(reported, None)
    for c in heads.comparisons.values():
        rows = h[(h["a"] == c.a) & (h["b"] == c.b) & (h["metric"] == c.metric)]
        assert c.paper_table == rows["table"].iloc[0] and c.paper_delta == rows["paper_delta"].iloc[0], c.name
    f = fig8(reported).set_index(["a", "b"])
    for c in dnstudy.comparisons.values():
        row = f.loc[(c.a, c.b)]
        assert c.paper_delta == row["paper_delta"], c.name
        assert c.paper_table == ("Fig8" if np.isfinite(row["stated"]) else "Table3"), c.name


def test_heads_comparison_puts_our_effect_beside_each_paper_row(reported, hruns):
    h = heads_comparison(reported, hruns)
    assert h["table"].tolist() == ["Table3", "Table5", "Table5", "Table5", "Table5", "Table6", "Table6"]
    assert h["paper_model"].tolist()[:2] == ["C-DETR (ResNet-50, 12 ep)", "PETR (VoVNetV2, 24 ep)"]
    assert (h["benchmark"] == BENCHMARK).all() and "not nuScenes/COCO" in BENCHMARK
    petr_nds = h.iloc[1]
    e = S.effect(hruns, "det3d_K1", "det3d_K11", "3d/NDS")
    assert (petr_nds["paper_metric"], petr_nds["metric"], petr_nds["paper_delta"]) == ("NDS", "3d/NDS", 3.0)
    assert (petr_nds["ours_delta"], petr_nds["ours_low"], petr_nds["ours_high"]) == pytest.approx(
        (100 * e["diff"], 100 * e["low"], 100 * e["high"]))
    assert h["sign_match"].tolist() == [True] * 7 and h["confirms_paper"].tolist() == [True] * 7
    assert h.iloc[5]["ours_delta"] == h.iloc[6]["ours_delta"]  # 12 and 50 ep rows: our one mask comparison
    none = heads_comparison(reported, None)
    assert (none["n_a"] == 0).all() and none["ours_delta"].isna().all() and none["sign_match"].isna().all()
    assert none["paper_delta"].tolist() == [5.0, 3.0, 1.4, 1.0, 1.2, 1.2, 0.3]


def test_fig8_comparison_flags_an_effect_of_the_other_sign(tmp_path, reported, dnstudy, druns):
    ok = fig8_comparison(reported, druns)
    assert ok["confirms_paper"].tolist() == [True] * 5
    row = ok.iloc[2]
    e = S.effect(druns, "dab_group", "dab_dn_group")
    assert row["ours_delta"] == pytest.approx(100 * e["diff"]) and row["stated"] == 1.5
    flipped = dict(zip(["dab", "dab_dn", "dab_group", "dab_dn_group"], [0.352, 0.386, 0.391, 0.371]))
    make_study_runs(tmp_path, dnstudy, SEEDS, ap_of=lambda v, s: flipped[v] + 0.002 * s)  # DN hurts with groups
    runs = S.collect(dnstudy, tmp_path)
    bad = fig8_comparison(reported, runs)
    # DN on top of groups and groups on top of DN now go against the paper; the other three still agree
    assert bad["sign_match"].tolist() == [True, True, False, False, True]
    assert bad["confirms_paper"].tolist() == [True, True, False, False, True]
    one = effects_vs_paper(fig8(reported).assign(metric="bbox/AP"), S.collect(dnstudy, tmp_path, seeds=[0]))
    assert one["sign_match"].notna().all() and one["confirms_paper"].isna().all()


def test_a_pretrained_variant_matches_the_file_the_workflow_passed(tmp_path):
    from groupdetr.reporting.study import _check_overrides

    cfg = {"model": {"backbone": {"weights": "data/synth/pretrained/x.pth"}, "num_groups": 1}}
    _check_overrides(cfg, ["model.backbone.weights=pretrain", "model.num_groups=1"], tmp_path)
    with pytest.raises(S.GatherError, match="holds another variant"):
        _check_overrides(cfg, ["model.backbone.weights=null"], tmp_path)
    with pytest.raises(S.GatherError, match="holds another variant"):
        _check_overrides({"model": {"backbone": {"weights": None}}}, ["model.backbone.weights=pretrain"], tmp_path)
