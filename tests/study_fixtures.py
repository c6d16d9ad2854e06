"""Fake but contract-conform run directories of a study (docs/run-directory.md), for the gatherer and
notebook tests: no training, every file written with the schemas ``groupdetr train``/``eval`` use."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from groupdetr.config import config_hash, dump_yaml, load_config
from groupdetr.evaluation.coco import STAT_NAMES
from groupdetr.studies import Study, load_studies, run_dir

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "workflows" / "config" / "studies.yaml"

#: numeric, non-null fields of every log.jsonl row besides the stats (matching_instability is null in epoch 1).
LOG_SCALARS = ("lr", "lr_backbone", "loss", "loss_ce", "loss_bbox", "loss_giou", "iterations", "seconds",
               "eval_seconds", "peak_memory_mib")
EPOCHS = 3
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def default_ap(variant: str, seed: int) -> float:
    """A plausible final AP with a small seed effect."""
    return 0.30 + 0.004 * (seed % 3)


def stats(ap: float) -> dict[str, float]:
    """All twelve COCO stats (``bbox/AP`` ...) derived from ``ap``."""
    out = {}
    for i, name in enumerate(STAT_NAMES):
        value = {"AP": ap, "AP50": ap + 0.2, "AP75": ap + 0.02, "APs": ap - 0.15, "APm": ap + 0.01,
                 "APl": ap + 0.1}.get(name, min(1.0, ap + 0.05 + 0.01 * i))
        out[f"bbox/{name}"] = round(min(max(value, 0.0), 1.0), 6)
    return out


#: the fixtures' 3D errors (fixed): ATE in metres, ASE, AOE in radians; NDS follows from 3d/mAP (det3d.py).
ERRORS_3D = {"ATE": 0.5, "ASE": 0.3, "AOE": 0.4}


def segm_ap(ap: float) -> float:
    """The fixtures' mask AP of a run whose box AP is ``ap``."""
    return round(ap - 0.02, 6)


def map_3d(ap: float) -> float:
    """The fixtures' 3D mAP of a run whose box AP is ``ap``."""
    return round(ap - 0.05, 6)


def nds(ap: float) -> float:
    """NDS of :func:`map_3d` with :data:`ERRORS_3D`, as groupdetr.evaluation.det3d defines it."""
    return (5 * map_3d(ap) + sum(1 - min(1.0, e) for e in ERRORS_3D.values())) / 8


def task_stats(task: str, ap: float) -> dict[str, float]:
    """The evaluation stats a run of ``model.task`` writes: ``bbox/*`` for every task, plus ``segm/*``
    (instance segmentation) or ``3d/*`` (3D detection), derived from the box AP ``ap``."""
    out = stats(ap)
    if task == "instance_segmentation":
        out.update({k.replace("bbox/", "segm/"): v for k, v in stats(segm_ap(ap)).items()})
    elif task == "detection_3d":
        m = map_3d(ap)
        aps = {"AP@0.5": m - 0.1, "AP@1.0": m - 0.03, "AP@2.0": m + 0.05, "AP@4.0": m + 0.08}
        out.update({"3d/mAP": m, **{f"3d/{k}": round(min(max(v, 0.0), 1.0), 6) for k, v in aps.items()},
                    "3d/NDS": nds(ap), **{f"3d/{k}": v for k, v in ERRORS_3D.items()}})
    return out


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def make_run(run: Path, overrides: Sequence[str], seed: int, ap: float, evals: dict[str, tuple[float, list[str],
             int | None]] | None = None, epochs: int = EPOCHS, instability: float = 0.2) -> None:
    """One finished run directory with ``epochs`` logged epochs ending at ``ap``; ``evals`` maps an
    eval file stem to (AP, overrides, group). The stats are those of the config's ``model.task``
    (:func:`task_stats`)."""
    cfg = load_config("cpu_small", [*overrides, f"optim.epochs={epochs}", f"seed={seed}"])
    task = cfg.model.task
    h = config_hash(cfg)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    _write_json(run / "manifest.json", {
        "config_hash": h, "command": ["groupdetr", "train", "--out", str(run)], "seed": seed, "git_commit": COMMIT,
        "git_dirty": False, "versions": {"python": "3.11.9", "torch": "2.13.0", "torchvision": "0.28.0",
                                         "numpy": "2.4.6", "groupdetr": "0.1.0"},
        "device": "cpu", "world_size": 1, "started": "2025-01-01T00:00:00+00:00", "resumed": []})
    lines = []
    for e in range(1, epochs + 1):
        record = {"epoch": e, "lr": 2e-4, "lr_backbone": 2e-4, "loss": 3.0 / e, "loss_ce": 1.0 / e,
                  "loss_bbox": 0.5 / e, "loss_giou": 0.7 / e, "iterations": 10, "seconds": 1.5, "eval_seconds": 0.5,
                  "peak_memory_mib": 100.0, "matching_instability": None if e == 1 else instability / e,
                  **task_stats(task, ap * e / epochs)}
        lines.append(json.dumps(record, sort_keys=True))
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    for name, (eval_ap, ev_overrides, group) in (evals or {}).items():
        _write_json(run / "eval" / f"{name}.json", {
            "checkpoint": str(run / "checkpoint.pth"), "epoch": epochs,
            "eval_group": cfg.model.eval_group if group is None else group, "overrides": list(ev_overrides),
            **task_stats(task, eval_ap)})
    _write_json(run / "metrics.json", {"epoch": epochs, "config_hash": h, **task_stats(task, ap)})


def make_study_runs(runs_root: str | Path, study: Study, seeds: Sequence[int] | None = None,
                    ap_of: Callable[[str, int], float] = default_ap,
                    eval_ap_of: Callable[[str, int, str], float] | None = None,
                    variants: Sequence[str] | None = None, epochs: int = EPOCHS) -> list[Path]:
    """Write ``{runs_root}/{study}/{variant}/seed{seed}`` for every variant and seed, with the extra
    evaluations of ``study.evaluations_for``. ``ap_of(variant, seed)`` is the final AP;
    ``eval_ap_of(variant, seed, eval_name)`` that of an evaluation (default: the final AP, minus
    0.002 g for group g, plus 0.05 for other evaluations). Returns the run directories."""
    seeds = list(study.seeds if seeds is None else seeds)
    out = []
    for name in variants or study.variants:
        v = study.variants[name]
        num_groups = load_config("cpu_small", list(v.overrides)).model.num_groups
        for seed in seeds:
            ap = ap_of(name, seed)
            evals = {}
            for ev in study.evaluations_for(name, num_groups):
                if eval_ap_of is not None:
                    eval_ap = eval_ap_of(name, seed, ev.name)
                else:
                    eval_ap = ap - 0.002 * ev.group if ev.group is not None else ap + 0.05
                evals[ev.name] = (eval_ap, list(ev.overrides), ev.group)
            run = run_dir(runs_root, study.name, name, seed)
            make_run(run, v.overrides, seed, ap, evals, epochs=epochs)
            out.append(run)
    return out


def studies() -> dict[str, Study]:
    """The project's studies, every ``reuse`` dropped: each study's fake runs then carry that study's own
    synthetic truths (Table 7's, the heads') under its own directory. Reuse is tested on its own."""
    out = {}
    for name, study in load_studies(STUDIES).items():
        variants = {v: dataclasses.replace(var, reuse=None) for v, var in study.variants.items()}
        out[name] = dataclasses.replace(study, variants=variants)
    return out


# Synthetic truths with the paper's qualitative shape (Table 7, Fig. 9), small seed noise.
TABLE7_AP = {"one_to_one": 0.30, "naive_one_to_many": 0.08, "group_shared_sa": 0.32, "group_detr": 0.35}


def table7_ap(variant: str, seed: int) -> float:
    return TABLE7_AP[variant] + 0.003 * (seed % 3) - 0.002 * (seed % 2)


def k_ap(variant: str, seed: int) -> float:
    """AP rising with K and flat from K = 6 on (K = int(variant[1:]))."""
    k = int(variant[1:])
    return 0.30 + 0.01 * min(k, 6) + 0.002 * (seed % 3) - 0.001 * (seed % 2)


# Tables 5-6 on the embedded benchmark: K = 11 above K = 1 for every head, by a head-specific amount;
# seed noise differs between K = 1 and K = 11 (unequal variances: a non-trivial Welch dof).
HEADS_AP = {"det2d": 0.30, "seg": 0.28, "det3d": 0.26}
HEADS_GAIN = {"det2d": 0.05, "seg": 0.012, "det3d": 0.03}


def heads_ap(variant: str, seed: int) -> float:
    head, k = variant.rsplit("_K", 1)
    noise = (0.004 if k == "11" else 0.002) * (seed % 3) - 0.001 * (seed % 2)
    return HEADS_AP[head] + (HEADS_GAIN[head] if k == "11" else 0.0) + noise


# Fig. 8 with the paper's deltas (Table 3, DAB-DETR / DN-DETR R50 12 ep: 35.2, 38.6, 39.1, 40.6), as fractions.
DN_AP = {"dab": 0.352, "dab_dn": 0.386, "dab_group": 0.391, "dab_dn_group": 0.406}


# Table 3 (R50, 12 ep) for every detector of ablation_detectors, K = 1 and K = 11, as fractions.
DETECTORS_AP = {"cdetr_K1": 0.326, "cdetr_K11": 0.376, "dab_K1": 0.352, "dab_K11": 0.391, "dn_K1": 0.386,
                "dn_K11": 0.406, "dab_deformable_K1": 0.442, "dab_deformable_K11": 0.457, "dino_K1": 0.494,
                "dino_K11": 0.501}


def detectors_ap(variant: str, seed: int) -> float:
    return DETECTORS_AP[variant] + 0.002 * (seed % 3) - 0.001 * (seed % 2)


def dn_ap(variant: str, seed: int) -> float:
    return DN_AP[variant] + 0.003 * (seed % 3) - 0.002 * (seed % 2) * (1 + (variant == "dab_dn_group"))


# Table 1 with the paper's shape (C-DETR, encoder from a trained model: (a) 40.6, (b) 41.5, (c) 42.9), as fractions;
# the starting model a little below (a).
TABLE1_AP = {"start": 0.400, "enc_fixed_dec_K1": 0.406, "enc_fixed_dec_K11": 0.415, "enc_dec_K11": 0.429}


def table1_ap(variant: str, seed: int) -> float:
    return TABLE1_AP[variant] + 0.002 * (seed % 3) - 0.001 * (seed % 2)


# Table 2 (C-DETR 12 ep): baseline 32.6, baseline trained as long 34.4, w/ Group 37.6.
TABLE2_AP = {"baseline_1x": 0.326, "baseline_equal_time": 0.344, "group_1x": 0.376}
#: the fixtures' training seconds per epoch: K = 1 4.6 / 12 h, K = 11 5.6 / 12 h (the paper's 8x A100 hours)
TABLE2_SECONDS = {"baseline_1x": 4.6 / 12 * 3600, "baseline_equal_time": 4.6 / 12 * 3600, "group_1x": 5.6 / 12 * 3600}


def table2_ap(variant: str, seed: int) -> float:
    return TABLE2_AP[variant] + 0.002 * (seed % 3) - 0.001 * (seed % 2)


def set_costs(run: Path, seconds: float, peak_mib: float) -> None:
    """Rewrite a fake run's logged training seconds and peak memory (every epoch the same)."""
    log = run / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({**r, "seconds": seconds, "peak_memory_mib": peak_mib}, sort_keys=True) + "\n"
                           for r in rows))


def make_cost_runs(runs_root: str | Path, kstudy: Study, training_time: Study, seeds: Sequence[int]) -> None:
    """Fake runs of the K study whose seconds per epoch and peak memory grow with K (1 + 0.05 K s per 10
    iterations, 100 + 10 K MiB, a little seed noise), and of the training-time study with Table 2's hours: the
    baseline at 12 epochs, the longer one at 15, Group DETR at 12."""
    for run in make_study_runs(runs_root, kstudy, seeds, ap_of=k_ap):
        k, seed = int(run.parent.name[1:]), int(run.name[4:])
        set_costs(run, 1.0 + 0.05 * k + 0.01 * seed, 100.0 + 10 * k + seed)
    for variant, epochs in (("baseline_1x", 12), ("baseline_equal_time", 15), ("group_1x", 12)):
        for run in make_study_runs(runs_root, training_time, seeds, ap_of=table2_ap, variants=[variant],
                                   epochs=epochs):
            set_costs(run, TABLE2_SECONDS[variant] * (1 + 0.001 * int(run.name[4:])), 500.0)
