"""Pictures of a run (groupdetr.visualization): the matched boxes of every group per object and their
agreement (pure, against a naive per-group loop), `groupdetr visualize` on a tiny trained run, and the K
study's query-augmentation figure drawn by the gather from a run's checkpoint."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY
from groupdetr.cli import main as cli_main
from groupdetr.config import load_config
from groupdetr.matcher import match_per_group
from groupdetr.visualization.query_groups import GroupAgreement, boxes_per_object, group_agreement

PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# pure functions


def test_boxes_per_object_places_each_groups_matched_box_on_a_constructed_example():
    g, n = 3, 4
    boxes = torch.arange(g * n * 4, dtype=torch.float32).view(g * n, 4)  # box q = [4q, 4q+1, 4q+2, 4q+3]
    # group 0: q1 -> object 1, q3 -> object 0; group 1: q4 -> 0 (object 1 unmatched); group 2: q10 -> 1, q11 -> 0
    query = torch.tensor([1, 3, 4, 10, 11])
    target = torch.tensor([1, 0, 0, 1, 0])
    out = boxes_per_object(boxes, query, target, num_targets=2, num_groups=g)
    assert out.shape == (2, 3, 4)
    assert out[0].tolist() == [boxes[3].tolist(), boxes[4].tolist(), boxes[11].tolist()]
    assert out[1, 0].tolist() == boxes[1].tolist() and out[1, 2].tolist() == boxes[10].tolist()
    assert out[1, 1].isnan().all()
    with pytest.raises(ValueError, match="not one-to-one within each group"):  # two queries of group 0 on object 0
        boxes_per_object(boxes, torch.tensor([0, 3]), torch.tensor([0, 0]), 2, g)
    with pytest.raises(ValueError, match="cannot be split into 5 equal groups"):
        boxes_per_object(boxes, query, target, 2, 5)


def test_boxes_per_object_equals_k_independent_hungarian_calls():
    """The matcher's group-wise assignment of one image, arranged per object, against a naive reference: one
    Hungarian per group on its own slice of the cost, the box of that group's winner written per object."""
    from scipy.optimize import linear_sum_assignment

    g, n, m = 4, 5, 3
    rng = np.random.default_rng(0)
    cost = rng.random((g * n, m))
    boxes = torch.as_tensor(rng.random((g * n, 4)), dtype=torch.float32)
    q, t = match_per_group(cost, g)
    out = boxes_per_object(boxes, torch.as_tensor(q), torch.as_tensor(t), m, g)
    for k in range(g):
        rows, cols = linear_sum_assignment(cost[k * n:(k + 1) * n])
        for r, c in zip(rows, cols):
            assert torch.equal(out[c, k], boxes[k * n + r])
    assert not out.isnan().any()  # N >= M: every object matched once in every group
    # negative control: the same matching read with the groups' slots shifted by one group is another picture
    shifted = boxes_per_object(boxes.roll(n, 0), torch.as_tensor(q), torch.as_tensor(t), m, g)
    assert not torch.equal(shifted, out)


def test_group_agreement_on_a_constructed_example():
    a = [10.0, 10.0, 14.0, 14.0]
    b, b_shifted = [0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0]  # IoU 2 / 6 = 1/3
    matched = torch.tensor([[a, a, a], [b, b, b_shifted]])
    gt = torch.tensor([a, b])
    r = group_agreement(matched, gt)
    # same object: 3 pairs of A at IoU 1; B: one pair at 1, two at 1/3
    assert r.within_pairs == 6 and r.within == pytest.approx((3 + 1 + 2 / 3) / 6)
    assert r.between_pairs == 9 and r.between == 0.0  # A and B never overlap
    assert r.gt_boxes == 6 and r.gt == pytest.approx((5 + 1 / 3) / 6)
    # an unmatched box (NaN) is left out of every pair
    holes = matched.clone()
    holes[1, 2] = math.nan
    h = group_agreement(holes, gt)
    assert (h.within_pairs, h.between_pairs, h.gt_boxes) == (4, 6, 5) and h.within == 1.0
    # one group: no pair of the same object, so no within-object number; pooling adds sums and counts
    one = group_agreement(matched[:, :1], gt)
    assert one.within_pairs == 0 and math.isnan(one.within) and one.as_dict()["within_object_iou"] is None
    assert one.between_pairs == 1 and one.gt == 1.0
    pooled = r + h
    assert pooled.within_pairs == 10 and pooled.within == pytest.approx((r.within_sum + h.within_sum) / 10)
    assert group_agreement(torch.full((2, 3, 4), math.nan), gt) == GroupAgreement()


# ---------------------------------------------------------------------------------------------
# a tiny trained run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 1-epoch K=3 run on 8 val images of 64 px, in the run-directory layout of a study
    ``{runs}/tiny/k3/seed0`` (the gather test reads it there)."""
    from groupdetr.engine.trainer import train
    from groupdetr.synth.writer import generate

    base = tmp_path_factory.mktemp("vis")
    root = base / "synth"
    generate(load_config("cpu_small", ["data.synth.num_train=8", "data.synth.num_val=8", "data.image_size=64"]).data,
             root)
    cfg = load_config("cpu_small", TINY + ["model.num_classes=9", "model.num_groups=3", f"data.root={root}",
                                           "data.image_size=64", "optim.epochs=1", "optim.batch_size=4"])
    run = base / "runs" / "tiny" / "k3" / "seed0"
    train(cfg, run)
    return run


def test_cli_draws_detections_and_the_query_augmentation_figure(tiny_run, tmp_path, capsys):
    out = tmp_path / "det"
    assert cli_main(["visualize", str(tiny_run), "--images", "3", "1", "--score-threshold", "0", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["detections_1.png", "detections_3.png"]
    assert all(p.read_bytes()[:8] == PNG for p in out.iterdir())

    out = tmp_path / "qa"
    assert cli_main(["visualize", str(tiny_run), "--groups", "all", "--num", "2", "--agreement-images", "all",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 groups, 8 images: mean IoU of matched boxes of the same object" in printed
    names = sorted(p.name for p in out.iterdir())
    assert names == ["query_augmentation.json", "query_augmentation_1.png", "query_augmentation_2.png"]
    summary = json.loads((out / "query_augmentation.json").read_text())
    assert summary["groups"] == [0, 1, 2] and summary["images"] == [1, 2] and len(summary["agreement_images"]) == 8
    assert summary["summary"] in printed and summary["assignment"] == "group"
    # N = 7 queries per group: each group matches min(M, 7) objects, so an image with fewer than 21 matched
    # boxes has M < 7, every object matched once in each of the 3 groups: 3 same-object pairs per object
    checked = 0
    for image_id, a in summary["per_image"].items():
        if a["matched_boxes"] < 21:
            assert a["within_object_pairs"] == a["matched_boxes"], image_id
            checked += 1
    assert checked
    pooled = summary["pooled"]
    assert pooled["within_object_pairs"] == sum(a["within_object_pairs"] for a in summary["per_image"].values())
    assert 0 <= pooled["between_objects_iou"] <= 1 and 0 <= pooled["within_object_iou"] <= 1

    # a subset of the groups; the group dimension follows it
    one = tmp_path / "one"
    assert cli_main(["visualize", str(tiny_run), "--groups", "2", "--images", "4", "--out", str(one)]) == 0
    only = json.loads((one / "query_augmentation.json").read_text())
    assert only["groups"] == [2] and only["pooled"]["within_object_pairs"] == 0
    assert only["pooled"]["within_object_iou"] is None


@pytest.mark.parametrize("args, message", [
    (["--images", "999"], "image id 999 is not in the val split (its ids run from 1 to 8, 8 images)"),
    (["--groups", "3"], "group 3 does not exist: the run has num_groups=3"),
    (["--groups", "0", "0"], "groups repeat: [0, 0]"),
    (["--groups", "x"], "--groups takes group indices or 'all', got x"),
    (["--score-threshold", "2"], "--score-threshold must be in [0, 1], got 2.0"),
    (["--num", "0"], "--num must be >= 1, got 0"),
    (["--groups", "all", "--agreement-images", "some"], "--agreement-images takes a count or 'all', got some"),
])
def test_cli_refusals_are_one_line_and_draw_nothing(tiny_run, tmp_path, capsys, args, message):
    out = tmp_path / "pics"
    assert cli_main(["visualize", str(tiny_run), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_out_that_is_a_file_and_a_naive_one_to_many_run_are_refused(tiny_run, tmp_path, capsys):
    from groupdetr.errors import UsageError
    from groupdetr.visualization.run import _Viewer

    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert cli_main(["visualize", str(tiny_run), "--out", str(taken)]) == 2
    assert "is a file; name a folder" in capsys.readouterr().err and taken.read_text() == "mine"
    viewer = _Viewer.__new__(_Viewer)  # the check reads the config only
    viewer.cfg = load_config("cpu_small", ["matcher.assignment=naive_one_to_many"])
    with pytest.raises(UsageError, match="needs one matched query per group and object .* this run's is naive"):
        viewer.check_groups(None)


# ---------------------------------------------------------------------------------------------
# the study figure


def _tiny_study(tmp_path, figure: str):
    from groupdetr.studies import load_studies

    path = tmp_path / "studies.yaml"
    path.write_text("tiny:\n  seeds: [0]\n  variants:\n    k3: {overrides: {model.num_groups: 3}}\n"
                    f"  figures:\n    ap_vs_epoch: {{}}\n{figure}")
    return load_studies(path)["tiny"]


def test_gather_draws_the_query_augmentation_figure_from_the_runs_checkpoint(tiny_run, tmp_path):
    from groupdetr.reporting import study as S

    runs_root = tiny_run.parents[2]
    study = _tiny_study(tmp_path, "    query_augmentation: {variant: k3, seed: 0, images: [2, 5], agreement_images: 4}\n")
    out = tmp_path / "gathered"
    paths = S.gather(study, runs_root, out)
    assert (out / "query_augmentation.png").read_bytes()[:8] == PNG and out / "query_augmentation.png" in paths
    # what the gather drew is the figure of the library call, pixel for pixel; the README says what it shows
    from groupdetr.reporting.figures import CAPTIONS, FIGURES, _png

    assert f"`query_augmentation.png`: {CAPTIONS['query_augmentation']}" in (out / "README.md").read_text()

    runs = S.collect(study, runs_root)
    again = FIGURES["query_augmentation"](study.figures["query_augmentation"], runs, None)
    assert _png(again) == (out / "query_augmentation.png").read_bytes()
    # a run that is not gathered, or whose checkpoint is gone, is a reason in the README, not a failure
    assert FIGURES["query_augmentation"]({"variant": "k3", "seed": 7}, runs, None) == "variant k3 seed 7 not gathered"
    moved = runs.assign(run_dir=str(tmp_path / "nowhere"))
    assert FIGURES["query_augmentation"]({"variant": "k3"}, moved, None) == f"{tmp_path / 'nowhere' / 'checkpoint.pth'} missing"


@pytest.mark.parametrize("figure, message", [
    ("    query_augmentation: {seed: 0}\n", "figures.query_augmentation: needs a variant"),
    ("    query_augmentation: {variant: k3, seed: 4}\n", "seed must be one of the study's seeds [0], got 4"),
    ("    query_augmentation: {variant: k3, images: [a]}\n", "images must be a list of val image ids"),
    ("    query_augmentation: {variant: k3, agreement_images: 0}\n", "agreement_images must be a count >= 1 or 'all'"),
    ("    query_augmentation: {variant: k3, metric: bbox/AP}\n", "keys are agreement_images, images, seed, variant"),
    ("    query_augmentation: {variant: k9}\n", "figures.query_augmentation: unknown variant 'k9'"),
])
def test_a_bad_query_augmentation_entry_is_one_line(tmp_path, figure, message):
    from groupdetr.studies import StudyError

    with pytest.raises(StudyError) as e:
        _tiny_study(tmp_path, figure)
    assert message in str(e.value)


def test_gathering_without_a_checkpoint_figure_stays_light(tmp_path):
    """The K study asks for the query-augmentation figure; with runs that hold no checkpoint (the fake runs of
    the reporting tests) the gather says why it is not drawn and imports neither torch nor pycocotools."""
    from study_fixtures import STUDIES, k_ap, make_study_runs, studies

    runs, out = tmp_path / "runs", tmp_path / "out"
    make_study_runs(runs, studies()["ablation_K"], [0], ap_of=k_ap, variants=["K1", "K11"])
    code = (f"import sys; from groupdetr.studies import load_studies; from groupdetr.reporting.study import gather; "
            f"gather(load_studies({str(STUDIES)!r})['ablation_K'], {str(runs)!r}, {str(out)!r}, seeds=[0], "
            f"variants=['K1', 'K11']); "
            "print(','.join(m for m in ('torch', 'torchvision', 'pycocotools') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True)
    assert result.stdout.strip() == ""
    readme = (out / "README.md").read_text()
    assert f"figure query_augmentation not drawn: {runs / 'ablation_K' / 'K11' / 'seed0' / 'checkpoint.pth'} missing" in readme
