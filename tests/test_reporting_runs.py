"""Reading a study's run directories into the long table (groupdetr.reporting.runs, fake run dirs)."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from groupdetr.evaluation.coco import STAT_NAMES
from groupdetr.reporting import study as S
from groupdetr.studies import run_dir
from reporting_fixtures import (_copy_runs, all_studies, aruns, assignment, dnstudy, druns, heads,  # noqa: F401
                                hruns, kruns, kstudy, runs_root)
from study_fixtures import EPOCHS, LOG_SCALARS, table7_ap


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
    assert row["value"] == pytest.approx(100 * table7_ap("group_detr", 1)) and row["unit"] == "points"  # x 100
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
    # instability: the fraction of assignments changed, in % (make_run logs 0.2 / epoch); the log's own fields as logged
    assert inst.sort_values("epoch")["value"].tolist() == pytest.approx([20.0 / e for e in range(2, EPOCHS + 1)])
    units = dict(log[["metric", "unit"]].drop_duplicates().itertuples(index=False, name=None))
    assert (units["matching_instability"], units["seconds"], units["loss"], units["bbox/AP"]) == (
        "%", "s", "unitless", "points")
    assert log[log["metric"] == "seconds"]["value"].eq(1.5).all()
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


def test_a_pretrained_variant_matches_the_file_the_workflow_passed(tmp_path):
    from groupdetr.reporting.study import _check_overrides

    cfg = {"model": {"backbone": {"weights": "data/synth/pretrained/x.pth"}, "num_groups": 1}}
    _check_overrides(cfg, ["model.backbone.weights=pretrain", "model.num_groups=1"], tmp_path)
    with pytest.raises(S.GatherError, match="holds another variant"):
        _check_overrides(cfg, ["model.backbone.weights=null"], tmp_path)
    with pytest.raises(S.GatherError, match="holds another variant"):
        _check_overrides({"model": {"backbone": {"weights": None}}}, ["model.backbone.weights=pretrain"], tmp_path)
