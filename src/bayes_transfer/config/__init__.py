"""Config: semantic checks, the paper config's experiments."""
