"""Source objectives (supervised, SimCLR) and pre-training."""
