"""Reporting: the paper's reported numbers and our gathered studies, side by side.

- :mod:`groupdetr.reporting.paper`: the paper's numbers (``results/paper/``) in the shapes of its tables,
  and joins with ours (Table 7, Tables 3-4).
- :mod:`groupdetr.reporting.study`: one study's run directories -> long table, mean ± CI, effects,
  paper-style tables and figures (``groupdetr gather``).
- :mod:`groupdetr.reporting.notebooks`: headless execution of ``notebooks/`` (``groupdetr notebook``).
"""

__all__ = ["GatherError"]


class GatherError(ValueError):
    """A run, file or value the gatherer needs is missing or inconsistent; one line naming the path.

    Defined here (re-exported by :mod:`groupdetr.reporting.study`) so that the console command can
    catch it without importing pandas and scipy for every subcommand.
    """
