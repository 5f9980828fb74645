"""tsda: generative data augmentation for encrypted traffic classification."""

__version__ = "0.1.0"
