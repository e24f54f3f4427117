"""A sweep: where it lives, Ray Tune + Optuna + ASHA, MLflow records, its state on disk, the front, plots."""
