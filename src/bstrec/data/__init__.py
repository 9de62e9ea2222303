"""Data layer: readers, the in-memory Dataset, caches, splits and batches."""
