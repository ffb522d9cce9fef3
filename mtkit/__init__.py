"""mtkit: train machine-translation Transformers from raw parallel text to a BLEU score."""

__version__ = "0.1.0"
