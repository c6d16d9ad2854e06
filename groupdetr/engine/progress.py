"""Progress: tqdm bars with ETA on a terminal, plain periodic log lines otherwise (workflow logs)."""
from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator

from tqdm import tqdm

__all__ = ["progress"]

log = logging.getLogger("groupdetr.engine")


def progress(items: Iterable, total: int, desc: str, every: int, enabled: bool = True) -> Iterator:
    """Yield ``items``; show a tqdm bar when stderr is a terminal, else log ``desc [i/total] ... eta``
    every ``every`` items (and at the end). ``enabled=False`` (non-main ranks) shows nothing."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, total=total, desc=desc, dynamic_ncols=True, leave=False)
        return
    start = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        if i % every == 0 or i == total:
            elapsed = time.perf_counter() - start
            eta = elapsed / i * (total - i)
            log.info("%s [%d/%d] %.1f s elapsed, eta %.0f s", desc, i, total, elapsed, eta)
