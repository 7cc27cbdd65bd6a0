"""The evaluation layer: metrics (`metrics`), and a model's outputs turned into predictions,
scores and prediction-file rows (`predictions`, `compute_metrics`, `submission_rows`)."""

from pasta_cli.eval.predictions import compute_metrics, predictions, submission_rows

__all__ = ["compute_metrics", "predictions", "submission_rows"]
