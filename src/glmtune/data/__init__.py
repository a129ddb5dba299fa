"""Data preparation: source formats, cleaning, conversion, splitting. Imports no torch, and nothing from model, train or evaluate."""
