"""The options of ``groupdetr bench`` (and of its worker processes) and the typed settings they make, light
enough for the console command to build its parser without importing torch."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

from groupdetr.names import SELF_ATTENTION

__all__ = ["add_bench_args", "BenchSettings"]


@dataclass(frozen=True)
class BenchSettings:
    """What ``groupdetr bench`` measures (the options of :func:`add_bench_args`, typed)."""

    config: str = "cpu_small"
    overrides: tuple[str, ...] = ()
    groups: tuple[int, ...] = (1, 3, 11)
    self_attention: tuple[str, ...] = ("separate", "shared")
    steps: int = 5
    batch_size: int | None = None  # None: the recipe's optim.batch_size
    image_size: int | None = None  # None: the recipe's data.image_size
    objects: int = 10
    device: str = "auto"
    threads: int | None = None
    json: Path | None = None
    no_subprocess: bool = False
    worker: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BenchSettings":
        """The settings of parsed :func:`add_bench_args` options (lists become tuples)."""
        values = {f.name: getattr(args, f.name, f.default) for f in fields(cls)}
        for key in ("overrides", "groups", "self_attention"):
            values[key] = tuple(values[key])
        return cls(**values)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """Add the ``groupdetr bench`` options to ``p``."""
    p.add_argument("--config", "-c", default="cpu_small", help="recipe name or YAML path (default: cpu_small)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, repeatable; K and self_attention are set by the sweep")
    p.add_argument("--groups", type=_positive_int, nargs="+", default=[1, 3, 11], metavar="K",
                   help="numbers of groups K to compare (default: 1 3 11)")
    p.add_argument("--self-attention", nargs="+", choices=list(SELF_ATTENTION), default=["separate", "shared"],
                   help="self-attention strategies to compare (default: separate shared)")
    p.add_argument("--steps", type=_positive_int, default=5, help="timed steps after 1 warm-up step (default: 5)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="images per step (default: optim.batch_size)")
    p.add_argument("--image-size", type=_positive_int, default=None, help="square image side (default: data.image_size)")
    p.add_argument("--objects", type=_positive_int, default=10, help="ground-truth boxes per image (default: 10)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = cuda when available (default: auto)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch.set_num_threads (default: leave)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write all rows as JSON to PATH")
    p.add_argument("--no-subprocess", action="store_true",
                   help="run every configuration in this process (peak RSS is then process-wide, not per config)")
