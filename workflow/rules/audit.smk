# Reproducibility audit against the paper's published numbers.


def audit_targets():
    return []
