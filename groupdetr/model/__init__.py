"""Conditional DETR with query groups: backbone, encoder, conditional decoder, detector."""
from groupdetr.model.detector import INFERENCE_QUERIES, GroupDETR

__all__ = ["GroupDETR", "INFERENCE_QUERIES"]
