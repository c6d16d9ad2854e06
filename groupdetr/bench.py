"""Benchmark of the group mechanics: train/eval step time and peak memory versus K.

Not a test: it prints figures. For every self-attention strategy and every number of groups K it
builds the model of a recipe (``model.num_groups=K``, ``model.self_attention=<sa>``), feeds it
seeded random images and boxes, and times

* a training step (the engine's own, :func:`groupdetr.engine.loop.train_step`), split into forward,
  matching (every matcher call, auxiliary layers included), loss (criterion minus matching, plus the
  weighted sum), backward (after zero_grad) and optimizer (gradient clipping, step);
* an evaluation step (``model.eval()``, no grad, forward only), which runs one group whatever K
  is, so its ratio to K=1 should be 1.00 up to noise.

Figures are medians over ``--steps`` timed steps after one warm-up step. By default every
(self-attention, K) configuration runs in a fresh ``python -m groupdetr.bench --worker``
process so that the peak RSS (``ru_maxrss``) is that configuration's own.

Usage::

    groupdetr bench [-c cpu_small] [--groups 1 3 11] [--self-attention separate shared] [--steps 5]
"""
from __future__ import annotations

import argparse
import math
import functools
import gc
import json
import statistics
import subprocess
import sys
import time

import torch

from groupdetr.bench_args import BenchSettings, add_bench_args
from groupdetr.build import build_criterion, build_model, build_optimizer, loss_weights
from groupdetr.config import Config, ConfigError, load_config
from groupdetr.engine.distributed import resolve_device as engine_device
from groupdetr.engine.loop import autocast, train_step as engine_train_step
from groupdetr.engine.memory import cuda_peak_mib, rss_peak_mib
from groupdetr.errors import BenchError
from groupdetr.model.attention import SELF_ATTENTION, ProjectedAttention

__all__ = ["add_bench_args", "run_bench_cli", "main"]

PHASES = ("forward", "matching", "loss", "backward", "optim")
ROW_PREFIX = "BENCH-ROW "  # marks the worker's result line on its stdout
EVAL_TOLERANCE = 0.10  # eval ratio within 1 +- this counts as "goal met"
MATCHING_GOAL = 0.10  # matching below this share of the train step counts as "goal met"


# ---------------------------------------------------------------------------------------------
# configurations, device and data


def resolve_config(settings: BenchSettings, k: int, sa: str) -> Config:
    """The recipe plus the user's overrides plus the sweep's K and self-attention.

    A recipe with ``one_to_one`` assignment (which needs K=1) is switched to ``group`` for K > 1.
    Initial backbone weights do not change a step's cost, so the benchmark starts from random init.
    """
    sweep = [f"model.num_groups={k}", f"model.self_attention={sa}", "model.backbone.weights=null"]
    base = load_config(settings.config, settings.overrides)
    if base.matcher.assignment == "one_to_one" and k > 1:
        sweep.append("matcher.assignment=group")
    return load_config(settings.config, list(settings.overrides) + sweep)


def resolve_device(name: str) -> torch.device:
    """The engine's device rule (``auto`` -> CUDA when present), failing as a BenchError."""
    try:
        return engine_device(name)
    except ConfigError as e:
        raise BenchError(str(e)) from None


def random_batch(cfg: Config, batch: int, size: int, objects: int, device: torch.device):
    """Seeded random images ``[B, 3, S, S]`` and targets with valid normalised cxcywh boxes.

    Box widths and heights are uniform in [0.05, 0.3]; centres are drawn so that every box stays
    inside the unit square. Every target also carries what the task heads read (``model.task``):
    ``masks`` (the box regions), and a pinhole camera with 3D boxes in front of it.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.randn(batch, 3, size, size, generator=gen)
    focal = size / (2 * math.tan(math.radians(25)))
    k = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    targets = []
    for i in range(batch):
        wh = 0.05 + 0.25 * torch.rand(objects, 2, generator=gen)
        centre = wh / 2 + (1 - wh) * torch.rand(objects, 2, generator=gen)
        labels = torch.randint(cfg.model.num_classes, (objects,), generator=gen, dtype=torch.long)
        boxes = torch.cat([centre, wh], dim=1)
        x0, y0 = ((centre - wh / 2) * size).long().unbind(1)
        x1, y1 = ((centre + wh / 2) * size).ceil().long().unbind(1)
        grid = torch.arange(size)
        masks = ((grid[None, :, None] >= y0[:, None, None]) & (grid[None, :, None] < y1[:, None, None])
                 & (grid[None, None, :] >= x0[:, None, None]) & (grid[None, None, :] < x1[:, None, None]))
        depth = 3 + 9 * torch.rand(objects, generator=gen)
        centre_3d = torch.stack([(centre[:, 0] * size - size / 2) * depth / focal,
                                 (centre[:, 1] * size - size / 2) * depth / focal, depth], 1)
        target = {"labels": labels, "boxes": boxes, "masks": masks, "image_id": torch.tensor(i),
                  "orig_size": torch.tensor([size, size]), "size": torch.tensor([size, size]),
                  "center_3d": centre_3d, "dims_3d": 0.3 + 0.7 * torch.rand(objects, 3, generator=gen),
                  "yaw_3d": (torch.rand(objects, generator=gen) * 2 - 1) * math.pi,
                  "yaw_period": torch.full((objects,), math.pi), "intrinsics": k.clone(),
                  "camera_pitch": torch.tensor(0.5)}
        targets.append({name: v.to(device) for name, v in target.items()})
    return images.to(device), targets


# ---------------------------------------------------------------------------------------------
# timing


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the queued CUDA work on ``device`` has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class TimedMatcher:
    """Proxy of a matcher that accumulates the seconds spent in all its calls in ``seconds``."""

    def __init__(self, matcher, device: torch.device):
        self.matcher, self.device, self.seconds = matcher, device, 0.0

    def __call__(self, outputs: dict, targets: list[dict]):
        start = clock(self.device)
        result = self.matcher(outputs, targets)
        self.seconds += clock(self.device) - start
        return result

    def __getattr__(self, name: str):
        return getattr(self.matcher, name)


def train_step(model, criterion, optimizer, weights: dict, clip: float, images, targets,
               amp: bool = False) -> dict[str, float]:
    """One training step of the engine (:func:`groupdetr.engine.loop.train_step`), timed with a clock that
    waits for the GPU; returns seconds per phase (``PHASES``: the matcher's calls split out of the loss)
    and in total (``step``). ``criterion.matcher`` must be a :class:`TimedMatcher`."""
    timer = criterion.matcher
    timer.seconds = 0.0
    seconds = engine_train_step(model, criterion, weights, optimizer, images, None, targets, clip, amp,
                                clock=functools.partial(clock, images.device)).seconds
    return {"forward": seconds["forward"], "matching": timer.seconds, "loss": seconds["loss"] - timer.seconds,
            "backward": seconds["backward"], "optim": seconds["optim"], "step": seconds["step"]}


def train_step_seconds(*args) -> float:
    """Seconds of one :func:`train_step` (same arguments)."""
    return train_step(*args)["step"]


def amp_for(cfg: Config, device: torch.device) -> bool:
    """Whether steps run under bf16 autocast: ``train.amp`` on a CUDA device (the engine's rule)."""
    return bool(cfg.train.amp) and device.type == "cuda"


@torch.no_grad()
def eval_step(model, images, targets=None, amp: bool = False) -> float:
    """Seconds of one inference forward (the model must be in eval mode), under bf16 autocast when ``amp``."""
    t0 = clock(images.device)
    with autocast(images.device, amp):
        model(images, targets=targets)
    return clock(images.device) - t0


# ---------------------------------------------------------------------------------------------
# one configuration


def bench_config(cfg: Config, settings: BenchSettings, device: torch.device, isolated: bool) -> dict:
    """Time ``settings.steps`` train and eval steps (after one warm-up each) of one configuration.

    Returns a row: the configuration, median seconds per phase, the per-step train/eval times,
    peak RSS (MiB) and its growth since the model, optimizer and data were built, and on CUDA
    ``torch.cuda.max_memory_allocated`` (MiB) over the training steps.
    """
    batch, size = settings.batch_size or cfg.optim.batch_size, settings.image_size or cfg.data.image_size
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.matcher.assignment).to(device).train()
    criterion = build_criterion(cfg)
    criterion.matcher = TimedMatcher(criterion.matcher, device)
    optimizer, weights = build_optimizer(model, cfg), loss_weights(cfg)
    images, targets = random_batch(cfg, batch, size, settings.objects, device)
    rss_built = rss_peak_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    amp = amp_for(cfg, device)
    train = [train_step(model, criterion, optimizer, weights, cfg.optim.clip_max_norm, images, targets, amp)
             for _ in range(settings.steps + 1)][1:]
    cuda_peak = cuda_peak_mib(device)
    model.eval()
    evals = [eval_step(model, images, targets, amp) for _ in range(settings.steps + 1)][1:]
    rss_peak = rss_peak_mib()

    m = cfg.model
    row = {"recipe": cfg.name, "device": device.type, "task": m.task, "decoder": m.decoder,
           "denoising": m.denoising.sharing if m.denoising.enabled else "none",
           "self_attention": m.self_attention, "K": m.num_groups,
           "N": m.num_queries, "total_queries": m.num_groups * m.num_queries, "d": m.hidden_dim,
           "assignment": cfg.matcher.assignment, "batch": batch, "image_size": size, "objects": settings.objects,
           "steps": settings.steps, "threads": torch.get_num_threads(),
           "precision": "bf16 autocast" if amp else "fp32"}
    row.update({f"{p}_s": statistics.median(s[p] for s in train) for p in PHASES})
    row["train_step_s"] = statistics.median(s["step"] for s in train)
    row["matching_share"] = row["matching_s"] / row["train_step_s"]
    row["eval_step_s"] = statistics.median(evals)
    row.update({"train_step_times_s": [s["step"] for s in train], "eval_step_times_s": evals,
                "peak_rss_mib": rss_peak, "rss_after_build_mib": rss_built, "train_rss_growth_mib": rss_peak - rss_built,
                "rss_per_config": isolated, "cuda_peak_mib": cuda_peak})
    return row


def worker_argv(settings: BenchSettings, k: int, sa: str) -> list[str]:
    """Command line of a worker process that benches the single configuration (K, sa)."""
    argv = [sys.executable, "-m", "groupdetr.bench", "--worker", "--config", settings.config,
            "--groups", str(k), "--self-attention", sa, "--steps", str(settings.steps),
            "--objects", str(settings.objects), "--device", settings.device]
    for item in settings.overrides:
        argv += ["--set", item]
    for flag, value in (("--batch-size", settings.batch_size), ("--image-size", settings.image_size), ("--threads", settings.threads)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def bench_in_subprocess(settings: BenchSettings, k: int, sa: str) -> dict:
    """Run one configuration in a fresh worker process and return its row."""
    proc = subprocess.run(worker_argv(settings, k, sa), capture_output=True, text=True)
    rows = [line[len(ROW_PREFIX):] for line in proc.stdout.splitlines() if line.startswith(ROW_PREFIX)]
    if proc.returncode != 0 or len(rows) != 1:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError(f"worker for self_attention={sa} K={k} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(rows[0])


def add_eval_ratios(rows: list[dict]) -> None:
    """Set ``eval_ratio`` = eval step / eval step of the smallest K with the same self-attention.

    ``eval_ratio_range`` is the noise band of that ratio from the per-step times:
    [min / base max, max / base min].
    """
    for row in rows:
        same = [r for r in rows if r["self_attention"] == row["self_attention"]]
        base = min(same, key=lambda r: r["K"])
        times, base_times = row["eval_step_times_s"], base["eval_step_times_s"]
        row["eval_ratio"] = row["eval_step_s"] / base["eval_step_s"]
        row["eval_ratio_range"] = [min(times) / max(base_times), max(times) / min(base_times)]
        row["eval_ratio_base_K"] = base["K"]


# ---------------------------------------------------------------------------------------------
# paired comparisons


def interleaved_medians(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each timing function, called once per round in alternating order
    (A B, B A, ...), so that drift and load on a shared machine hit every contender alike."""
    times = {name: [] for name in fns}
    for i in range(rounds):
        for name in (list(fns) if i % 2 == 0 else list(reversed(fns))):
            times[name].append(fns[name]())
    return {name: statistics.median(t) for name, t in times.items()}


def paired_eval_ratio(settings: BenchSettings, device: torch.device, sa: str, k_base: int, k_max: int) -> float:
    """Eval step of K=k_max over K=k_base, both models in this process, calls interleaved."""
    models, images, targets = {}, None, None
    for k in (k_base, k_max):
        cfg = resolve_config(settings, k, sa)
        torch.manual_seed(cfg.seed)
        models[k] = build_model(cfg.model, cfg.matcher.assignment).to(device).eval()
        images, targets = random_batch(cfg, settings.batch_size or cfg.optim.batch_size,
                                       settings.image_size or cfg.data.image_size, settings.objects, device)
    amp = amp_for(cfg, device)
    fns = {k: functools.partial(eval_step, m, images, targets, amp) for k, m in models.items()}
    interleaved_medians(fns, 1)  # warm-up
    med = interleaved_medians(fns, max(30, 5 * settings.steps))  # eval steps are cheap: many rounds
    return med[k_max] / med[k_base]


def paired_train_ratio(settings: BenchSettings, device: torch.device, k: int) -> dict[str, float]:
    """Train step seconds of separate and shared self-attention at K=k, steps interleaved."""
    fns = {}
    for sa in ("separate", "shared"):
        cfg = resolve_config(settings, k, sa)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, cfg.matcher.assignment).to(device).train()
        criterion = build_criterion(cfg)
        criterion.matcher = TimedMatcher(criterion.matcher, device)
        optimizer, weights = build_optimizer(model, cfg), loss_weights(cfg)
        images, targets = random_batch(cfg, settings.batch_size or cfg.optim.batch_size,
                                       settings.image_size or cfg.data.image_size, settings.objects, device)
        fns[sa] = functools.partial(train_step_seconds, model, criterion, optimizer, weights,
                                    cfg.optim.clip_max_norm, images, targets, amp_for(cfg, device))
    interleaved_medians(fns, 1)  # warm-up
    return interleaved_medians(fns, settings.steps)


def self_attention_seconds(sa_fn, attn, q, k, v, num_groups: int) -> float:
    """Seconds of forward + backward of one decoder self-attention call."""
    t0 = clock(q.device)
    sa_fn(attn, q, k, v, num_groups).sum().backward()
    return clock(q.device) - t0


def paired_self_attention(settings: BenchSettings, device: torch.device, k: int) -> dict[str, float]:
    """The self-attention operation alone (one layer, fwd + bwd) at the recipe's B, K*N, d:
    separate (fold, K*N^2) vs shared ((K*N)^2), interleaved."""
    cfg = resolve_config(settings, k, "separate")
    m = cfg.model
    gen = torch.Generator().manual_seed(cfg.seed)
    shape = (settings.batch_size or cfg.optim.batch_size, k * m.num_queries, m.hidden_dim)
    q, kk, v = (torch.randn(shape, generator=gen).to(device).requires_grad_() for _ in range(3))
    attn = ProjectedAttention(m.hidden_dim, m.nheads).to(device)
    fns = {sa: functools.partial(self_attention_seconds, SELF_ATTENTION[sa], attn, q, kk, v, k)
           for sa in ("separate", "shared")}
    interleaved_medians(fns, 1)  # warm-up
    return interleaved_medians(fns, max(10, 3 * settings.steps))


def run_paired(settings: BenchSettings, device: torch.device) -> dict:
    """The goal comparisons, measured pairwise in this process (see :func:`interleaved_medians`)."""
    k_base, k_max = min(settings.groups), max(settings.groups)
    paired = {"K_base": k_base, "K_max": k_max,
              "eval_ratio": {sa: paired_eval_ratio(settings, device, sa, k_base, k_max) for sa in settings.self_attention}}
    if {"separate", "shared"} <= set(settings.self_attention):
        paired["train_step_s"] = paired_train_ratio(settings, device, k_max)
        paired["self_attention_s"] = paired_self_attention(settings, device, k_max)
    return paired


# ---------------------------------------------------------------------------------------------
# report


def table_columns(cuda: bool, base_k: int) -> list[tuple]:
    """(header, format spec, row -> value) of the table's columns; the CUDA column only on CUDA."""
    cols = [("self-attn", "", lambda r: r["self_attention"]), ("K", "d", lambda r: r["K"]),
            ("K*N", "d", lambda r: r["total_queries"]), ("train", ".4f", lambda r: r["train_step_s"]),
            ("fwd", ".4f", lambda r: r["forward_s"]), ("match", ".4f", lambda r: r["matching_s"]),
            ("match%", ".1%", lambda r: r["matching_share"]), ("loss", ".4f", lambda r: r["loss_s"]),
            ("bwd", ".4f", lambda r: r["backward_s"]), ("optim", ".4f", lambda r: r["optim_s"]),
            ("peakRSS MiB", ".0f", lambda r: r["peak_rss_mib"]), ("+RSS MiB", ".0f", lambda r: r["train_rss_growth_mib"])]
    if cuda:
        cols.append(("cuda MiB", ".0f", lambda r: r["cuda_peak_mib"]))
    return cols + [("eval", ".4f", lambda r: r["eval_step_s"]), (f"eval/K{base_k}", ".2f", lambda r: r["eval_ratio"])]


def format_table(rows: list[dict]) -> str:
    """Header lines plus one aligned line per (self-attention, K): first column left, rest right."""
    first = rows[0]
    base_k = first["eval_ratio_base_K"]
    assignment = max(rows, key=lambda r: r["K"])["assignment"]
    head = [f"recipe {first['recipe']}   device {first['device']} ({first['threads']} threads)   "
            f"image {first['image_size']}x{first['image_size']}   batch {first['batch']}   N {first['N']}   "
            f"d {first['d']}   GT boxes/image {first['objects']}   assignment {assignment}   "
            f"task {first.get('task', 'detection')}   decoder {first.get('decoder', 'conditional')}   "
            f"denoising {first.get('denoising', 'none')}   {first.get('precision', 'fp32')}",
            f"times in seconds, median of {first['steps']} steps after 1 warm-up; "
            f"eval/K{base_k} = eval step / eval step at K={base_k} with the same self-attention"]
    cols = table_columns(first["cuda_peak_mib"] is not None, base_k)
    cells = [[name for name, _, _ in cols]] + [[format(get(r), fmt) for _, fmt, get in cols] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    body = ["  ".join([line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]) for line in cells]
    note = ("+RSS = peak RSS minus RSS after building model, optimizer and data (one worker process per row)"
            if first["rss_per_config"] else
            "NOTE --no-subprocess: RSS figures are peaks of the whole process so far, not per configuration")
    return "\n".join(head + body + [note])


def format_goals(rows: list[dict], paired: dict) -> str:
    """The three goals: eval cost flat in K, separate < shared, matching < 10 % of a step.

    The first two use the paired, interleaved measurements of :func:`run_paired`; the table's
    per-process figures carry process-to-process noise of 10-25 % on a shared CPU machine.
    """
    k0, k1 = paired["K_base"], paired["K_max"]
    lines = ["goals (paired: both contenders in one process, calls interleaved)"]
    ratios = paired["eval_ratio"]
    ok = all(abs(r - 1) <= EVAL_TOLERANCE for r in ratios.values())
    lines.append(f"  eval step K={k1} / K={k0} (goal 1.00 +- noise, met if within +-{EVAL_TOLERANCE:.0%}): "
                 + ", ".join(f"{sa} {r:.2f}" for sa, r in ratios.items()) + f"  [{'met' if ok else 'NOT met'}]")
    if "train_step_s" in paired:
        sep, sh = paired["train_step_s"]["separate"], paired["train_step_s"]["shared"]
        lines.append(f"  train step at K={k1}, separate vs shared (goal: separate cheaper): {sep:.4f} s vs "
                     f"{sh:.4f} s, separate/shared = {sep / sh:.2f}  [{'met' if sep < sh else 'NOT met'}]")
        sa_sep, sa_sh = paired["self_attention_s"]["separate"], paired["self_attention_s"]["shared"]
        lines.append(f"    of which self-attention alone (one layer, fwd+bwd): separate {sa_sep * 1e3:.2f} ms vs "
                     f"shared {sa_sh * 1e3:.2f} ms, ratio {sa_sep / sa_sh:.2f}")
    else:
        lines.append("  train step separate vs shared: n/a (needs --self-attention separate shared)")
    worst = max(rows, key=lambda r: r["matching_share"])
    lines.append(f"  max matching share of a train step (goal < {MATCHING_GOAL:.0%}): {worst['matching_share']:.1%} "
                 f"({worst['self_attention']}, K={worst['K']})  [{'met' if worst['matching_share'] < MATCHING_GOAL else 'NOT met'}]")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# entry points


def run_worker(settings: BenchSettings, device: torch.device) -> int:
    """Worker mode: bench each configuration here and print its row as one marked stdout line."""
    for sa in settings.self_attention:
        for k in settings.groups:
            row = bench_config(resolve_config(settings, k, sa), settings, device, isolated=True)
            print(ROW_PREFIX + json.dumps(row), flush=True)
    return 0


def run_sweep(settings: BenchSettings, device: torch.device) -> list[dict]:
    """Rows of all (self-attention, K), each from a worker process unless ``--no-subprocess``.

    All configurations are resolved first, so a config error surfaces before anything runs.
    Progress goes to stderr.
    """
    plan = [(sa, k, resolve_config(settings, k, sa)) for sa in settings.self_attention for k in settings.groups]
    rows = []
    for sa, k, cfg in plan:
        row = bench_config(cfg, settings, device, isolated=False) if settings.no_subprocess else bench_in_subprocess(settings, k, sa)
        print(f"[bench] {sa} K={k}: train step {row['train_step_s']:.4f} s, eval step {row['eval_step_s']:.4f} s",
              file=sys.stderr, flush=True)
        rows.append(row)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    add_eval_ratios(rows)
    return rows


def run_bench_cli(settings: BenchSettings) -> int:
    """``groupdetr bench``: run the sweep, print the table and the goals, optionally write JSON."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        device = resolve_device(settings.device)
        if settings.worker:
            return run_worker(settings, device)
        rows = run_sweep(settings, device)
        print("[bench] paired comparisons ...", file=sys.stderr, flush=True)
        paired = run_paired(settings, device)
    except BenchError as e:
        print(f"groupdetr bench: {e}", file=sys.stderr)
        return 1
    print(format_table(rows) + "\n\n" + format_goals(rows, paired))
    if settings.json:
        settings.json.write_text(json.dumps({"rows": rows, "paired": paired}, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m groupdetr.bench``: the bench options plus ``--worker`` (used by the parent run)."""
    parser = argparse.ArgumentParser(prog="python -m groupdetr.bench", description=__doc__.split("\n")[0])
    add_bench_args(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    try:
        return run_bench_cli(BenchSettings.from_args(parser.parse_args(argv)))
    except ConfigError as e:
        print(f"groupdetr bench: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
