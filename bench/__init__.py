"""Benchmarks that print measured speed as a ratio of its limit (see DESIGN.md, "Performance")."""
