"""The peers of issue 13, set up for the benchmarks: see run.py."""
