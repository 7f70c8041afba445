"""`make bench`: the pipeline measured against the emulator (scripts/bench.py is the command)."""
