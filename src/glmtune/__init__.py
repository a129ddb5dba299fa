"""glmtune: fine-tune GLM-family chat models (ChatGLM3-6B, GLM-4-9B-chat) on your own data."""

__version__ = "0.1.0"
