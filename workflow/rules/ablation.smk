# Ablations and uncertainty evidence (Figs. 3a-d, 5a/b, 8, 9).


def ablation_targets():
    return []
