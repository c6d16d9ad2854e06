"""Detection metrics: COCO box/mask AP (:mod:`.coco`) and a nuScenes-style 3D metric (:mod:`.det3d`)."""
from groupdetr.evaluation.coco import STAT_NAMES, CocoEvaluator, evaluate_coco, to_coco_results
from groupdetr.evaluation.det3d import Det3DEvaluator, evaluate_3d, yaw_periods_from_categories

__all__ = ["STAT_NAMES", "CocoEvaluator", "evaluate_coco", "to_coco_results", "Det3DEvaluator", "evaluate_3d",
           "yaw_periods_from_categories"]
