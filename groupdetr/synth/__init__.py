"""The embedded benchmark: procedurally rendered 3D scenes with boxes, masks and 3D labels."""
