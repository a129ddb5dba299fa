"""Benchmarks (not tests): the official demos' recipes beside ours, on random models of the real architectures."""
