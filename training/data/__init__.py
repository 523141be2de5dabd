"""Datasets as arrays: built-in UCR/UEA sets shipped in aeon, and the user's own CSV/Parquet/NPZ files."""

from training.data.dataset import SequenceData, Split, load_data

__all__ = ["SequenceData", "Split", "load_data"]
