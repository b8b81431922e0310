"""Video object segmentation metrics: J, F and J&F as the official DAVIS-2017 toolkit defines them."""

from s3rt.metrics.davis import (
    BOUND_TH,
    GLOBAL_COLUMNS,
    DatasetScores,
    EvaluationError,
    ObjectScores,
    boundary_map,
    disk,
    evaluate_dataset,
    evaluate_sequence,
    f_measure,
    jaccard,
    statistics,
    summarize,
)

__all__ = [
    "BOUND_TH",
    "GLOBAL_COLUMNS",
    "DatasetScores",
    "EvaluationError",
    "ObjectScores",
    "boundary_map",
    "disk",
    "evaluate_dataset",
    "evaluate_sequence",
    "f_measure",
    "jaccard",
    "statistics",
    "summarize",
]
