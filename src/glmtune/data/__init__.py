"""Data preparation: source formats, cleaning, conversion, splitting, chat templates, tokenizing. Imports no torch."""
