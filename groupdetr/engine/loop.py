"""One training epoch, one evaluation pass, and the matching instability between epochs."""
from __future__ import annotations

import contextlib
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from groupdetr.criterion import weight_losses
from groupdetr.engine.distributed import all_gather_objects, all_reduce_sum
from groupdetr.engine.progress import Progress, progress
from groupdetr.errors import NonFiniteLoss
from groupdetr.groups import select_group

__all__ = ["NonFiniteLoss", "StepResult", "non_finite", "train_step", "epoch_iterations", "train_one_epoch",
           "Evaluation", "evaluate", "evaluate_groups", "matching_signature", "matching_instability"]


def _to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when ``amp`` (``train.amp``); a no-op context otherwise (CPU runs stay fp32)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def matching_signature(query_idx: torch.Tensor, target_idx: torch.Tensor, num_targets: int, num_queries: int,
                       num_groups: int) -> torch.Tensor:
    """Which query of each group each ground truth got: [G, M] query index within its group (-1:
    unmatched). Comparing signatures of consecutive epochs gives the matching instability."""
    sig = torch.full((num_groups, num_targets), -1, dtype=torch.int64)
    q, t = query_idx.cpu(), target_idx.cpu()
    sig[q // num_queries, t] = q % num_queries
    return sig


def matching_instability(previous: dict, current: dict) -> float | None:
    """IS of DN-DETR (Li et al., CVPR 2022, Sec. 3.3): the fraction of (ground truth, group)
    assignments that changed between two epochs, over the training images matched in both with the
    same number of objects (a crop that drops objects makes an image incomparable)."""
    changed = total = 0
    for image_id, sig in current.items():
        old = previous.get(image_id)
        if old is not None and old.shape == sig.shape:
            changed += int((old != sig).sum())
            total += sig.numel()
    return changed / total if total else None


@dataclass
class StepResult:
    """What one :func:`train_step` leaves: the outputs, the named losses and their weighted ``total``, the
    matching (per image: query_idx, target_idx) and the seconds of each phase (``forward``, ``loss``
    (matching included), ``backward``, ``optim``) and of the whole ``step``."""

    outputs: dict
    losses: dict
    indices: list
    total: torch.Tensor
    seconds: dict


def non_finite(outputs, name: str = "") -> list[str]:
    """Names of the floating-point tensors in a detector output dict that hold a NaN or an infinity.

    Walks dicts, lists and tuples (``aux_outputs`` and ``dn_outputs`` included), so a diverging
    intermediate decoder layer is named too: ``["pred_logits", "aux_outputs[0].pred_boxes"]``.
    Anything else (``num_groups``, the ``dn_queries`` inputs) is skipped. One host sync in all.
    """
    named = []

    def walk(value, key):
        if torch.is_tensor(value):
            if value.is_floating_point():
                named.append((key, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")

    walk(outputs, name)
    if not named:
        return []
    finite = torch.stack([t.detach().isfinite().all() for _, t in named]).tolist()
    return [k for (k, _), ok in zip(named, finite) if not ok]


def train_step(model, criterion, loss_weights: dict, optimizer, images, pad_mask, targets, clip: float = 0.0,
               amp: bool = False, where: str | None = None, clock=time.perf_counter) -> StepResult:
    """One optimisation step: forward, matching and losses, backward, gradient clipping, optimizer step.

    ``where`` (e.g. ``"epoch 2, iteration 3"``): when given, the step stops with :class:`NonFiniteLoss`
    naming it as soon as the model outputs hold a NaN or an infinity -- checked after the forward, before
    the matcher, which would otherwise fail on them with a bare scipy error -- or the weighted loss does
    (checked before the backward). Nothing is updated then. ``clock`` times the phases (the benchmark
    passes one that waits for the GPU first).
    """
    t0 = clock()
    with autocast(images.device, amp):
        outputs = model(images, pad_mask, targets)
    if where is not None:
        bad = non_finite(outputs)
        if bad:
            shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            raise NonFiniteLoss(f"non-finite model outputs ({shown}) at {where}: training diverged")
    t1 = clock()
    losses, indices = criterion.losses_and_matching(outputs, targets)
    total = weight_losses(losses, loss_weights)
    t2 = clock()
    if where is not None and not torch.isfinite(total):
        raise NonFiniteLoss(f"non-finite loss ({total.item()}) at {where}")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    t3 = clock()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    t4 = clock()
    return StepResult(outputs, losses, indices, total, {"forward": t1 - t0, "loss": t2 - t1, "backward": t3 - t2,
                                                        "optim": t4 - t3, "step": t4 - t0})


def epoch_iterations(loader, max_iters: int | None) -> int:
    """Iterations of one training epoch over ``loader`` capped at ``max_iters`` (``train.max_iters_per_epoch``);
    the same every epoch (the training loader drops its last incomplete batch)."""
    return len(loader) if max_iters is None else min(len(loader), max_iters)


def train_one_epoch(model, criterion, loss_weights: dict, optimizer, loader, device, epoch: int, clip: float,
                    max_iters: int | None, amp: bool, log_every: int, show: bool, on_step=None, eta=None):
    """Train one epoch. Stops with :class:`NonFiniteLoss` naming the epoch and iteration when the outputs or
    the loss of a step (:func:`train_step`), or the weights at the end of the epoch, are not finite.

    ``on_step(iteration, values)``, when given, is called after each step with the iteration (from 1) and
    this rank's ``{name: value}`` of every named loss and ``loss``, the weighted total (floats, no extra sync).
    The progress (``show``) carries the running loss and, given ``eta`` (:meth:`groupdetr.engine.progress.RunClock.eta`),
    the ETA of the whole run.

    Returns:
        (mean of every named loss and of the weighted total over the epoch (all ranks),
         matching signatures {image_id: [G, M]} of this rank's images, iterations run).
    """
    model.train()
    total_iters = epoch_iterations(loader, max_iters)
    sums, matching, n = defaultdict(float), {}, 0
    batches = itertools.islice(loader, total_iters)
    bar = Progress(batches, total_iters, f"epoch {epoch}", log_every, show, eta)
    for i, (images, pad_mask, targets) in enumerate(bar, 1):
        images, pad_mask, targets = images.to(device), pad_mask.to(device), _to(targets, device)
        step = train_step(model, criterion, loss_weights, optimizer, images, pad_mask, targets, clip, amp,
                          where=f"epoch {epoch}, iteration {i}")
        outputs, losses, indices, total = step.outputs, step.losses, step.indices, step.total
        values = torch.stack([v.detach() for v in losses.values()] + [total.detach()]).tolist()  # one host sync
        for k, v in zip([*losses, "loss"], values):
            sums[k] += v
        n += 1
        bar.add_loss(values[-1])
        if on_step is not None:
            on_step(i, dict(zip([*losses, "loss"], values)))
        g, nq = outputs["num_groups"], outputs["pred_logits"].shape[1] // outputs["num_groups"]
        for t, (q, j) in zip(targets, indices):
            matching[int(t["image_id"])] = matching_signature(q, j, len(t["labels"]), nq, g)
    # A step with finite outputs and loss can still leave non-finite weights (an overflowing update); the
    # next forward catches that, except after the epoch's last step, whose weights the checkpoint keeps.
    bad = non_finite(dict(model.named_parameters()))
    if bad:
        raise NonFiniteLoss(f"non-finite parameters ({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}) after "
                            f"epoch {epoch}, iteration {n}: training diverged")
    keys = sorted(sums)
    reduced = all_reduce_sum([sums[k] for k in keys] + [n], device)
    return {k: v / max(reduced[-1], 1) for k, v in zip(keys, reduced[:-1])}, matching, n


def _float(outputs: dict) -> dict:
    """Outputs in float32 for postprocessing (bf16 under AMP); non-tensors as they are."""
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in outputs.items()
            if k not in ("aux_outputs", "dn_outputs")}


def _merge_parts(parts: list[dict]) -> dict:
    merged = {}
    for part in parts:
        merged.update(part)
    return merged


@torch.no_grad()
def _predict(model, postprocess, loader, device, scorers, amp: bool, show: bool, log_every: int,
             groups: tuple[int, ...] | None) -> list[list[dict]]:
    """Run ``model`` in eval mode over ``loader`` once and keep, per image and scorer, the scorer's record
    of the image (:class:`groupdetr.evaluation.scorers.Scorer`). Keyed by image id: a DistributedSampler
    repeats images to even out ranks.

    ``groups``: None runs the model's own active groups and returns one entry; a tuple runs those groups in
    one forward and returns one entry per group, each recorded from that group's slice of the outputs.
    Returns ``[slot][scorer] -> {image id: record}``.
    """
    model.eval()
    slots = 1 if groups is None else len(groups)
    parts = [[{} for _ in scorers] for _ in range(slots)]
    for images, pad_mask, targets in progress(loader, len(loader), "eval", log_every, show):
        targets = _to(targets, device)
        with autocast(device, amp):
            outputs = _float(model(images.to(device), pad_mask.to(device), targets, groups=groups))
        for slot, records in enumerate(parts):
            slot_outputs = outputs if groups is None else select_group(outputs, slot)
            for t, r in zip(targets, postprocess(slot_outputs, targets)):
                r = {k: v.cpu() for k, v in r.items()}
                for scorer, kept in zip(scorers, records):
                    kept[int(t["image_id"])] = scorer.record(t, r)
    return parts


@dataclass
class Evaluation:
    """One evaluation: its ``stats`` (``bbox/AP`` ...) and what they were computed from, ``records``: per
    scorer, ``{image id: record}`` of every rank's images (so any rank can write the detections)."""

    stats: dict
    records: list[dict]
    scorers: list

    def detections(self) -> dict[str, list[dict]]:
        """The scored detections, ``{kind: results list}`` of every scorer
        (:meth:`groupdetr.evaluation.scorers.Scorer.detections`): ``bbox`` and ``segm`` COCO results,
        ``3d`` boxes; plain JSON values, built when asked (training writes only its final evaluation's)."""
        out = {}
        for scorer, kept in zip(self.scorers, self.records):
            out.update(scorer.detections(kept))
        return out


def _score(records: list[dict], scorers) -> Evaluation:
    """The evaluation of one set of predictions: each scorer's stats over the records of every rank (every
    rank gets the same)."""
    merged = [_merge_parts(all_gather_objects(kept)) for kept in records]
    stats = {}
    for scorer, kept in zip(scorers, merged):
        stats.update(scorer.score(kept))
    return Evaluation(stats, merged, list(scorers))


def evaluate(model, postprocess, loader, device, scorers, amp: bool = False, show: bool = True,
             log_every: int = 50) -> Evaluation:
    """The :class:`Evaluation` of ``model`` in eval mode (its active group) on ``loader``, gathered across
    ranks; every rank returns the same stats.

    ``scorers``: the task's (``TASKS[task].scorers(cfg, coco_gt)``): COCO box AP, mask AP (``segm/AP``),
    the 3D metric (``3d/NDS`` ...), as the task declares.
    """
    (records,) = _predict(model, postprocess, loader, device, scorers, amp, show, log_every, None)
    return _score(records, scorers)


def evaluate_groups(model, postprocess, loader, device, scorers, groups, amp: bool = False, show: bool = True,
                    log_every: int = 50) -> dict[int, Evaluation]:
    """The :class:`Evaluation` of :func:`evaluate` for each of ``groups`` evaluated alone, from one pass over
    the data: one forward with all of ``groups`` active, each group scored from its own slice of the outputs.

    Only valid when the groups do not interact at inference (``model.self_attention`` in
    :data:`groupdetr.names.ISOLATING_SELF_ATTENTION`: cross-attention and FFN are per query, and
    self-attention stays inside each group); :func:`groupdetr.engine.evaluate_run.evaluate_groups_run`
    checks it. Returns ``{group: Evaluation}``.
    """
    groups = tuple(int(g) for g in groups)
    parts = _predict(model, postprocess, loader, device, scorers, amp, show, log_every, groups)
    return {g: _score(records, scorers) for g, records in zip(groups, parts)}
