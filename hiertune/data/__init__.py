"""Data layer: loading, validation, caching, splits, outliers, synthetic data, batches."""
