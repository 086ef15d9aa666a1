"""File I/O: shard writer and reader, the single-writer lock, crash points for the crash tests."""
