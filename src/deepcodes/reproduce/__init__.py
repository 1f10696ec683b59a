"""Reproductions of the papers' comparisons: each module's ``run(out_dir, quick, seeds, progress)``
writes a markdown table, a JSON file and plots, and returns ``{"table": markdown, ...}``."""
