"""Data by name: the built-in data sets (``catalog``) and the resolver of every ``DATA`` argument."""

from .catalog import CATALOG, load_dataset

__all__ = ["CATALOG", "load_dataset"]
