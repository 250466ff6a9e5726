"""verbcal: turn the probabilities an LLM says into probabilities you can trust."""

__version__ = "0.1.0"
