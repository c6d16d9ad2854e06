"""The ``groupdetr`` console command.

Subcommands:
    groupdetr config [RECIPE] [--set key=value ...]   print the resolved config (YAML)
    groupdetr recipes                                 list the shipped recipes
    groupdetr train --config R [--set k=v] --out DIR  train (resumes; finished runs are kept)
    groupdetr eval RUN_OR_CKPT [--group g]            evaluate, any group alone
    groupdetr synth [--config R] [--out DIR]          render the embedded benchmark
    groupdetr bench [...]                             speed/memory benchmark of the group mechanics
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from groupdetr.config import ConfigError, config_hash, dump_yaml, list_recipes, load_config

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser, default: str | None = "cpu_small") -> None:
    p.add_argument("--config", "-c", default=default, help="recipe name (see `groupdetr recipes`) or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, e.g. --set model.num_groups=3")


def _cmd_config(args) -> int:
    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(f"# config hash {config_hash(cfg)}\n" + dump_yaml(cfg))
    return 0


def _cmd_recipes(args) -> int:
    for name in list_recipes():
        print(name)
    return 0


def _cmd_bench(args) -> int:
    from groupdetr.bench import run_bench_cli

    return run_bench_cli(args)


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _cmd_train(args) -> int:
    from groupdetr.engine.trainer import train

    _setup_logging()
    cfg = load_config(args.config, args.overrides)
    metrics = train(cfg, args.out, command=sys.argv, restart=args.restart)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one copy of the result
        print(json.dumps(metrics, indent=1, sort_keys=True))
    return 0


def _cmd_eval(args) -> int:
    from groupdetr.engine.evaluate_run import evaluate_run

    _setup_logging()
    result = evaluate_run(args.target, group=args.group, overrides=args.overrides, out=args.out)
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


def _cmd_paper_tables(args) -> int:
    from groupdetr.reporting.paper import load_reported, write_paper_tables

    for path in write_paper_tables(load_reported(args.reported), args.out):
        print(path)
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
    p.set_defaults(func=_cmd_config)
    p = sub.add_parser("recipes", help="list shipped recipes")
    p.set_defaults(func=_cmd_recipes)
    p = sub.add_parser("train", help="train a config into a run directory (resumes; finished runs are kept)",
                       description="Train into --out following the run-directory contract (docs/run-directory.md). "
                                   "Rerunning the same command resumes from the last finished epoch; a finished run "
                                   "is not retrained; a run dir with another config is refused unless --restart. "
                                   "Multi-process: torchrun --nproc_per_node N -m groupdetr train ...")
    _add_config_args(p)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--restart", action="store_true", help="discard what --out holds and start over")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("eval", help="evaluate a run directory or checkpoint (any group)",
                       description="Evaluate on the val split. --group g evaluates group g alone (paper Fig. 4); "
                                   "results go to <run>/eval/group{g}.json (or --out).")
    p.add_argument("target", help="run directory or checkpoint file")
    p.add_argument("--group", type=int, default=None, help="group to evaluate (default: the config's model.eval_group)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. data.root=... or postprocess.nms_iou=0.7 (not the architecture)")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.set_defaults(func=_cmd_eval)
    p = sub.add_parser("synth", help="render the embedded benchmark (COCO format with masks and 3D labels)",
                       description="Render the embedded benchmark described by data.* of a recipe. Deterministic: "
                                   "the same settings give byte-identical files.")
    _add_config_args(p)
    p.add_argument("--out", help="output folder (default: data.root of the config)")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace an existing benchmark with other settings")
    p.set_defaults(func=_cmd_synth)
    p = sub.add_parser("paper-tables", help="reshape the paper's reported numbers into results/paper/*.csv")
    p.add_argument("--reported", default="results/paper/reported.csv", help="transcription CSV (with sources)")
    p.add_argument("--out", default="results/paper", help="output folder")
    p.set_defaults(func=_cmd_paper_tables)
    from groupdetr.bench import add_bench_args

    p = sub.add_parser("bench", help="time train/eval steps and peak memory for several K",
                       description="Benchmark of the group mechanics (see groupdetr/bench.py).")
    add_bench_args(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from groupdetr.data import DatasetError
    from groupdetr.engine.loop import NonFiniteLoss
    from groupdetr.engine.trainer import RunError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"groupdetr: config error: {e}", file=sys.stderr)
        return 2
    except DatasetError as e:
        print(f"groupdetr: dataset error: {e}", file=sys.stderr)
        return 2
    except (RunError, NonFiniteLoss) as e:
        print(f"groupdetr: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
