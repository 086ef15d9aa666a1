"""Compiling: scanning sources, planning incremental work, running callbacks (here, in processes), writing."""
