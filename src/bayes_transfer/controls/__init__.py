"""The pipeline's positive and negative controls (issue 12, item 2): a synthetic transfer task whose learned
prior carries, by construction, the information the downstream task needs (positive) or not (negative), run
through the library's own stages and judged by the audit's own claim code. See docs/controls.md.

Modules: :mod:`~bayes_transfer.controls.task` (the seeded task generator), :mod:`~bayes_transfer.controls.model`
(the linear control network), :mod:`~bayes_transfer.controls.registry` (the stages see both inside a ``with``
block), :mod:`~bayes_transfer.controls.subspace` (where the prior's variance lies: the known answer),
:mod:`~bayes_transfer.controls.run` (one control end to end, and C3/C4/C10 on its runs),
:mod:`~bayes_transfer.controls.standalone` (``python -m bayes_transfer.controls``: both controls, measured).
"""
