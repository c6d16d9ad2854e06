"""The ``groupdetr`` console command.

Subcommands:
    groupdetr config [RECIPE] [--set key=value ...]   print the resolved config (YAML)
    groupdetr recipes                                 list the shipped recipes
    groupdetr train --config R [--set k=v] [--set-from F] --out DIR  train (resumes; finished runs are kept)
    groupdetr eval RUN_OR_CKPT [--group g | --groups all] evaluate, any group alone (all: one job, one pass)
    groupdetr visualize RUN_OR_CKPT --out DIR [...]   predictions on val images; --groups all: query augmentation
    groupdetr pretrain [--config R] [--out FILE]      box-only backbone pretraining (cached)
    groupdetr chance [--config R]                     AP of the same boxes on every image (baseline)
    groupdetr derive SRC OUT [--train N]              one-class box-only subset (a user's dataset, simulated)
    groupdetr synth [--config R] [--out DIR]          render the embedded benchmark
    groupdetr bench [...]                             speed/memory benchmark of the group mechanics
    groupdetr gather --study S --runs R --out DIR     one study's runs -> tables, figures (results/S)
    groupdetr equal-time --to RUN.. --measured-on RUN.. --out F   epochs of equal training time (Table 2)
    groupdetr notebook NB.ipynb [--out X --results D] execute a notebook headless (kept, also as HTML)
    groupdetr import-checkpoint SRC --out CKPT        the authors' Conditional/Group DETR checkpoint -> ours
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from groupdetr.config import ConfigError, config_hash, dump_yaml, list_recipes, load_config
from groupdetr.errors import (DatasetError, GatherError, InitFromError, NonFiniteLoss, NotebookError, NotebookFailed,
                              RunError, StudyError, UsageError, WeightsError)

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser, default: str | None = "cpu_small") -> None:
    p.add_argument("--config", "-c", default=default, help="recipe name (see `groupdetr recipes`) or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, e.g. --set model.num_groups=3")


def _add_set_from(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set-from", dest="set_from", action="append", default=[], metavar="FILE",
                   help="dotted overrides from a file's 'overrides' mapping (e.g. the equal-training-time schedule "
                        "`groupdetr equal-time` writes), applied after --set; repeatable")


def _overrides(args) -> list[str]:
    """``--set`` overrides, then those of every ``--set-from`` file."""
    from groupdetr.config import read_override_file

    return list(args.overrides) + [o for path in getattr(args, "set_from", []) for o in read_override_file(path)]


def _cmd_config(args) -> int:
    cfg = load_config(args.config, _overrides(args))
    sys.stdout.write(f"# config hash {config_hash(cfg)}\n" + dump_yaml(cfg))
    return 0


def _cmd_recipes(args) -> int:
    for name in list_recipes():
        print(name)
    return 0


def _cmd_bench(args) -> int:
    from groupdetr.bench import run_bench_cli
    from groupdetr.bench_args import BenchSettings

    return run_bench_cli(BenchSettings.from_args(args))


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _cmd_train(args) -> int:
    from groupdetr.engine.trainer import train

    _setup_logging()
    cfg = load_config(args.config, _overrides(args))
    metrics = train(cfg, args.out, command=sys.argv, restart=args.restart, tensorboard=args.tensorboard)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one copy of the result
        print(json.dumps(metrics, indent=1, sort_keys=True))
    return 0


def _cmd_pretrain(args) -> int:
    from pathlib import Path

    from groupdetr.pretrain.run import export_copy, pretrain, summary_line

    _setup_logging()
    cfg = load_config(args.config, args.overrides)
    path, record, built = pretrain(cfg, force=args.force)
    if args.out:
        path = export_copy(path, Path(args.out))
    print(summary_line(path, record, built))
    return 0


def _cmd_chance(args) -> int:
    from groupdetr.data.coco import data_split_paths
    from groupdetr.evaluation.chance import fixed_boxes_stats

    cfg = load_config(args.config, args.overrides)
    _, train_ann = data_split_paths(cfg.data, "train")
    _, val_ann = data_split_paths(cfg.data, "val")
    stats = fixed_boxes_stats(train_ann, val_ann, args.boxes or cfg.postprocess.num_select, args.seed)
    print(json.dumps(stats, indent=1, sort_keys=True))
    return 0


def _cmd_derive(args) -> int:
    from groupdetr.data.derive import derive_dataset, derived_overrides

    summary = derive_dataset(args.src, args.out, dataset=args.dataset, num_train=args.train, num_val=args.val,
                             one_class=args.one_class, box_only=args.box_only, seed=args.seed, force=args.force)
    print(f"{args.out}: " + ", ".join(f"{s}: {c['images']} images, {c['annotations']} objects" for s, c in summary.items()))
    print("read it with: " + " ".join(f"--set {o}" for o in derived_overrides(args.out)))
    return 0


def _cmd_eval(args) -> int:
    from groupdetr.engine.evaluate_run import evaluate_groups_run, evaluate_run

    _setup_logging()
    if args.groups is None:
        result = evaluate_run(args.target, group=args.group, overrides=args.overrides, out=args.out,
                              detections=args.detections)
    else:
        if args.groups == ["all"]:
            groups = None
        else:
            try:
                groups = [int(g) for g in args.groups]
            except ValueError:
                raise ConfigError(f"--groups takes group indices or 'all', got {' '.join(args.groups)}") from None
        result = evaluate_groups_run(args.target, groups=groups, overrides=args.overrides, out=args.out,
                                     detections=args.detections)
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


def _cmd_import_checkpoint(args) -> int:
    from groupdetr.interop.conditional_detr import import_checkpoint

    summary = import_checkpoint(args.src, args.out, recipe=args.config, overrides=args.overrides,
                                num_groups=args.groups)
    print(json.dumps(summary, indent=1))
    return 0


def _group_list(values: list[str] | None, flag: str) -> list[int] | str | None:
    """``--groups`` as given: None, ``"all"`` or group indices (one ConfigError line otherwise)."""
    if values is None or values == ["all"]:
        return None if values is None else "all"
    try:
        return [int(g) for g in values]
    except ValueError:
        raise ConfigError(f"{flag} takes group indices or 'all', got {' '.join(values)}") from None


def _cmd_visualize(args) -> int:
    from groupdetr.visualization.run import visualize_run

    over = args.agreement_images
    if over is not None and over != "all":
        try:
            over = int(over)
        except ValueError:
            raise ConfigError(f"--agreement-images takes a count or 'all', got {over}") from None
    result = visualize_run(args.target, args.out, images=args.images, num=args.num,
                           score_threshold=args.score_threshold, group=args.group,
                           groups=_group_list(args.groups, "--groups"), overrides=args.overrides, over=over)
    if "summary" in result:
        print(result["summary"])
    for path in result["files"]:
        print(path)
    return 0


def _cmd_equal_time(args) -> int:
    from groupdetr.equal_time import equal_time_schedule, write_schedule

    schedule = equal_time_schedule(args.to, args.measured_on)
    write_schedule(schedule, args.out)
    d, o = schedule["derived"], schedule["overrides"]
    print(f"{args.out}: optim.epochs={o['optim.epochs']} optim.lr_drop={o['optim.lr_drop']} (to match "
          f"{d['T_to']:.1f} s of training at {d['t_measured_per_epoch']:.1f} s per epoch: {d['epochs_to_match']:.2f} "
          f"epochs; {d['E']} at 1x)")
    return 0


def _cmd_paper_tables(args) -> int:
    from groupdetr.reporting.paper import load_reported, write_paper_tables

    for path in write_paper_tables(load_reported(args.reported), args.out):
        print(path)
    return 0


def _cmd_gather(args) -> int:
    from groupdetr.reporting.study import gather
    from groupdetr.studies import StudyError, load_studies

    studies = load_studies(args.studies)
    if args.study not in studies:
        raise StudyError(f"{args.studies}: no study {args.study!r} (known: {', '.join(studies)})")
    out = args.out or f"results/{args.study}"
    command = ["groupdetr", "gather", "--studies", str(args.studies), "--study", args.study, "--runs", str(args.runs),
               "--out", str(out)]
    command += ["--seeds", *map(str, args.seeds)] if args.seeds else []
    command += ["--variants", *args.variants] if args.variants else []
    for path in gather(studies[args.study], args.runs, out, seeds=args.seeds, variants=args.variants, command=command):
        print(path)
    return 0


def _cmd_notebook(args) -> int:
    from groupdetr.reporting.notebooks import default_out, execute_notebook, html_path

    out = None if args.out == "-" else args.out or default_out(args.notebook, args.results)
    execute_notebook(args.notebook, out=out, results_root=args.results, timeout=args.timeout,
                     html=out is not None and args.html)
    print(f"{out}" + (f" and {html_path(out)}" if out is not None and args.html else "") if out is not None
          else f"{args.notebook}: ran without error")
    return 0


def _cmd_synth(args) -> int:
    from groupdetr.synth.writer import SynthError, generate

    cfg = load_config(args.config, args.overrides)
    out = args.out or cfg.data.root
    if out is None:
        raise ConfigError("no output folder: pass --out or set data.root")
    try:
        m = generate(cfg.data, out, workers=args.workers or os.cpu_count() or 1, force=args.force)
    except SynthError as e:
        print(f"groupdetr synth: {e}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{s}: {c['images']} images, {c['annotations']} objects ({c['unannotated_objects']} hidden, "
                       f"not annotated)" for s, c in m["splits"].items())
    speed = (f" in {m['seconds']:.1f} s ({m['images_per_second']:.1f} images/s, {m['workers']} workers)"
             if "seconds" in m else " (already there; nothing rendered)")
    print(f"embedded benchmark at {out}: {counts}{speed}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groupdetr", description="Group DETR reproducibility and ablation suite.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("config", help="print the resolved config of a recipe plus overrides")
    _add_config_args(p)
    _add_set_from(p)
    p.set_defaults(func=_cmd_config)
    p = sub.add_parser("recipes", help="list shipped recipes")
    p.set_defaults(func=_cmd_recipes)
    p = sub.add_parser("train", help="train a config into a run directory (resumes; finished runs are kept)",
                       description="Train into --out following the run-directory contract (docs/run-directory.md). "
                                   "Rerunning the same command resumes from the last finished epoch; a finished run "
                                   "is not retrained; a run dir with another config is refused unless --restart. "
                                   "Multi-process: torchrun --nproc_per_node N -m groupdetr train ...")
    _add_config_args(p)
    _add_set_from(p)
    p.add_argument("--out", required=True, help="run directory (a folder; created if absent)")
    p.add_argument("--restart", action="store_true", help="discard what --out holds and start over")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard curves (default: --out/tensorboard, per-iteration losses and "
                        "learning rates, per-epoch stats; view with tensorboard --logdir)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("pretrain", help="pretrain the backbone on boxes (cached; used by model.backbone.weights=pretrain)",
                       description="Pretrain model.backbone on a dense box-only pretext task (per-cell class occupancy, "
                                   "centre heatmap, box extent, at every stage) over the training split of data.* or of "
                                   "pretrain.dataset/pretrain.root, with the settings of pretrain.*. The result goes to a "
                                   "content-addressed cache (pretrain.cache): the same inputs never pretrain twice. "
                                   "Prints one line: the held-out pretext metrics and the weights' path.")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="also copy the weights here (and the record to the same name .json)")
    p.add_argument("--force", action="store_true", help="pretrain again and replace the cache entry")
    p.set_defaults(func=_cmd_pretrain)
    p = sub.add_parser("chance", help="AP of the fixed-boxes baseline (the same boxes on every image)",
                       description="Cluster the training split's boxes per category (k-means, normalised cxcywh) into "
                                   "postprocess.num_select fixed predictions and score them on the val split with the "
                                   "models' COCO evaluation: the AP a detector gets without looking at the image.")
    _add_config_args(p)
    p.add_argument("--boxes", type=int, default=None, help="number of fixed boxes (default: postprocess.num_select)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.set_defaults(func=_cmd_chance)
    p = sub.add_parser("derive", help="derive a smaller one-class, box-only dataset (a user's dataset, simulated)",
                       description="Copy a seeded random subset of each split of a COCO-format dataset to OUT "
                                   "(OUT/train, OUT/val, OUT/annotations/instances_{train,val}.json), merging the "
                                   "categories into one and keeping boxes only unless told otherwise. Prints the "
                                   "overrides that read it as a dataset by paths (data.dataset=coco_json); "
                                   "data.dataset=synth data.root=OUT reads it too.")
    p.add_argument("src", help="dataset root")
    p.add_argument("out", help="output root")
    p.add_argument("--dataset", default="synth", help="layout of SRC: synth or coco")
    p.add_argument("--train", type=int, default=None, help="training images to keep (default all)")
    p.add_argument("--val", type=int, default=None, help="validation images to keep (default all)")
    p.add_argument("--keep-classes", dest="one_class", action="store_false", help="keep the categories")
    p.add_argument("--keep-labels", dest="box_only", action="store_false", help="keep masks and 3D labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace OUT")
    p.set_defaults(func=_cmd_derive)
    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint (any group)",
                       description="Evaluate on the val split. --group g evaluates group g alone (paper Fig. 4); "
                                   "results go to <run>/eval/group{g}.json (or --out). --groups all (or a list of "
                                   "indices) evaluates each group alone in one job, in one forward per batch when "
                                   "self-attention keeps the groups apart: group{g}.json for each, beside the "
                                   "index --out (default <run>/eval/groups.json).")
    p.add_argument("target", help="run directory or checkpoint file")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--group", type=int, default=None, help="group to evaluate (default: the config's model.eval_group)")
    which.add_argument("--groups", nargs="+", default=None, metavar="G",
                       help="several groups, each alone, in one job: indices or 'all'")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. data.root=... or postprocess.nms_iou=0.7 (not the architecture)")
    p.add_argument("--out", default=None,
                   help="write the result JSON here (not a folder, the checkpoint, or a file training owns: "
                        "metrics.json, log.jsonl, manifest.json, config.yaml, checkpoint.pth of a run)")
    p.add_argument("--no-detections", dest="detections", action="store_false",
                   help="do not write the detections beside each result file (default: <stem>.detections.bbox.json, "
                        "and .segm.json / .3d.json as the task has them; COCO results that COCO.loadRes reads)")
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("visualize", help="draw a run's predictions on val images, or the query-augmentation figure",
                       description="Draw the checkpoint of a run directory (or a checkpoint file) on validation images "
                                   "into --out. By default detections_<id>.png per image: the evaluated group's "
                                   "detections (postprocessed as evaluation does, above --score-threshold) beside the "
                                   "ground truth; every task is drawn by its 2D boxes. With --groups all (or indices): "
                                   "all groups active in one forward, each matched to the ground truth by the run's "
                                   "matcher, and for every object the box of each group's matched query "
                                   "(query_augmentation_<id>.png), plus query_augmentation.json with the mean IoU of "
                                   "the boxes matched to the same object against that of different objects "
                                   "(printed).")
    p.add_argument("target", help="run directory or checkpoint file")
    p.add_argument("--out", required=True, help="folder for the pictures (created if absent)")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument("--images", type=int, nargs="+", default=None, metavar="ID", help="val image ids to draw")
    chosen.add_argument("--num", type=int, default=None, help="draw the first N val images (default 4)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="detections scoring below are not drawn")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--group", type=int, default=None, help="group whose detections are drawn (default: "
                                                               "the config's model.eval_group)")
    mode.add_argument("--groups", nargs="+", default=None, metavar="G",
                      help="query-augmentation figure of these groups: 'all' or indices")
    p.add_argument("--agreement-images", default=None, metavar="N",
                   help="with --groups: pool the printed agreement over the first N val images or 'all' "
                        "(default: the drawn images)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. data.root=... (not the architecture)")
    p.set_defaults(func=_cmd_visualize)
    p = sub.add_parser("synth", help="render the embedded benchmark (COCO format with masks and 3D labels)",
                       description="Render the embedded benchmark described by data.* of a recipe. Deterministic: "
                                   "the same settings give byte-identical files.")
    _add_config_args(p)
    p.add_argument("--out", help="output folder (default: data.root of the config)")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace an existing benchmark with other settings")
    p.set_defaults(func=_cmd_synth)
    p = sub.add_parser("import-checkpoint", help="convert a checkpoint of the authors' Conditional DETR / Group DETR "
                       "code (Atten4Vis/ConditionalDETR) into a groupdetr checkpoint for `groupdetr eval`",
                       description="Reads their checkpoint (or bare state dict), reads the architecture from its tensors "
                       "(and its saved args), renames and unpacks the parameters, checks that they fill the model of "
                       "the config exactly, and writes a groupdetr checkpoint. Evaluate it with "
                       "`groupdetr eval CKPT --set data.root=/path/to/coco`.")
    p.add_argument("src", help="their checkpoint, e.g. conddetr_r50_epoch12_groupdetr11/checkpoint.pth")
    p.add_argument("--out", required=True, help="the groupdetr checkpoint to write (a new file)")
    p.add_argument("--groups", type=int, default=None,
                   help="K, when the file has no saved args (its query embedding holds K*N rows)")
    _add_config_args(p, default="paper_cdetr_r50_12ep")
    p.set_defaults(func=_cmd_import_checkpoint)
    p = sub.add_parser("equal-time", help="derive the schedule that trains a model as long as another took (Table 2)",
                       description="From finished runs' log.jsonl (training seconds per epoch): the epochs on which "
                                   "the model of the --measured-on runs (e.g. the baseline at 1x) trains as long as "
                                   "the --to runs took (e.g. Group DETR at 1x), rounded up; the lr drop keeps its "
                                   "distance from the end. Writes a file for `groupdetr train --set-from`.")
    p.add_argument("--to", nargs="+", required=True, metavar="RUN", help="finished runs whose training time to match")
    p.add_argument("--measured-on", dest="measured_on", nargs="+", required=True, metavar="RUN",
                   help="finished runs of the model to schedule, on its own schedule (seconds per epoch)")
    p.add_argument("--out", required=True, help="the schedule file (YAML)")
    p.set_defaults(func=_cmd_equal_time)
    p = sub.add_parser("paper-tables", help="reshape the paper's reported numbers into results/paper/*.csv")
    p.add_argument("--reported", default="results/paper/reported.csv", help="transcription CSV (with sources)")
    p.add_argument("--out", default="results/paper", help="output folder")
    p.set_defaults(func=_cmd_paper_tables)
    p = sub.add_parser("gather", help="gather one study's finished runs into tables and figures",
                       description="Read {runs}/{study}/{variant}/seed{seed} of every variant and seed of a study "
                                   "(workflows/config/studies.yaml) and write runs.csv, summary.csv, effects.csv, comparisons.csv (studies "
                                   "that declare comparisons), "
                                   "table.md, table.tex, the study's figures and README.md into --out, atomically.")
    p.add_argument("--studies", default="workflows/config/studies.yaml", help="studies file")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--runs", required=True, help="root of the run directories, e.g. results/runs")
    p.add_argument("--out", default=None, help="output folder (default: results/<study>)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to gather (default: the study's)")
    p.add_argument("--variants", nargs="+", default=None, help="variants to gather (default: all)")
    p.set_defaults(func=_cmd_gather)
    p = sub.add_parser("notebook", help="execute a notebook headless (nbclient)",
                       description="Execute every cell of a notebook in a fresh kernel; the results root reaches "
                                   "the notebook as $GROUPDETR_RESULTS. A failing cell is one line, exit 1.")
    p.add_argument("notebook", help="the .ipynb file")
    p.add_argument("--out", default=None, help="write the executed notebook here (default: "
                   "<results>/notebooks/<name>.ipynb; '-' keeps nothing)")
    p.add_argument("--html", action=argparse.BooleanOptionalAction, default=True,
                   help="also write it as HTML beside the executed notebook (default: yes)")
    p.add_argument("--results", default=None, help="results root (default: the repository's results/)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    p.set_defaults(func=_cmd_notebook)
    from groupdetr.bench_args import add_bench_args

    p = sub.add_parser("bench", help="time train/eval steps and peak memory for several K",
                       description="Benchmark of the group mechanics (see groupdetr/bench.py).")
    add_bench_args(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"groupdetr: config error: {e}", file=sys.stderr)
        return 2
    except DatasetError as e:
        print(f"groupdetr: dataset error: {e}", file=sys.stderr)
        return 2
    except WeightsError as e:
        print(f"groupdetr: {e}", file=sys.stderr)
        return 2
    except (StudyError, GatherError, NotebookError, UsageError, RunError, InitFromError) as e:  # refusals
        print(f"groupdetr: {e}", file=sys.stderr)
        return 2
    except (NonFiniteLoss, NotebookFailed) as e:
        print(f"groupdetr: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
