"""Datasets and data utilities (the embedded sklearn-digits tasks, class-balanced subsampling)."""
