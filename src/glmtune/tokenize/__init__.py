"""Tokenize stage: conversations to token ids and loss masks with the family's chat template, as Arrow splits."""
