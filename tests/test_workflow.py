"""The Snakemake workflow: lint, dry runs of the default targets, a tiny end-to-end run, refusals."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(cwd), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(stdout: str) -> dict[str, int]:
    """The "Job stats" table of a dry run as {rule: count}."""
    table = stdout.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {p[0]: int(p[1]) for p in (line.split() for line in table.splitlines()) if len(p) == 2 and p[1].isdigit()}


def tiny_config(tmp: Path) -> list[str]:
    return ["--configfile", str(REPO / "workflows/config/tiny.yaml"), "--config", f"runs={tmp}/runs",
            f"out={tmp}/results", f"logs={tmp}/logs", f"data_root={tmp}/synth"]


def test_lint_is_clean(tmp_path):
    proc = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("target", ["results/ablation_K", "results/ablation_assignment", "results/ablation_heads",
                                    "results/ablation_dn", None])
def test_dry_run_of_the_default_targets(tmp_path, target):
    """The user's command as written (default config, cpu preset) plans every run and evaluation."""
    proc = snakemake("-n", "--cores", "all", *([target] if target else []), cwd=tmp_path)
    jobs = job_counts(proc.stdout)
    assert jobs["synth"] == 1 and jobs["pretrain"] == 1  # one pretrained backbone for every run
    if target == "results/ablation_K":
        # K = 1..11 x 3 seeds; every group of K=11 alone, all groups of a run in one job
        assert jobs["train"] == 33 and jobs["evaluate"] == 3
        assert "eval results/runs/ablation_K/K11/seed0 --groups 0 1 2 3 4 5 6 7 8 9 10 --no-detections " in proc.stdout
    if target == "results/ablation_assignment":
        # Table 7 rows (a)-(d) x 5 seeds ((a), (d): ablation_K's K1, K11 runs); o2m with NMS
        assert jobs["train"] == 20 and jobs["evaluate"] == 5
        assert "results/runs/ablation_K/K1/seed4/metrics.json" in proc.stdout
        assert "results/runs/ablation_assignment/one_to_one" not in proc.stdout
    if target == "results/ablation_heads":
        assert jobs["train"] == 18 and "evaluate" not in jobs  # 3 heads x K = 1, 11 x 3 seeds (2D: ablation_K's)
    if target == "results/ablation_dn":
        assert jobs["train"] == 12 and "evaluate" not in jobs  # DAB-DETR +- DN +- groups x 3 seeds
    if target is None:  # every study and notebook
        # every reused run trained once: K1, K11 seeds 0-2 serve three studies, seeds 3-4 two
        assert jobs["train"] == 33 + (4 + 10) + 12 + 12 and jobs["evaluate"] == 3 + 5
        # detectors, table1, table2_fig7 too (their studies are no default ones: the notebooks say "not gathered")
        assert jobs["gather"] == 4 and jobs["notebook"] == 8
        # the measured benchmark's folder: keyed by what the images depend on, not moved by a new data.* key
        assert "data/synth/synth-64px-2dc81e7b63" in proc.stdout


def test_tiny_config_keeps_its_job_set(tmp_path):
    """tiny.yaml's default target holds every study, narrowed."""
    jobs = job_counts(snakemake("-n", "--cores", "2", *tiny_config(tmp_path), cwd=tmp_path / "wd").stdout)
    # K1, K11 (= Table 7's Group DETR), naive o2m, seg K11, 3D K1, DAB+DN+groups at seed 0; every group of K11
    # (one job) and naive o2m + NMS; every notebook
    assert jobs == {"synth": 1, "pretrain": 1, "train": 6, "evaluate": 2, "gather": 4, "notebook": 8, "all": 1,
                    "total": 23}


def test_runs_started_from_runs_and_derived_schedules_are_dependencies(tmp_path):
    """Table 1's retrained runs take ablation_K's K = 1 run of their seed as input (trained once, there) and start
    from it; Table 2's longer baseline reads the schedule that one equal_time job derives from the finished K = 11
    and K = 1 runs. The whole DAG is known before anything runs."""
    proc = snakemake("-n", "-p", "--cores", "all", "results/ablation_enhancement", "results/ablation_training_time",
                     cwd=tmp_path)
    jobs = job_counts(proc.stdout)
    # K1 x 5 seeds and K11 x 3 (ablation_K's), Table 1 rows (a)-(c) x 5, the longer baseline x 3
    assert jobs["train"] == 5 + 3 + 15 + 3 and jobs["equal_time"] == 1 and jobs["gather"] == 2
    blocks = proc.stdout.split("\n\n")
    job = next(b for b in blocks if "wildcards: study=ablation_enhancement, variant=enc_fixed_dec_K11, seed=3" in b)
    inputs = next(line for line in job.splitlines() if line.strip().startswith("input:"))
    assert "results/runs/ablation_K/K1/seed3/metrics.json" in inputs and "seed0" not in inputs
    assert "--set model.init_from.run=results/runs/ablation_K/K1/seed3 " in job
    assert "--set 'model.init_from.parts=[backbone, input_proj, encoder]'" in job
    assert "--set 'train.freeze=[backbone, input_proj, encoder]'" in job
    assert "results/runs/ablation_enhancement/start" not in proc.stdout  # the start is ablation_K's run
    (derive,) = [b for b in blocks if "rule equal_time:" in b]
    to = " ".join(f"results/runs/ablation_K/K11/seed{s}" for s in range(3))
    measured = " ".join(f"results/runs/ablation_K/K1/seed{s}" for s in range(3))
    assert f"equal-time --to {to} --measured-on {measured} --out " in derive
    schedule = "results/runs/ablation_training_time/baseline_equal_time/schedule.yaml"
    longer = next(b for b in blocks if "variant=baseline_equal_time, seed=1" in b)
    assert schedule in next(line for line in longer.splitlines() if line.strip().startswith("input:"))
    assert f"--set-from {schedule} --out results/runs/ablation_training_time/baseline_equal_time/seed1" in longer


def test_the_demo_plans_the_whole_pipeline_small(tmp_path):
    """workflows/config/demo.yaml: render, pretrain, K = 1 and K = 11 at one seed, every group of K = 11, gather,
    the K notebook as notebook and HTML, all under its own folders."""
    proc = snakemake("-n", "-p", "--cores", "2", "--configfile", str(REPO / "workflows/config/demo.yaml"), cwd=tmp_path)
    assert job_counts(proc.stdout) == {"synth": 1, "pretrain": 1, "train": 2, "evaluate": 1, "gather": 1,
                                       "notebook": 1, "all": 1, "total": 8}
    assert "-c cpu_demo" in proc.stdout and "results/demo/runs/ablation_K/K11/seed0" in proc.stdout
    assert "results/demo/notebooks/ablation_K.html" in proc.stdout and "results/runs/" not in proc.stdout


def test_paper_preset_is_one_switch(tmp_path):
    coco = tmp_path / "coco"
    proc = snakemake("-n", "-p", "--cores", "8", "results/ablation_K", "--config", "preset=paper", f"coco_root={coco}",
                     cwd=tmp_path)
    assert "-c paper_cdetr_r50_12ep" in proc.stdout and f"data.root={coco}" in proc.stdout
    assert "torch.distributed.run --standalone --nproc-per-node 8" in proc.stdout
    assert "rule synth" not in proc.stdout  # COCO is read in place
    assert "rule pretrain" not in proc.stdout  # ImageNet weights from the user's file, no pretext pretraining


@pytest.mark.parametrize("config, message", [
    (["preset=paper"], "pass --config coco_root="),
    (["preset=nope"], "preset 'nope' is not defined"),
    (["variants={ablation_K: [K99]}"], "unknown variant(s) K99"),
    (["overrides=[model.num_grups=3]"], "did you mean"),
    (["default_studies=[ablation_K, nope]"], "config default_studies: unknown study 'nope'"),
    (["notebooks=[table7, nope]"], "config notebooks: unknown notebook 'nope'"),
])
def test_bad_settings_fail_with_one_line(tmp_path, config, message):
    proc = snakemake("-n", "--cores", "1", "--config", *config, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]


def test_a_variant_the_preset_cannot_resolve_stops_only_its_study(tmp_path):
    """Variants are resolved against the preset when a target needs them: one unresolvable study (a misspelt
    key here; 3D boxes on the COCO preset in practice) leaves the other studies' targets runnable."""
    studies = tmp_path / "studies.yaml"
    studies.write_text("good:\n  variants:\n    a: {overrides: {model.num_groups: 2}}\n"
                       "bad:\n  variants:\n    b: {overrides: {model.num_grups: 2}}\n")
    own = ["--config", f"studies={studies}", "default_studies=[good]"]  # another studies file names its own defaults
    ok = snakemake("-n", "--cores", "1", "results/good", *own, cwd=tmp_path)
    assert job_counts(ok.stdout)["train"] == 1
    proc = snakemake("-n", "--cores", "1", "results/bad", *own, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "study bad, variant b: unknown config key 'model.num_grups'" in proc.stderr, proc.stderr[-2000:]


def test_a_reuse_is_checked_against_the_presets_configs(tmp_path):
    """A variant reusing another study's runs trains nothing of its own when the configs resolve equal under
    the preset, and stops its study with one line naming the differing key when they do not."""
    studies = tmp_path / "studies.yaml"
    studies.write_text("own:\n  variants:\n    a: {overrides: {model.num_groups: 2}}\n"
                       "user:\n  variants:\n    same: {overrides: {model.num_groups: 2}, reuse: own/a}\n"
                       "    mine: {overrides: {model.num_groups: 3}}\n"
                       "bad:\n  variants:\n    b: {overrides: {model.num_groups: 4}, reuse: own/a}\n")
    own = ["--config", f"studies={studies}", "default_studies=[user]"]
    ok = snakemake("-n", "--cores", "1", "results/user", *own, cwd=tmp_path)
    assert job_counts(ok.stdout)["train"] == 2 and "--out results/runs/own/a/seed0" in ok.stdout
    proc = snakemake("-n", "--cores", "1", "results/bad", *own, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert ("study bad, variant b: reuse own/a: the configs differ at model.num_groups (4 here, 2 there)"
            in proc.stderr), proc.stderr[-2000:]


def test_tiny_workflow_end_to_end(tmp_path):
    """Render, train, evaluate (per group, with NMS), gather, notebooks; then nothing is redone."""
    shutil.copytree(REPO / "results/paper", tmp_path / "results/paper")
    snakemake("--cores", "2", *tiny_config(tmp_path), cwd=tmp_path / "wd")
    res = tmp_path / "results"
    for study, variants in [("ablation_K", {"K1", "K11"}), ("ablation_assignment", {"naive_one_to_many", "group_detr"})]:
        runs = pd.read_csv(res / study / "runs.csv")
        assert set(runs["variant"]) == variants
        for name in ["summary.csv", "table.md", "table.tex", "README.md"]:
            assert (res / study / name).stat().st_size > 0
    k = pd.read_csv(res / "ablation_K" / "runs.csv")
    assert {f"group{g}" for g in range(11)} <= set(k["evaluation"])
    for fig in ["ap_vs_k", "ap_vs_epoch", "per_group_ap", "instability", "query_augmentation"]:  # the last from K11's checkpoint
        assert (res / "ablation_K" / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    a = pd.read_csv(res / "ablation_assignment" / "runs.csv")
    assert "nms" in set(a["evaluation"])
    # the heads and DN + groups trained through the same rules; their own metrics were gathered
    heads = pd.read_csv(res / "ablation_heads" / "runs.csv")
    assert {"segm/AP", "3d/NDS", "3d/mAP"} <= set(heads["metric"])
    assert set(heads[heads["metric"] == "segm/AP"]["variant"]) == {"seg_K11"}
    dn = pd.read_csv(res / "ablation_dn" / "runs.csv")
    assert set(dn["variant"]) == {"dab_dn_group"} and set(dn["denoising"]) == {"per_group"}
    for study in ("ablation_heads", "ablation_dn"):
        assert (res / study / "comparisons.csv").stat().st_size > 0
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        assert (res / "notebooks" / nb.name).is_file()
        assert "<html" in (res / "notebooks" / nb.name).with_suffix(".html").read_text()[:2000].lower()
    # every job logged and benchmarked
    assert list((tmp_path / "logs" / "train").rglob("*.log")) and list((tmp_path / "logs" / "benchmarks").rglob("*.tsv"))

    before = (res / "ablation_K" / "runs.csv").stat().st_mtime_ns
    again = snakemake("--cores", "2", *tiny_config(tmp_path), cwd=tmp_path / "wd")
    assert "Nothing to be done" in again.stdout + again.stderr
    assert (res / "ablation_K" / "runs.csv").stat().st_mtime_ns == before

    # The render job rerun on a finished benchmark (Snakemake reruns it after a code change, deleting its
    # output first) finds the benchmark as it is and renders nothing; the re-made record retrains nothing.
    (marker,) = (tmp_path / "synth").glob("*.synth.json")
    marker.unlink()
    snakemake("--cores", "2", str(marker), *tiny_config(tmp_path), cwd=tmp_path / "wd")
    assert "already there; nothing rendered" in next((tmp_path / "logs" / "synth").glob("*.log")).read_text()
    fourth = snakemake("--cores", "2", *tiny_config(tmp_path), cwd=tmp_path / "wd")
    assert "Nothing to be done" in fourth.stdout + fourth.stderr
    assert (res / "ablation_K" / "runs.csv").stat().st_mtime_ns == before

    # Every run started from the one pretrained backbone, recorded in its manifest; the pretrain job rerun
    # (its copy deleted) finds the cache entry and pretrains nothing, and the re-made copy retrains nothing.
    (weights,) = (tmp_path / "synth" / "pretrained").glob("*.pth")
    manifests = [json.loads(m.read_text()) for m in (tmp_path / "runs").rglob("manifest.json")]
    assert len(manifests) == 6 and all(m["backbone_weights"]["path"] == str(weights) for m in manifests)
    assert {m["backbone_weights"]["pretrain"]["steps"] for m in manifests} == {2}
    weights.unlink()
    snakemake("--cores", "2", str(weights), *tiny_config(tmp_path), cwd=tmp_path / "wd")
    assert "found in the cache" in next((tmp_path / "logs" / "pretrain").glob("*.log")).read_text()
    fifth = snakemake("--cores", "2", *tiny_config(tmp_path), cwd=tmp_path / "wd")
    assert "Nothing to be done" in fifth.stdout + fifth.stderr


def test_conda_requirements_match_the_lock():
    """workflows/envs/requirements.txt (for --software-deployment-method conda) pins what uv.lock pins."""
    import re
    import tomllib

    lock = {p["name"]: p["version"] for p in tomllib.loads((REPO / "uv.lock").read_text())["package"] if "version" in p}
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;]+)", (REPO / "workflows/envs/requirements.txt").read_text(), re.M))
    assert {"torch", "torchvision", "snakemake", "pycocotools"} <= set(pins)
    wrong = {name: (v, lock.get(name.lower().replace("_", "-"), lock.get(name))) for name, v in pins.items()
             if lock.get(name.lower().replace("_", "-"), lock.get(name)) != v}
    assert not wrong, f"requirements.txt is out of date with uv.lock (re-export it): {wrong}"


def test_no_study_target_is_committed():
    """A committed results/<study> would make `snakemake results/<study>` do nothing on a fresh clone."""
    from groupdetr.studies import load_studies

    tracked = subprocess.run(["git", "ls-files", "results"], cwd=REPO, capture_output=True, text=True).stdout.split()
    studies = load_studies(REPO / "workflows/config/studies.yaml")
    assert not [f for f in tracked if f.split("/")[1] in studies], "gathered study folders must not be committed"
