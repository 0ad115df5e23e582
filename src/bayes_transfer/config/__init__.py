"""Config: preparation against the schema (typing, defaults, settings that follow the lists), checks beyond
the schema, the paper config's experiments."""
