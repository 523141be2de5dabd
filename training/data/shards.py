"""Sharded reading of long-format Parquet (`data.sharded: true`), for data too large for one process's
memory.

The file is scanned in record batches (pyarrow.dataset, only the needed columns); each rank keeps the rows
of its own series, chosen by a stable hash of the series id (`shard_of`), so a rank holds about 1/world
of the data and never the whole table. Validation is held out by the same kind of hash, so it needs no
coordination either. Label names and normalisation statistics are agreed over all ranks
(training/distributed.py), so every rank builds the same model. The test file (`data.test_path`,
required) is read by rank 0 only, in record batches as well.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from training.config import DataConfig
from training.data.dataset import SequenceData, Split
from training.data.splits import label_codes

BATCH_ROWS = 65_536


def shard_of(series_id: object, buckets: int, salt: str = "") -> int:
    """A hash that is the same in every process and every run (Python's hash() is salted per process)."""
    return zlib.crc32(f"{salt}{series_id}".encode()) % buckets


def read_shard(path: Path, columns: list[str] | None, id_column: str, rank: int, world: int,
               batch_rows: int = BATCH_ROWS) -> pd.DataFrame:
    """The rows of this rank's series, read batch by batch."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist (data.path / data.test_path)")
    dataset = ds.dataset(path, format="parquet")
    missing = [c for c in (columns or []) + [id_column] if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {dataset.schema.names}")
    owner: dict[object, bool] = {}
    kept = []
    for batch in dataset.to_batches(columns=columns, batch_size=batch_rows):
        ids = batch.column(id_column)
        for value in pc.unique(ids).to_pylist():
            if value not in owner:
                owner[value] = shard_of(value, world) == rank
        mine = [v for v in pc.unique(ids).to_pylist() if owner[v]]
        if mine:
            kept.append(batch.filter(pc.is_in(ids, value_set=pa.array(mine, type=ids.type))))
    table = pa.Table.from_batches(kept, schema=kept[0].schema) if kept else \
        dataset.schema.empty_table().select(columns or dataset.schema.names)
    return table.to_pandas()


def load_sharded(config: DataConfig, rank: int, world: int) -> SequenceData:
    """This rank's train and validation series; the test split on rank 0 only (empty elsewhere)."""
    from training.data.files import in_training_order, series_from_frame
    from training.distributed import agree_on_labels

    if config.task not in ("classification", "regression"):
        raise ValueError("data.sharded supports data.task classification or regression")
    path, test_path = Path(config.path or ""), config.test_path
    if path.suffix.lower() not in (".parquet", ".pq") or not test_path:
        raise ValueError("data.sharded needs a Parquet data.path and a separate data.test_path")
    frame = read_shard(path, None, config.id_column, rank, world)
    if frame.empty:
        raise ValueError(f"{path}: rank {rank} of {world} got no series; use fewer processes than series")
    train, features = _equal_lengths(series_from_frame(frame, config, path), path)
    ids = sorted(frame[config.id_column].unique())  # read_series orders series by id
    test = Split(np.zeros((0,) + train.X.shape[1:], np.float32), np.array([]))
    if rank == 0:  # only rank 0 evaluates on test
        test_frame = read_shard(Path(test_path), None, config.id_column, 0, 1)
        test = in_training_order(*_equal_lengths(series_from_frame(test_frame, config, Path(test_path)),
                                                 Path(test_path)), features, config)
    X, y, X_test, y_test = train.X, train.y, test.X, test.y
    classify = config.task == "classification"
    labels: list[str] = []
    if classify:
        labels = agree_on_labels({str(v) for v in y})
        y, y_test = label_codes(labels, y), label_codes(labels, y_test)
        if (y_test < 0).any():
            untrained = sorted({str(v) for v in test.y[y_test < 0]})
            raise ValueError(f"{test_path}: label(s) {untrained} appear in no training series of {path}; a "
                             "model answers only the labels it trained on: add training series of those "
                             "labels, or drop them from the test file")
    else:
        y_test = y_test.reshape(len(y_test), -1).astype(np.float32)
    held = np.array([shard_of(i, 1000, salt="val") < 1000 * config.val_fraction for i in ids], dtype=bool)
    return SequenceData(
        task="classification" if classify else "regression",
        train=Split(X[~held], y[~held]), val=Split(X[held], y[held]), test=Split(X_test, y_test),
        feature_names=features, label_names=labels,
        source=f"user file {path}, shard {rank} of {world}", sharded=world > 1,
    )


def _equal_lengths(series: tuple[Split, list[str]], path: Path) -> tuple[Split, list[str]]:
    """Sharded training and evaluation read whole arrays (training/distributed.py): no ragged series."""
    split = series[0]
    if split.ragged:
        raise ValueError(f"{path}: data.sharded needs series of equal length (these have "
                         f"{split.lengths.min()} to {split.lengths.max()} steps); read ragged files "
                         "without data.sharded")
    return series
