"""Results: metrics, tidy tables and summaries, figures."""
