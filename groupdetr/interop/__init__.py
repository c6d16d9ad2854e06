"""Reading other code bases' files into this suite (the authors' checkpoints)."""
