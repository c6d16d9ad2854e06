"""Pictures of a run's predictions (``groupdetr visualize``), one concern per module:

- :mod:`groupdetr.visualization.query_groups`: pure functions, the box of every group's query matched to each
  ground-truth object and how much those boxes agree (:func:`group_agreement`).
- :mod:`groupdetr.visualization.draw`: matplotlib drawing of detections and of the query-augmentation figure
  (torch-free, numpy in).
- :mod:`groupdetr.visualization.run`: a run's checkpoint loaded as evaluation loads it, forwards on chosen
  validation images, the pictures written (torch).
"""
