"""Reporting: the paper's reported numbers and our gathered studies, side by side.

- :mod:`groupdetr.reporting.paper`: the paper's numbers (``results/paper/``) in the shapes of its tables.
- :mod:`groupdetr.reporting.versus`: those tables joined with our gathered runs (Table 7 by each variant's
  ``paper_row``, Tables 3-4 by detector, backbone and epochs). The paper's *deltas* are each study's
  ``comparisons:`` (``workflows/config/studies.yaml``), written beside our effects into ``comparisons.csv``.
- :mod:`groupdetr.reporting.study`: one study's run directories -> long table, mean ± CI, effects,
  paper-style tables and figures (``groupdetr gather``); it re-exports, one concern each,
  :mod:`~groupdetr.reporting.runs` (the long table), :mod:`~groupdetr.reporting.stats`,
  :mod:`~groupdetr.reporting.tables` (and the gathered README), :mod:`~groupdetr.reporting.figures` (the
  figure kinds' registry) and :mod:`~groupdetr.reporting.gather` (the atomic output folder, readers).
- :mod:`groupdetr.reporting.notebooks`: headless execution of ``notebooks/`` (``groupdetr notebook``).
"""

from groupdetr.errors import GatherError  # re-exported: groupdetr.reporting.GatherError

__all__ = ["GatherError"]
