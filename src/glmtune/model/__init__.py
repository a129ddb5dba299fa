"""Model folders: original-checkpoint conversion, tokenizers, remote code, the tiny default model."""
