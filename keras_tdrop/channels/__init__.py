"""Channel dependency graph: which channels of which weights go together."""
