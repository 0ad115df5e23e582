"""The reproducibility audit. ``settings`` (the config's audit section, metric units), ``stats`` (paired t-test,
verdict rules, Holm, how parts combine), ``extract`` (run values, pairs, provenance), ``claims`` and
``ablation_claims`` (C1-C11), ``cells`` (our cells beside the paper's), ``render`` (pages), ``run`` (read, run,
write), ``power`` (power of the paired test) and ``reference`` (published numbers and verdicts)."""
