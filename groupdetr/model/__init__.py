"""Conditional DETR with query groups: backbone, encoder, conditional decoder, detector."""
from groupdetr.model.detector import INFERENCE_QUERIES, ConditionalDETR

__all__ = ["ConditionalDETR", "INFERENCE_QUERIES"]
