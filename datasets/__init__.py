"""Data import: the CSV/JSONL interaction and feature formats, MovieLens and synthetic data."""

from shelfrank.datasets.readers import read_features, read_interactions
from shelfrank.datasets.records import FeatureTable, Interactions, ReadReport, RowError
from shelfrank.datasets.writers import write_features, write_interactions

__all__ = [
    "FeatureTable",
    "Interactions",
    "ReadReport",
    "RowError",
    "read_features",
    "read_interactions",
    "write_features",
    "write_interactions",
]
