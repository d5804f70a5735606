"""ssljax: self-supervised and metric-learning methods in pure-functional JAX."""

__version__ = "0.1.0"
