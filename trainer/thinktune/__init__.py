"""thinktune: fine-tune Qwen3 thinking models on Chinese domain markdown."""

__version__ = "0.1.0"
