"""Learned SWAG priors for Bayesian transfer learning (Shwartz-Ziv et al., NeurIPS 2022)."""

__version__ = "0.1.0"
