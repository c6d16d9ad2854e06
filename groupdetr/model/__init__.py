"""Conditional DETR with query groups: backbone, encoder, conditional decoder, detector."""
from groupdetr.model.detector import INFERENCE_QUERIES, ConditionalDETR, GroupDETR

__all__ = ["GroupDETR", "ConditionalDETR", "INFERENCE_QUERIES"]
