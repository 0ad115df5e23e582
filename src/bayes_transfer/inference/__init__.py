"""Inference: samplers, schedules, the Bayesian model average, the downstream training loop, methods."""
