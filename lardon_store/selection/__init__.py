"""Selections: columnar sets of entries read as numpy indexing on memory maps, with batching and transforms."""
