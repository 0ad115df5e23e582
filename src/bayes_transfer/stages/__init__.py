"""The stages the workflow calls: pre-train, prior, tune, fit, ablations, landscape, segmentation."""
