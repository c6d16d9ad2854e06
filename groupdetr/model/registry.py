"""The decoders (``model.decoder``) and the encoders they read, by name; ``groupdetr.names`` lists the
same names for config validation (``tests/test_names.py`` checks that they agree).

A decoder class declares ``encoder_kind`` (a key of :data:`ENCODERS`), ``from_config(model_cfg)``,
``supports_denoising``, ``query_dim`` and ``d_model``; an encoder class ``from_config``,
``input_projection(backbone)`` and ``encode(proj, features, pad_mask, extra_pos) -> Memory``.
"""
from __future__ import annotations

from groupdetr.model.deformable_decoder import DABDeformableDecoder, DINODecoder
from groupdetr.model.deformable_encoder import DeformableEncoder
from groupdetr.model.transformer import ConditionalDecoder, DABDecoder, Encoder

__all__ = ["DECODERS", "ENCODERS"]

#: ``model.decoder`` -> decoder class
DECODERS = {"conditional": ConditionalDecoder, "dab": DABDecoder, "dab_deformable": DABDeformableDecoder,
            "dino": DINODecoder}

#: a decoder's ``encoder_kind`` -> encoder class: one level (DETR's) or several (Deformable DETR's)
ENCODERS = {"standard": Encoder, "deformable": DeformableEncoder}
