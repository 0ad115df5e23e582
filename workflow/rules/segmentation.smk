# Segmentation with learned backbone priors (Tables 1, 15, 16).


def segmentation_targets():
    return []
