"""The long format, one row per (series, time step), read from CSV or Parquet into zero-padded arrays
with each series' true length. Series may have different lengths; rows may come in any order.

Each problem is refused with the file, the series (and step) and the fix: a missing column, an empty
series id or step, a non-numeric feature value, two rows for one step, a step missing inside a series
(integer steps must be evenly spaced; dates and fractional steps may not jump more than 1.5x their spacing),
an empty label, a label that changes within a series (tagging
aside); NaN and infinities go through training/data/missing.py.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.config import DataConfig
from training.data.missing import check_finite

ORDER = "\x00time order"  # a column no file has: each row's time as it sorts
MAX_SPACING = 1.5  # a date or fractional step further from the previous one than this x the series' spacing


@dataclass
class LongSeries:
    ids: np.ndarray  # (N,) series ids in sorted order
    X: np.ndarray  # (N, T, F) float32, zero-padded after each length
    lengths: np.ndarray  # (N,) int64
    targets: np.ndarray  # (N,) each series' target value; tagging: (N, T) step labels, None after each
    # length; empty when no target was asked for
    steps: list[np.ndarray]  # each series' step values, in order


def read_table(path: Path, labels: str | None = None, ids: str | None = None) -> pd.DataFrame:
    """`labels`: a CSV column of class names, read as written ("007" stays "007", "None" and "NA" are
    names), only an empty cell empty. `ids`: the series id column, see _ids."""
    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist (data.path / data.test_path)")
    if path.suffix.lower() == ".csv":  # DATA.CSV (Windows) too, as gru predict reads it
        try:
            as_text = {column: str for column in (labels, ids) if column}
            frame = pd.read_csv(path, converters=as_text or None, skipinitialspace=True,
                                index_col=False if _comma_at_line_ends(path) else None)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: the file is empty; write a header row and one row per series and "
                             "step") from None
        except UnicodeDecodeError as exc:
            byte = exc.object[exc.start]
            raise ValueError(f"{path}: not UTF-8 text (byte {byte:#04x} at position {exc.start}); save it as "
                             "UTF-8 (Excel: 'CSV UTF-8'), uncompressed") from None
        frame.columns = [c.strip() if isinstance(c, str) else c for c in frame.columns]  # "a , b" headers
        nothing = [c for c in frame.columns if str(c).startswith("Unnamed: ") and frame[c].isna().all()]
        frame = frame.drop(columns=nothing)  # a comma at the end of every line: neither name nor value
        if labels in frame.columns:
            frame[labels] = frame[labels].mask(frame[labels] == "")
        if ids in frame.columns and ids != labels:
            frame[ids] = _ids(frame[ids])
        _refuse_other_separators(frame, path)
    elif path.suffix.lower() in {".parquet", ".pq"}:
        try:
            frame = pd.read_parquet(path)
        except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{path}: not a Parquet file that can be read ({exc})") from None
        if any(name is not None for name in frame.index.names):  # df.set_index(...).to_parquet(path)
            # keeps the index, which pandas reads back as the index: before, its series_id and step were
            # 'missing' (a forecast's date index was ignored, its rows taken in file order)
            frame = frame.reset_index()
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv, .parquet or .npz"
                         + OTHER_TYPES.get(path.suffix.lower(), ""))
    if frame.empty:
        raise ValueError(f"{path}: the file has no rows")
    return frame


def _ids(column: pd.Series) -> pd.Series:
    """Series ids read as text: numbers where every one is a number (as pandas reads them, so the series'
    order and the seeded splits stay what they were), else as written. Before, pandas read the ids "NA"
    (Namibia, North America) and "None" as missing, and their rows were refused for having no id."""
    text = column.mask(column == "")
    numbers = pd.to_numeric(text, errors="coerce")
    return numbers if bool((numbers.notna() | text.isna()).all()) else text


OTHER_TYPES = {  # the fix for types users export: before, only '.csv, .parquet or .npz'
    ".tsv": " (tab-separated: pd.read_csv(path, sep='\\t').to_csv(new_path, index=False))",
    ".txt": " (its separator found: pd.read_csv(path, sep=None, engine='python')"
            ".to_csv(new_path, index=False))",
    ".gz": " (a compressed CSV: pd.read_csv(path).to_csv(new_path, index=False))",
    ".zip": " (a compressed CSV: pd.read_csv(path).to_csv(new_path, index=False))",
    ".xlsx": " (Excel: pd.read_excel(path).to_csv(new_path, index=False), or Save As 'CSV UTF-8')",
}


def _comma_at_line_ends(path: Path) -> bool:
    """Rows that end in a comma the header lacks: pandas reads a row one field longer than the header as
    row names first (R's write.table), so it made series_id the index and shifted every column one to the
    left (series_id held the steps, and the file was refused for a gap between two sensor values)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header, row = next(csv.reader(handle), []), next(csv.reader(handle), [])
    return len(row) == len(header) + 1 and row[-1].strip() == ""


ONE_SERIES = "(the whole file)"  # the series id of a file without an id column


def one_series(frame: pd.DataFrame, config: DataConfig, path: Path) -> list[str]:
    """Forecast and tagging files may hold one series in time order, as most exports do: without the id
    column the file is one series; without the step column its rows are in time order (each series'
    rows, in the order they come). Adds the columns to `frame`; returns what was assumed, to print."""
    notes = []
    if config.id_column not in frame.columns:
        frame[config.id_column] = ONE_SERIES
        notes.append(f"data: no {config.id_column!r} column in {path.name}: the file is one series")
    if config.time_column not in frame.columns:
        frame[config.time_column] = np.arange(len(frame))
        notes.append(f"data: no {config.time_column!r} column in {path.name}: its rows are in time order")
    return notes


def _refuse_other_separators(frame: pd.DataFrame, path: Path) -> None:
    """A European Excel's CSV separates with ';' because its decimals are commas: the rewrite must read
    them too (before, the fix named only df.to_csv, and its 0,5 were then 'not a number')."""
    header = str(frame.columns[0])
    for separator, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if len(frame.columns) == 1 and separator in header:
            decimals = ", decimal=','" if separator == ";" else ""
            raise ValueError(f"{path}: the header is one column, {header!r}: the file separates its columns "
                             f"with {name}; write it with commas (pandas: pd.read_csv(path, "
                             f"sep={separator!r}{decimals}).to_csv(new_path, index=False)), or as Parquet")


def feature_columns(frame: pd.DataFrame, config: DataConfig, path: Path, needed: bool = True) -> list[str]:
    """data.feature_columns, or every column but the id, step and target; `needed`: refuse none (a
    forecast's target is an input too, so it needs no other)."""
    required = [config.id_column, config.time_column, config.target_column]
    missing = [c for c in required + (config.feature_columns or []) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)} "
            "(set data.id_column, data.time_column, data.target_column, data.feature_columns)"
        )
    features = config.feature_columns or [c for c in frame.columns if c not in required]
    if not config.feature_columns:
        _refuse_unnamed(features, path)
    if needed and not features:
        raise ValueError(f"{path}: no feature columns besides {required}; add at least one input column")
    twice = sorted({c for c in features if features.count(c) > 1})
    if twice:
        raise ValueError(f"data.feature_columns names {twice} more than once; list each input once")
    if needed and config.target_column in features:  # a forecast reads its target as an input
        raise ValueError(f"data.feature_columns lists {config.target_column!r}, the label/target to learn "
                         "(data.target_column): as an input it would give the model the answer; drop it")
    return features


def by_name(names: list[str], wanted: list[str]) -> list[int] | None:
    """Where each of `wanted` is in `names`, when they are the same columns in another order: a test file's
    columns are matched by name (before, one written with its columns in another order was refused);
    None when they are other columns."""
    return [names.index(name) for name in wanted] if sorted(names) == sorted(wanted) else None


def _refuse_unnamed(features: Sequence[object], path: Path) -> None:
    """A column without a header name: pandas' index, written by df.to_csv(path) (aeon's Uschange.csv has
    one). Read as an input it was the row number: a trend the model leant on, and a feature every request
    had to send."""
    unnamed = [c for c in features if isinstance(c, str) and re.fullmatch(r"Unnamed: \d+", c)]
    if unnamed:
        raise ValueError(
            f"{path}: a column has no name in the header (read as {unnamed[0]!r}): a table's index, as "
            "pandas writes it by default; as an input it would be the row number. Write the file with "
            "df.to_csv(path, index=False), name the column, or list the inputs in data.feature_columns")


def long_to_series(
    frame: pd.DataFrame, config: DataConfig, path: Path, features: list[str], target: str | None,
    per_step: bool = False,
) -> LongSeries:
    """`target`: a column holding one value per series (a label), checked constant; with `per_step`, a
    label on every step (tagging), as (N, T) with None after each length; None: no target."""
    frame, order = _sorted(frame, config, path)
    ids, time = frame[config.id_column].to_numpy(), frame[config.time_column].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    lengths = np.diff(np.r_[starts, len(frame)]).astype(np.int64)
    series_of_row = np.repeat(np.arange(len(starts)), lengths)
    step_of_row = np.arange(len(frame)) - starts[series_of_row]
    row_name = lambda row: _row(ids, time, row, config)  # noqa: E731
    _check_steps(ids, time, series_of_row, config, path)
    _check_spacing(ids, time, order, series_of_row, config, path)
    X = np.zeros((len(starts), int(lengths.max()), len(features)), dtype=np.float32)
    X[series_of_row, step_of_row] = _numeric(frame, features, path, row_name)
    X = check_finite(X, lengths, features, config.missing, str(path),
                     locate=lambda i, t: row_name(int(starts[i] + t)))
    targets = np.empty(0)
    if target:
        _refuse_empty(frame, path, target, row_name)
    if target and per_step:
        targets = np.full(X.shape[:2], None, dtype=object)
        targets[series_of_row, step_of_row] = frame[target].to_numpy()
    elif target:
        targets = _constant(frame, config, path, target, starts)
    return LongSeries(ids[starts], X, lengths, targets, np.split(time, starts[1:]))


def _sorted(frame: pd.DataFrame, config: DataConfig, path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The rows by series, then in time order; and each row's time as it sorts (in_time_order)."""
    for column in (config.id_column, config.time_column):
        empty = frame[column].isna().to_numpy()
        if empty.any():
            raise ValueError(f"{path}: row {int(np.argmax(empty))} (counting data rows from 0) has no "
                             f"{column!r}; every row needs a series id and a step")
    try:
        order = in_time_order(frame[config.time_column]).rename(ORDER)  # parsed once: also checks the spacing
    except ValueError as exc:  # dates in more than one format
        raise ValueError(f"{path}: {exc}") from None
    frame = pd.concat([frame, order], axis=1).sort_values([config.id_column, ORDER], kind="stable")
    return frame.drop(columns=ORDER).reset_index(drop=True), frame[ORDER].reset_index(drop=True)


def in_time_order(steps: pd.Series) -> pd.Series:
    """Steps as they sort in time: numbers as they are; text dates as dates (2024-1-10 after 2024-1-9,
    12/31/2023 before 1/1/2024, Dec 2023 before Jan 2024), other text with its numbers compared as numbers
    (t10 after t9)."""
    if pd.api.types.is_numeric_dtype(steps) or pd.api.types.is_datetime64_any_dtype(steps):
        return steps
    text = steps.astype(str)
    dates = _one_format(text)
    if dates is None and text.str.contains(r"\d{4}").all():  # each value names a year: Jan 2024
        dates = _mixed(text, steps.name)  # one by one (dateutil reads t1 as a date: not without a year)
    if dates is not None:
        return dates
    return text.str.replace(r"\d+", lambda number: number.group().zfill(20), regex=True)


def _one_format(text: pd.Series) -> pd.Series | None:
    """Dates in one format, inferred for the whole column, month first or day first: before, pandas'
    month-first guess failed on 13/01/2021 (Europe's 13 January) and the dates were parsed one by one,
    01/02/2021 as 2 January, and the file was refused for a gap that was not there. Where both readings
    parse (no day past 12), the one whose dates are more evenly spaced wins; month first on a tie."""
    dates = _dates(text, None)
    if dates is not None and re.match(r"\s*\d{4}", text.iloc[0]):  # the year first: never day first
        return dates
    readings = [dates, _dates(text, None, dayfirst=True)]
    return min((dates for dates in readings if dates is not None), key=_unevenness, default=None)


def _unevenness(dates: pd.Series) -> float:
    """The largest gap between distinct dates over the smallest (1.0: evenly spaced)."""
    gaps = np.diff(pd.to_datetime(dates, utc=True).drop_duplicates().sort_values().astype("int64").to_numpy())
    return float(gaps.max() / max(gaps.min(), 1)) if gaps.size else 1.0


def _mixed(text: pd.Series, column: object) -> pd.Series | None:
    """Dates parsed one by one; refused where a value reads as another date day first (the column mixes
    formats: 2020-01-08 and 01/08/2020 would be one day, or two months apart). Dates that start with
    the year are read year, month, day (dateutil reads 2020-01-02 day first as 1 February)."""
    dates, day_first = _dates(text, "mixed"), _dates(text, "mixed", dayfirst=True)
    if dates is None or day_first is None:
        return dates
    ambiguous = ((dates != day_first) & ~text.str.match(r"\s*\d{4}")).to_numpy()
    if not ambiguous.any():
        return dates
    i = int(np.argmax(ambiguous))
    raise ValueError(f"{column} {text.iloc[i]!r} reads as {dates.iloc[i]:%Y-%m-%d} month first or "
                     f"{day_first.iloc[i]:%Y-%m-%d} day first, and the column mixes date formats "
                     f"({text.iloc[0]!r}, ...): write every date in one format, e.g. ISO 2021-01-13")


def _dates(text: pd.Series, format: str | None, dayfirst: bool = False) -> pd.Series | None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dates = pd.to_datetime(text, format=format, dayfirst=dayfirst)
        except (ValueError, TypeError, OverflowError):
            return None
    return None if any("Could not infer format" in str(w.message) for w in caught) else dates


def _row(ids: np.ndarray, time: np.ndarray, row: int, config: DataConfig) -> str:
    return f"series {show(ids[row])}, {config.time_column} {show(time[row])}"


def show(value: object) -> str:
    """A value as a message shows it: text quoted, numbers plain (2, not np.int64(2))."""
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)


def _check_steps(ids: np.ndarray, time: np.ndarray, series_of_row: np.ndarray, config: DataConfig,
                 path: Path) -> None:
    pairs = np.flatnonzero(ids[1:] == ids[:-1])  # rows r whose next row is the same series' next step
    duplicate = pairs[time[pairs + 1] == time[pairs]]
    if duplicate.size:
        raise ValueError(f"{path}: {_row(ids, time, duplicate[0], config)} appears in more than one row; "
                         "keep one row per series and step")
    if not (np.issubdtype(time.dtype, np.integer) and pairs.size):
        return  # non-integer steps (e.g. timestamps as text) only order the rows
    gaps = time[pairs + 1].astype(np.int64) - time[pairs]
    spacing = pd.Series(gaps).groupby(series_of_row[pairs]).transform("min").to_numpy()
    skipped = np.flatnonzero(gaps > spacing)
    if skipped.size:
        row, step = pairs[skipped[0]], spacing[skipped[0]]
        raise ValueError(
            f"{path}: series {show(ids[row])} has no row for {config.time_column} {time[row] + step} "
            f"(it goes {time[row]}, {time[row + 1]}): add the missing row(s), with empty feature cells if "
            "the values are unknown (data.missing fills them), or number the steps 0, 1, 2, ... if nothing "
            "is missing"
        )


def _check_spacing(ids: np.ndarray, time: np.ndarray, order: pd.Series, series_of_row: np.ndarray,
                   config: DataConfig, path: Path) -> None:
    """Dates and fractional steps: a row missing inside a series. Months (28-31 days) and sensor clocks
    (15 or 16 ms) are not exactly even, so a gap counts as missing rows past MAX_SPACING x the series'
    smallest one: a weekly file with its empty weeks dropped (statsmodels' co2) trained as if the weeks
    were consecutive, and found a period of 51 instead of 52. Integer steps: _check_steps, exactly."""
    values = None if np.issubdtype(time.dtype, np.integer) else spaced(order)
    if values is None:
        return  # other text (t1, 1970 Q1) only orders the rows
    dates = pd.api.types.is_datetime64_any_dtype(order)
    pairs = np.flatnonzero(ids[1:] == ids[:-1])
    gaps = values[pairs + 1] - values[pairs]
    spacing = pd.Series(gaps).groupby(series_of_row[pairs]).transform("min").to_numpy()
    skipped = np.flatnonzero(gaps > MAX_SPACING * spacing)
    if not skipped.size:
        return
    row, usual = pairs[skipped[0]], spacing[skipped[0]]
    if dates:  # 7 days, 01:00:00, 00:00:00.015000
        usual = str(pd.Timedelta(int(usual), unit=order.dt.unit))
        usual = usual.removeprefix("0 days ").removesuffix(" 00:00:00")
    else:
        usual = f"{usual:g}"
    raise ValueError(
        f"{path}: series {show(ids[row])} has no row between {config.time_column} {show(time[row])} and "
        f"{show(time[row + 1])}, though its rows are {usual} apart elsewhere: add the missing row(s), with "
        "empty feature cells if the values are unknown (data.missing fills them), or number the steps 0, 1, "
        "2, ... if the rows are consecutive by design (business days, trading hours)"
    )


def spaced(order: pd.Series) -> np.ndarray | None:
    """Steps as in_time_order gives them, as numbers whose differences are their spacing: dates (in their
    unit) and numbers; None for other text, which only orders the rows."""
    if pd.api.types.is_datetime64_any_dtype(order):
        return order.astype("int64").to_numpy()
    return order.to_numpy(np.float64) if pd.api.types.is_numeric_dtype(order) else None


def _numeric(frame: pd.DataFrame, features: list[str], path: Path,
             locate_row: Callable[[int], str]) -> np.ndarray:
    """(rows, F) float32; a text value in a feature column is refused with its series and step."""
    columns = []
    for name in features:
        column = frame[name]
        if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
            # before, a Parquet timestamp column was an input in nanoseconds since 1970, silently
            raise ValueError(f"{path}: {name!r} holds dates or times ({column.dtype}), not numbers; as an "
                             "input it would be nanoseconds since 1970: if it is the step, name it in "
                             "data.time_column, else list the inputs in data.feature_columns")
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = (numbers.isna() & column.notna()).to_numpy()
            if bad.any():
                row = int(np.argmax(bad))
                raise ValueError(
                    f"{path}: {locate_row(row)}: {name!r} is {show(column.iloc[row])}, not a number; feature "
                    "columns hold numbers only (list the inputs in data.feature_columns)"
                    + _thousands(column.iloc[row]))
            column = numbers
        values = column.to_numpy(dtype=np.float64)
        huge = np.isfinite(values) & (np.abs(values) > np.finfo(np.float32).max)
        if huge.any():
            row = int(np.argmax(huge))
            raise ValueError(f"{path}: {locate_row(row)}: {name!r} is {values[row]:g}, beyond the range of "
                             "float32 (3.4e38) that models compute in; rescale the column (e.g. divide it by "
                             "1e30)")
        columns.append(values.astype(np.float32))
    return np.stack(columns, axis=1)


def _thousands(value: object) -> str:
    """The fix for 1,234.5 (thousands separators, a spreadsheet's number format): before, only 'not a
    number'."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d*)?", value.strip()):
        return "; its thousands separators: pd.read_csv(path, thousands=',').to_csv(new_path, index=False)"
    return ""


def _refuse_empty(frame: pd.DataFrame, path: Path, target: str, locate_row: Callable[[int], str]) -> None:
    empty = frame[target].isna().to_numpy()
    if empty.any():
        raise ValueError(f"{path}: {locate_row(int(np.argmax(empty)))} has an empty {target!r} cell; "
                         "every row needs its label/target")


def _constant(frame: pd.DataFrame, config: DataConfig, path: Path, target: str,
              starts: np.ndarray) -> np.ndarray:
    """The target column's one value per series, refused where it changes."""
    values = frame[target]
    counts = values.groupby(frame[config.id_column], sort=True).nunique()
    if (counts > 1).any():
        series = counts.index[int(np.argmax(counts.to_numpy() > 1))]
        seen = values[frame[config.id_column] == series].unique()[:3].tolist()
        raise ValueError(
            f"{path}: series {show(series)} has {int(counts[series])} different values in {target!r} "
            f"({seen}...); the label/target must be the same on every row of a series"
        )
    return values.to_numpy()[starts]
