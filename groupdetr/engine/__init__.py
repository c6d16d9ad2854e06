"""Training and evaluation engine: run-directory contract, resume, DDP, progress."""
