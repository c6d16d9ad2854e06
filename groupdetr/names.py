"""The names of every registry, in one torch-free module.

The config validates its enum fields against these tuples, so reading a recipe never imports the modules
that implement the names (torch, torchvision, pycocotools). Each registry is keyed by exactly the names
here, in this order; ``tests/test_names.py`` imports every registry and checks that they agree, so a name
added in one place and not the other fails the suite.
"""
from __future__ import annotations

__all__ = ["BACKBONES", "SELF_ATTENTION", "ISOLATING_SELF_ATTENTION", "ASSIGNMENTS", "SINGLE_GROUP_ASSIGNMENTS", "COCO_BACKENDS", "TASKS",
           "DECODERS", "ANCHOR_DECODERS", "DECODER_TASKS", "INITS", "DN_SHARING", "DATASETS", "BY_PATHS", "AUGMENTATIONS", "AUTO_AUGMENTATION",
           "DATASET_AUGMENTATION", "FIGURE_KINDS", "DEVICES", "MODEL_PARTS"]

#: ``model.backbone.name``: :data:`groupdetr.model.backbone.BACKBONES`
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "small_cnn")
#: ``model.self_attention``: :data:`groupdetr.model.attention.SELF_ATTENTION`
SELF_ATTENTION = ("separate", "shared")
#: the self-attentions under which no query sees another group's: evaluating every group in one forward
#: then gives each group's predictions exactly as when it runs alone
ISOLATING_SELF_ATTENTION = ("separate",)
#: ``matcher.assignment``: :data:`groupdetr.matcher.ASSIGNMENTS`
ASSIGNMENTS = ("one_to_one", "group", "naive_one_to_many")
#: the assignments valid with one group only (``Assignment.requires_single_group``)
SINGLE_GROUP_ASSIGNMENTS = ("one_to_one",)
#: ``train.eval_backend``: :data:`groupdetr.evaluation.coco.BACKENDS`
COCO_BACKENDS = ("pycocotools", "faster_coco_eval")
#: ``model.task``: :data:`groupdetr.tasks.TASKS`
TASKS = ("detection", "instance_segmentation", "detection_3d")
#: ``model.decoder``: :data:`groupdetr.model.registry.DECODERS`
DECODERS = ("conditional", "dab", "dab_deformable", "dino")
#: the decoders whose queries are anchor boxes (they take DN-DETR's denoising queries)
ANCHOR_DECODERS = ("dab", "dab_deformable", "dino")
#: decoders that support only some tasks (DINO: its encoder proposals are scored on boxes alone, for now)
DECODER_TASKS = {"dino": ("detection",)}
#: ``model.init``: :data:`groupdetr.model.transformer.INITS`
INITS = ("authors", "pytorch")
#: ``model.denoising.sharing``: one set of denoising queries per active group, or one set for all
#: (:meth:`groupdetr.model.detector.Detector` reads it; no registry)
DN_SHARING = ("per_group", "shared")
#: ``data.dataset``, ``pretrain.dataset``: the layouts of :data:`groupdetr.data.coco.LAYOUTS` (a root holding
#: both splits in a fixed layout), then :data:`BY_PATHS`
DATASETS = ("coco", "synth", "coco_json")
#: the dataset read from four paths (``data.train_images``, ``data.train_annotations``, ``data.val_images``,
#: ``data.val_annotations``) instead of a root and a layout: any COCO-format dataset
BY_PATHS = "coco_json"
#: ``data.augmentation``: :data:`groupdetr.data.transforms.PRESETS`
AUGMENTATIONS = ("detr", "synth", "none")
#: the value of ``data.augmentation`` that takes the dataset's own, :data:`DATASET_AUGMENTATION`
AUTO_AUGMENTATION = "auto"
#: each dataset's augmentation under ``data.augmentation: auto``: DETR's for COCO and for a user's COCO-format
#: dataset (scaled to ``data.image_size``), the light one the embedded benchmark was measured with
DATASET_AUGMENTATION = {"coco": "detr", "synth": "synth", "coco_json": "detr"}
#: the figure kinds a study may ask for (``figures:`` of ``workflows/config/studies.yaml``, validated by
#: :mod:`groupdetr.studies`): :data:`groupdetr.reporting.figures.FIGURES`
FIGURE_KINDS = ("ap_vs_k", "ap_vs_epoch", "per_group_ap", "instability", "variants", "comparisons", "query_augmentation")
#: ``device``: the names :func:`groupdetr.engine.distributed.resolve_device` resolves (``auto``: CUDA when
#: present, else CPU); whether CUDA is there is checked when training or evaluation starts, not when reading
DEVICES = ("auto", "cpu", "cuda")
#: the parts of a detector that ``model.init_from.parts`` loads and ``train.freeze`` freezes: the top-level
#: modules of :class:`groupdetr.model.detector.GroupDETR`, each named as the model names it (so a part is the
#: prefix of its keys in a checkpoint's state dict), in the order of the data flow. ``head`` exists only for a
#: task with a head (masks, 3D boxes), ``label_embed`` only with denoising queries; ``tests/test_parts.py``
#: checks that every model's modules are these names. What the paper calls the encoder side of Conditional
#: DETR (Table 1) is ``backbone``, ``input_proj`` and ``encoder``; the decoder side ``query_embed``,
#: ``decoder``, ``class_embed``, ``bbox_embed`` (and ``head``, ``label_embed`` where present).
MODEL_PARTS = ("backbone", "input_proj", "encoder", "query_embed", "label_embed", "decoder", "class_embed", "bbox_embed",
               "head")
