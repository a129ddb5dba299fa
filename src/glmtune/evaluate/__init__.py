"""Evaluation: batched generation on the test split, the demo's metrics, and the comparison of models."""
