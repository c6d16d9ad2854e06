"""``groupdetr visualize``: a run's predictions on chosen validation images, and the query-augmentation figure.

Two pictures of a finished run (or any checkpoint), both from the model exactly as ``groupdetr eval`` loads it
(:func:`groupdetr.engine.evaluate_run.load_run_model`), one image per forward:

- **detections**: the evaluated group (``model.eval_group``, or ``group``), postprocessed as evaluation does
  (:class:`groupdetr.postprocess.PostProcess`: top-k of the sigmoid scores), kept above a score threshold,
  beside the ground truth. Every task is drawn by its 2D boxes (masks and 3D boxes are not drawn).
- **query augmentation**: all K groups active in one forward (the detector's ``groups`` argument, as
  ``groupdetr eval --groups all`` runs them), each group matched to the ground truth by the run's own matcher
  (``groupdetr.build.build_matcher``, as training does), and for each object the box of the query every
  group matched to it. With shared self-attention the groups of that forward see each other, as in training.
  The numbers beside it come from :func:`groupdetr.visualization.query_groups.group_agreement`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from groupdetr.box_ops import cxcywh_to_xyxy
from groupdetr.build import build_matcher
from groupdetr.data.collate import collate
from groupdetr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from groupdetr.engine.evaluate_run import load_run_model, reading_run
from groupdetr.errors import UsageError
from groupdetr.matcher import ASSIGNMENTS, match_per_group
from groupdetr.rundir import atomic_write_bytes
from groupdetr.visualization.draw import Detections, QueryPanel, plot_detections, plot_query_augmentation
from groupdetr.visualization.query_groups import GroupAgreement, boxes_per_object, group_agreement

__all__ = ["ViewedImage", "choose_images", "agreement_images", "visualize_run", "query_augmentation_figure"]

DEFAULT_NUM_IMAGES = 4


@dataclass(frozen=True)
class ViewedImage:
    """One validation image as the model saw it: ``image`` [H, W, 3] uint8 (the model input, un-normalised)
    and its ground truth in that image's pixels."""

    image_id: int
    image: np.ndarray
    gt: Detections


def choose_images(ids: Sequence[int], images: Sequence[int] | None, num: int | None) -> list[int]:
    """The image ids to draw: ``images`` as given (each must be in ``ids``), else the first ``num`` of ``ids``
    (default :data:`DEFAULT_NUM_IMAGES`). Refused with one line (UsageError) when one is unknown."""
    known = set(ids)
    if images:
        unknown = [i for i in images if i not in known]
        if unknown:
            raise UsageError(f"image id {unknown[0]} is not in the val split (its ids run from {min(ids)} to "
                             f"{max(ids)}, {len(ids)} images)")
        return list(dict.fromkeys(int(i) for i in images))
    num = DEFAULT_NUM_IMAGES if num is None else num
    if num < 1:
        raise UsageError(f"--num must be >= 1, got {num}")
    return sorted(ids)[:num]


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


class _Viewer:
    """The loaded model of a run and its val split; one image per forward."""

    def __init__(self, target: Path, overrides: Sequence[str], group: int | None):
        _, _, self.cfg, self.model, self.postprocess, self.val, info = load_run_model(target, list(overrides), group)
        self.device = info.device
        self.names = {int(c["id"]): str(c["name"]) for c in self.val.coco.dataset["categories"]}

    def batch(self, image_id: int):
        """``(images, pad_mask, targets, viewed)`` of one image: the model's input and :class:`ViewedImage`."""
        image, target = self.val[self.val.ids.index(image_id)]
        images, pad_mask, targets = collate([(image, target)])
        mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        std = torch.tensor(IMAGENET_STD)[:, None, None]
        pixels = ((image * std + mean).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        h, w = (int(v) for v in target["size"])
        gt = cxcywh_to_xyxy(target["boxes"]) * torch.tensor([w, h, w, h], dtype=torch.float32)
        viewed = ViewedImage(image_id, pixels, Detections(gt.numpy(), target["labels"].numpy()))
        return images.to(self.device), pad_mask.to(self.device), _to_device(targets, self.device), viewed

    @torch.no_grad()
    def detections(self, image_id: int, score_threshold: float) -> tuple[ViewedImage, Detections]:
        """The evaluated group's detections of one image (as evaluation postprocesses them) scoring at least
        ``score_threshold``, in the pixels of the image the model saw."""
        images, pad_mask, targets, viewed = self.batch(image_id)
        outputs = self.model(images, pad_mask, targets)
        (r,) = self.postprocess(outputs, targets)
        keep = r["scores"] >= score_threshold
        # the postprocess scales to the original image; the model saw it resized by size / orig_size
        (h, w), (oh, ow) = targets[0]["size"].tolist(), targets[0]["orig_size"].tolist()
        scale = torch.tensor([w / ow, h / oh, w / ow, h / oh], device=r["boxes"].device)
        return viewed, Detections((r["boxes"][keep] * scale).cpu().numpy(), r["labels"][keep].cpu().numpy(),
                                  r["scores"][keep].cpu().numpy())

    @torch.no_grad()
    def matched(self, image_id: int, groups: Sequence[int]) -> tuple[ViewedImage, np.ndarray, GroupAgreement]:
        """With ``groups`` active in one forward, each matched to the ground truth by the run's matcher: the
        image, ``[M, G, 4]`` xyxy pixel boxes of each group's query matched to each object, and their
        :class:`GroupAgreement`."""
        images, pad_mask, targets, viewed = self.batch(image_id)
        outputs = self.model(images, pad_mask, targets, groups=tuple(groups))
        ((query_idx, target_idx),) = self.matcher(outputs, targets)
        h, w = viewed.image.shape[:2]
        boxes = cxcywh_to_xyxy(outputs["pred_boxes"][0].float()).cpu() * torch.tensor([w, h, w, h])
        per_object = boxes_per_object(boxes, query_idx.cpu(), target_idx.cpu(), len(viewed.gt.labels),
                                      outputs["num_groups"])
        agreement = group_agreement(per_object, torch.as_tensor(viewed.gt.boxes))
        return viewed, per_object.numpy(), agreement

    @property
    def matcher(self):
        """The run's matcher (``build_matcher``: the config's costs and assignment, the task's extra costs)."""
        if not hasattr(self, "_matcher"):
            self._matcher = build_matcher(self.cfg)
        return self._matcher

    def check_groups(self, groups: Sequence[int] | None) -> tuple[int, ...]:
        """``groups`` (default: all K), refused with one line when one does not exist, one repeats, or the run's
        assignment does not match every object once per group."""
        assignment = self.cfg.matcher.assignment
        if ASSIGNMENTS[assignment].match is not match_per_group:
            raise UsageError(f"the query-augmentation figure needs one matched query per group and object "
                             f"(matcher.assignment group or one_to_one); this run's is {assignment}")
        k = self.cfg.model.num_groups
        groups = tuple(range(k)) if groups is None else tuple(int(g) for g in groups)
        bad = [g for g in groups if not 0 <= g < k]
        if bad:
            raise UsageError(f"group {bad[0]} does not exist: the run has num_groups={k}")
        if len(set(groups)) != len(groups):
            raise UsageError(f"groups repeat: {list(groups)}")
        return groups


def _iou(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _caption(viewed: ViewedImage, agreement: GroupAgreement) -> str:
    return (f"image {viewed.image_id}: {len(viewed.gt.labels)} objects\nIoU same object {_iou(agreement.within, 2)}, "
            f"other objects {_iou(agreement.between, 2)}")


def _summary_line(agreement: GroupAgreement, groups: Sequence[int], images: int) -> str:
    within = (f"{_iou(agreement.within, 3)} ({agreement.within_pairs} pairs)" if agreement.within_pairs
              else "n/a (one query per object)")
    return (f"{len(groups)} group{'s' if len(groups) != 1 else ''}, {images} image{'s' if images != 1 else ''}: "
            f"mean IoU of matched boxes of the same object (across groups) {within}, of different objects "
            f"{_iou(agreement.between, 3)} ({agreement.between_pairs} pairs); matched box vs its ground truth "
            f"{_iou(agreement.gt, 3)}")


def agreement_images(ids: Sequence[int], drawn: Sequence[int], which: int | str | None) -> list[int]:
    """The images the pooled agreement is computed over: the ``drawn`` ones (``which`` None), every image of the
    split (``"all"``) or its first ``which`` (one forward each, nothing drawn)."""
    if which is None:
        return list(drawn)
    if which == "all":
        return sorted(ids)
    if isinstance(which, bool) or not isinstance(which, int) or which < 1:
        raise UsageError(f"the agreement's images must be a count >= 1 or 'all', got {which!r}")
    return sorted(ids)[:which]


@dataclass(frozen=True)
class _Matched:
    """The query-augmentation data of some images: ``panels`` of the drawn ones, the pooled agreement over the
    agreement's images (:func:`agreement_images`) and each image's."""

    groups: tuple[int, ...]
    panels: list[QueryPanel]
    pooled: GroupAgreement
    per_image: dict[int, GroupAgreement]

    def summary(self) -> str:
        return _summary_line(self.pooled, self.groups, len(self.per_image))


def _match_images(viewer: _Viewer, groups: Sequence[int] | None, drawn: Sequence[int],
                  over: int | str | None) -> _Matched:
    groups = viewer.check_groups(groups)
    pooled_ids = agreement_images(viewer.val.ids, drawn, over)
    panels, per_image = [], {}
    for image_id in list(dict.fromkeys([*drawn, *pooled_ids])):
        viewed, matched, agreement = viewer.matched(image_id, groups)
        if image_id in pooled_ids:
            per_image[image_id] = agreement
        if image_id in drawn:
            panels.append(QueryPanel(viewed.image, viewed.gt, matched, _caption(viewed, agreement)))
    return _Matched(groups, panels, sum(per_image.values(), GroupAgreement()), per_image)


def query_augmentation_figure(target: str | Path, images: Sequence[int] | None = None, num: int | None = None,
                              groups: Sequence[int] | None = None, overrides: Sequence[str] = (),
                              over: int | str | None = None, title: str | None = None):
    """The query-augmentation figure of the checkpoint of ``target`` (a run dir or a checkpoint file): one
    panel per image (:func:`choose_images`), the agreement of all ``groups`` (default all K) pooled over
    ``over`` (:func:`agreement_images`: default the drawn images) in the title.

    Returns:
        ``(figure, agreement, per_image)``: the matplotlib figure, the pooled :class:`GroupAgreement` and
        ``{image id: GroupAgreement}`` of the images pooled.
    """
    target = Path(target)
    with reading_run(target):
        viewer = _Viewer(target, overrides, None)
        m = _match_images(viewer, groups, choose_images(viewer.val.ids, images, num), over)
    head = title if title is not None else f"{_short(target)}: the query of every group matched to each object"
    fig = plot_query_augmentation(m.panels, viewer.names, f"{head}\n{m.summary()}")
    return fig, m.pooled, m.per_image


def _short(target: Path) -> str:
    """A run's name for a title: its last three path parts (``study/variant/seed``)."""
    return "/".join(Path(target).resolve().parts[-3:])


def visualize_run(target: str | Path, out: str | Path, images: Sequence[int] | None = None, num: int | None = None,
                  score_threshold: float = 0.3, group: int | None = None, groups: Sequence[int] | str | None = None,
                  overrides: Sequence[str] = (), over: int | str | None = None) -> dict:
    """Draw the checkpoint of ``target`` on validation images (:func:`choose_images`) into the folder ``out``.

    Without ``groups``: ``detections_<id>.png`` per image, the evaluated group's (``group``, default
    ``model.eval_group``) detections scoring at least ``score_threshold`` beside the ground truth. With
    ``groups`` (``"all"`` or group indices): ``query_augmentation_<id>.png`` per image and
    ``query_augmentation.json``, the agreement (:class:`GroupAgreement`) pooled over ``over``
    (:func:`agreement_images`) and of each of those images. Returns what was written and the summary.
    """
    from groupdetr.reporting.figures import _png

    target, out = Path(target), Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder for the pictures")
    if not 0.0 <= score_threshold <= 1.0:
        raise UsageError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    written: list[str] = []
    with reading_run(target):
        viewer = _Viewer(target, overrides, group)
        ids = choose_images(viewer.val.ids, images, num)
        if groups is None:
            g = viewer.cfg.model.eval_group
            for image_id in ids:
                viewed, dets = viewer.detections(image_id, score_threshold)
                fig = plot_detections(viewed.image, viewed.gt, dets, viewer.names,
                                      title=f"{_short(target)}: image {image_id}",
                                      pred_title=f"group {g}, score >= {score_threshold:g}")
                written.append(_write(out / f"detections_{image_id}.png", _png(fig)))
            return {"target": str(target), "mode": "detections", "group": g, "score_threshold": score_threshold,
                    "images": ids, "files": written}
        m = _match_images(viewer, None if groups == "all" else groups, ids, over)
        for image_id, panel in zip(ids, m.panels):
            fig = plot_query_augmentation([panel], viewer.names, f"{_short(target)}: {len(m.groups)} groups")
            written.append(_write(out / f"query_augmentation_{image_id}.png", _png(fig)))
    summary = {"target": str(target), "mode": "query_augmentation", "groups": list(m.groups), "images": ids,
               "agreement_images": list(m.per_image), "assignment": viewer.cfg.matcher.assignment,
               "pooled": m.pooled.as_dict(), "per_image": {str(i): a.as_dict() for i, a in m.per_image.items()},
               "summary": m.summary()}
    written.append(_write(out / "query_augmentation.json", (json.dumps(summary, indent=1) + "\n").encode()))
    return {**summary, "files": written}


def _write(path: Path, data: bytes) -> str:
    atomic_write_bytes(path, data)
    return str(path)
