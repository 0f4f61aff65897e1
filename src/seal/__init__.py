"""seal: a language model that adapts itself to new material, one checked and versioned LoRA update at a time."""

__version__ = "0.1.0"
