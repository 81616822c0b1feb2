"""The package version (written into every shard's metadata); `radretrieve.__version__` re-exports it."""

__version__ = "0.1.0"
