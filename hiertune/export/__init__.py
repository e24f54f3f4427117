"""Exporting front points: retraining, the exported model directory, predictions, the MLflow flavour."""
