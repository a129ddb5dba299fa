"""Shared test helpers: reference implementations, tiny models, a local SLURM cluster."""
