"""The audit: claims with paired tests, cells against the paper, reference data."""
