"""Models: ResNets with torchvision parameter names, checkpoints."""
