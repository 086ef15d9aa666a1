"""Maintenance of a store: gc (reclaim dead shard bytes) and verify (check every row and checksum)."""
