"""Reporting: the paper's reported numbers in the shapes the tables need (and, later, ours beside them)."""
