"""Pictures of a run's predictions, drawn with matplotlib's object API (no pyplot state, no GUI; Agg PNG).

Torch-free: everything arrives as numpy arrays in image pixels (``xyxy``). Images of the embedded benchmark
are 64 px, so every panel is drawn a few inches wide with nearest-neighbour upscaling and the boxes as
vector lines on top: the pixels stay honest and the labels stay legible.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from groupdetr.reporting.figures import _figure  # the study figures' canvas: constrained layout, 120 dpi

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Detections", "QueryPanel", "plot_detections", "plot_query_augmentation"]

PANEL_INCHES = 3.6  # a 64 px image becomes ~430 px at the figure's 120 dpi


@dataclass(frozen=True)
class Detections:
    """Boxes of one image in pixels: ``boxes`` [D, 4] xyxy, ``labels`` [D] category ids, ``scores`` [D] (None for
    ground truth)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None


@dataclass(frozen=True)
class QueryPanel:
    """One image of the query-augmentation figure: ``image`` [H, W, 3] uint8, its ground truth ``gt`` and
    ``matched`` [M, G, 4] xyxy, the box of each group's query matched to each object (NaN: unmatched);
    ``caption`` under the panel."""

    image: np.ndarray
    gt: Detections
    matched: np.ndarray
    caption: str = ""


def _show(ax: Axes, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    # extent: pixel edges at integer coordinates, as the boxes' xyxy are
    ax.imshow(image, interpolation="nearest", extent=(0, w, h, 0))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _class_color(label: int) -> str:
    return f"C{int(label) % 10}"


def _box(ax: Axes, box, color: str, lw: float, ls: str = "-", alpha: float = 1.0, zorder: float = 2) -> None:
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=lw, ls=ls, alpha=alpha,
                           zorder=zorder))


TAG_POINTS = 6  # font size of the labels on boxes


class _Tags:
    """The labels of one panel, each above the top-left corner of its box; a label that would cover one already
    placed (two predictions of one object) is lifted by a line until it does not."""

    def __init__(self, ax: Axes, image: np.ndarray):
        h, w = image.shape[:2]
        points = PANEL_INCHES * 72  # a panel's side in points
        self.ax, self.char, self.line = ax, w * 0.62 * TAG_POINTS / points, h * 1.5 * TAG_POINTS / points
        self.placed: list[tuple[float, float, float]] = []  # (left, right, bottom) in data units

    def add(self, box, text: str, color: str) -> None:
        x, y = float(box[0]), float(box[1])
        right = x + self.char * (len(text) + 1)
        while any(x < r and l < right and abs(y - b) < self.line for l, r, b in self.placed):
            y -= self.line
        self.placed.append((x, right, y))
        self.ax.text(x, y, text, fontsize=TAG_POINTS, color="white", va="bottom", ha="left", zorder=5,
                     bbox={"facecolor": color, "alpha": 0.8, "pad": 0.8, "lw": 0}, clip_on=True)


def _name(class_names: Mapping[int, str], label) -> str:
    return class_names.get(int(label), str(int(label)))


def plot_detections(image: np.ndarray, gt: Detections, pred: Detections, class_names: Mapping[int, str],
                    title: str = "", pred_title: str = "predictions") -> Figure:
    """Ground truth (left) and predictions (right) of one image, side by side; boxes coloured by class, with
    the class name (and score) on each, the ground truth also dashed under the predictions."""
    fig = _figure(2 * PANEL_INCHES, PANEL_INCHES + 0.5)
    left, right = fig.subplots(1, 2)
    _show(left, image)
    tags = _Tags(left, image)
    for box, label in zip(gt.boxes, gt.labels):
        _box(left, box, _class_color(label), 1.6)
        tags.add(box, _name(class_names, label), _class_color(label))
    left.set_title(f"ground truth ({len(gt.boxes)} objects)", fontsize=9)
    _show(right, image)
    for box in gt.boxes:
        _box(right, box, "white", 1.0, ls="--", alpha=0.7, zorder=1)
    tags = _Tags(right, image)
    for i in np.argsort(-pred.scores, kind="stable"):  # the most confident keeps its label's place
        c = _class_color(pred.labels[i])
        _box(right, pred.boxes[i], c, 1.6, zorder=2 + float(pred.scores[i]))
        tags.add(pred.boxes[i], f"{_name(class_names, pred.labels[i])} {pred.scores[i]:.2f}", c)
    right.set_title(f"{pred_title} ({len(pred.boxes)}; ground truth dashed)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _object_color(index: int) -> str:
    from matplotlib import colormaps

    return colormaps["tab10"](index % 10)


def plot_query_augmentation(panels: Sequence[QueryPanel], class_names: Mapping[int, str], title: str = "") -> Figure:
    """The query-augmentation figure: per image, every ground-truth object (dashed, with its class) and the
    boxes of the queries of every group matched to it (thin, same colour, centre dotted), one colour per
    object. Queries of different groups matched to one object landing on top of each other is the picture
    of the paper's "automatically-learned object query augmentation"."""
    if not panels:
        raise ValueError("no image to draw")
    n = len(panels)
    fig = _figure(n * PANEL_INCHES, PANEL_INCHES + 0.9)
    axes = np.atleast_1d(fig.subplots(1, n))
    for ax, panel in zip(axes, panels):
        _show(ax, panel.image)
        tags = _Tags(ax, panel.image)
        for m, (gt_box, label) in enumerate(zip(panel.gt.boxes, panel.gt.labels)):
            color = _object_color(m)
            boxes = panel.matched[m]
            boxes = boxes[~np.isnan(boxes).any(-1)]
            for box in boxes:
                _box(ax, box, color, 0.9, alpha=0.85, zorder=3)
            if len(boxes):
                ax.scatter((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2, s=4, color=color,
                           zorder=4, lw=0)
            _box(ax, gt_box, "white", 2.6, zorder=2)  # a light halo under the dashed ground truth
            _box(ax, gt_box, color, 1.6, ls="--", zorder=2)
            tags.add(gt_box, _name(class_names, label), color)
        ax.set_title(panel.caption, fontsize=8)
    key = "dashed: ground truth; thin: the box of each group's matched query (dot: its centre); one colour per object"
    lines = [*title.splitlines(), key] if title else [key]
    width = int(55 * n * PANEL_INCHES / 3.6)  # characters of 8 pt text across the figure
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in lines), fontsize=8)
    return fig

