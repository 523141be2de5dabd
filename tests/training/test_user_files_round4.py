"""Red team round 4 of users' own files, written as users export them (pandas defaults, Excel, European
dates) from public data: aeon's BasicMotions, GunPoint and Airline, statsmodels' co2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import DataConfig
from training.data import load_data


def _motions(series: int = 24, steps: int = 12) -> pd.DataFrame:
    """BasicMotions' first series, two accelerometer axes, in the long layout."""
    from aeon.datasets import load_basic_motions

    X, y = load_basic_motions(split="train")
    rows = [{"series_id": f"s{i:02d}", "step": t, "acc_x": X[i, 0, t], "acc_y": X[i, 1, t], "label": y[i]}
            for i in range(series) for t in range(steps)]
    return pd.DataFrame(rows)


def _classify(path: Path, **settings: object) -> DataConfig:
    return DataConfig(dataset="file", path=str(path), task="classification", **settings)


def test_labels_with_spaces_around_them_are_one_class(tmp_path: Path) -> None:
    """Before: 'standing ' (a trailing space typed into some cells) and 'standing' were two classes, and
    a test file's 'standing' matched only one of them; now the spaces are not part of the label. Nor
    is the way an accent is typed: 'équilibre' composed and decomposed (macOS) were two classes."""
    frame = _motions()
    spaced = frame.assign(label=np.where(frame.series_id.str[-1].isin(["1", "3"]), frame.label + " ",
                                         frame.label))
    spaced.to_csv(tmp_path / "train.csv", index=False)
    frame.to_parquet(tmp_path / "test.parquet")
    data = load_data(_classify(tmp_path / "train.csv", test_path=str(tmp_path / "test.parquet")))
    assert data.label_names == sorted(set(frame.label))
    assert len(np.unique(data.test.y)) == len(data.label_names) == 3
    accents = {"standing": "\u00e9quilibre", "walking": "e\u0301quilibre", "running": "course"}  # NFC, NFD
    frame.assign(label=frame.label.map(accents)).to_csv(tmp_path / "accents.csv", index=False)
    assert load_data(_classify(tmp_path / "accents.csv")).label_names == ["course", "\u00e9quilibre"]


@pytest.mark.parametrize("form", ["%d/%m/%Y", "%d.%m.%Y"])
def test_day_first_dates_read_as_the_days_they_are(tmp_path: Path, form: str) -> None:
    """statsmodels' co2 (weekly) and aeon's Airline (monthly, always the 1st) as Europe writes dates.
    Before: co2's 12/04/1958 was read as 4 December and the file refused for a gap between 05/04/1958
    and 12/04/1958; Airline's 01/02/1949 (1 February) was 2 January, a gap after 01/12/1949."""
    from aeon.datasets import load_airline
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data.head(160).interpolate()
    pd.DataFrame({"date": weekly.index.strftime(form), "co2": weekly.co2}).to_csv(tmp_path / "w.csv",
                                                                                   index=False)
    months = pd.date_range("1949-01-01", periods=144, freq="MS").strftime(form)
    pd.DataFrame({"month": months, "passengers": load_airline()}).to_csv(tmp_path / "m.csv", index=False)
    for name, time, target, values in (("w.csv", "date", "co2", weekly.co2),
                                       ("m.csv", "month", "passengers", load_airline())):
        data = load_data(DataConfig(dataset="file", path=str(tmp_path / name), task="forecast",
                                    time_column=time, target_column=target, window=8, horizon=4))
        assert np.allclose(data.train.X[0, :, 0], np.asarray(values)[:8])  # the first 8 steps, in order
    assert load_data(DataConfig(dataset="file", path=str(tmp_path / "m.csv"), task="forecast",
                                time_column="month", target_column="passengers")).seasonal_period == 12


def test_a_column_of_dates_in_two_formats_is_refused_with_both_readings(tmp_path: Path) -> None:
    """ISO dates, then (after a change of spreadsheet) day-first ones. Before: 01/08/2020 was read as 8
    January, the same day as 2020-01-08, and the refusal said the rows were '00:00:00 apart'."""
    days = pd.date_range("2020-01-01", periods=300, freq="D")
    text = np.where(np.arange(300) < 200, days.strftime("%Y-%m-%d"), days.strftime("%d/%m/%Y"))
    pd.DataFrame({"date": text, "sales": np.arange(300.0) % 7}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(ValueError, match=r"d\.csv: date '01/08/2020' reads as 2020-01-08 month first or "
                                         r"2020-08-01 day first, and the column mixes date formats "
                                         r".*write every date in one format"):
        load_data(DataConfig(dataset="file", path=str(tmp_path / "d.csv"), task="forecast",
                             time_column="date", target_column="sales"))


def test_a_parquet_timestamp_beside_the_step_is_refused_not_read_in_nanoseconds(tmp_path: Path) -> None:
    """Before: a datetime64 column was an input, 1.7e18 nanoseconds since 1970 (a CSV's text dates are
    refused as not numbers)."""
    frame = _motions()
    frame["recorded"] = pd.Timestamp("2024-05-01", tz="UTC") + pd.to_timedelta(frame.step, unit="s")
    frame.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"'recorded' holds dates or times \(datetime64\[.*, UTC\]\), not "
                                         r"numbers.*data\.time_column.*data\.feature_columns"):
        load_data(_classify(tmp_path / "m.parquet"))
    data = load_data(_classify(tmp_path / "m.parquet", feature_columns=["acc_x", "acc_y"]))
    assert data.feature_names == ["acc_x", "acc_y"]


def test_a_test_file_with_its_columns_in_another_order_is_read_by_name(tmp_path: Path) -> None:
    """Before: refused, 'the test file needs the same input columns in the same order' (pandas keeps a
    merge's column order; gru predict already matched features by name)."""
    from aeon.datasets import load_airline

    from training.data.shards import load_sharded

    frame = _motions()
    test = frame.series_id.isin(["s01", "s05", "s09", "s13", "s17", "s21"])
    frame[~test].to_csv(tmp_path / "train.csv", index=False)
    frame[test][["label", "acc_y", "step", "acc_x", "series_id"]].to_csv(tmp_path / "test.csv", index=False)
    data = load_data(_classify(tmp_path / "train.csv", test_path=str(tmp_path / "test.csv")))
    first = frame[frame.series_id == "s01"][["acc_x", "acc_y"]].to_numpy(np.float32)
    assert data.feature_names == ["acc_x", "acc_y"] and np.array_equal(data.test.X[0], first)
    frame[~test].to_parquet(tmp_path / "train.parquet")  # sharded: before, read in the test file's order
    frame[test][["label", "acc_y", "step", "acc_x", "series_id"]].to_parquet(tmp_path / "test.parquet")
    sharded = load_sharded(_classify(tmp_path / "train.parquet", test_path=str(tmp_path / "test.parquet"),
                                     sharded=True), 0, 1)
    assert np.array_equal(sharded.test.X[0], first)
    frame[test].rename(columns={"acc_y": "gyro_y"}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match=r"other\.parquet has features \['acc_x', 'gyro_y'\] but"):
        load_sharded(_classify(tmp_path / "train.parquet", test_path=str(tmp_path / "other.parquet"),
                               sharded=True), 0, 1)
    months = pd.DataFrame({"month": pd.date_range("1949-01-01", periods=144, freq="MS").strftime("%Y-%m"),
                           "passengers": load_airline(), "month_of_year": np.arange(144) % 12})
    months.head(120).to_csv(tmp_path / "a.csv", index=False)
    months.tail(24)[["month_of_year", "passengers", "month"]].to_csv(tmp_path / "b.csv", index=False)
    later = load_data(DataConfig(dataset="file", path=str(tmp_path / "a.csv"), task="forecast",
                                 test_path=str(tmp_path / "b.csv"), time_column="month",
                                 target_column="passengers", window=12, horizon=6))
    assert np.allclose(later.test.X[-1, :, 1], months.month_of_year.to_numpy()[-18:-6])


def test_a_parquet_file_written_with_its_index_reads_the_index_as_columns(tmp_path: Path) -> None:
    """df.set_index(...).to_parquet(path) keeps the index, and pandas reads it back as the index. Before:
    'missing column(s) ['series_id', 'step']' for a classification file, and a forecast's date index was
    ignored: its rows (here shuffled) were read in file order, as one series 'in time order'."""
    from aeon.datasets import load_airline

    frame = _motions()
    frame.set_index(["series_id", "step"]).to_parquet(tmp_path / "m.parquet")
    assert load_data(_classify(tmp_path / "m.parquet")).feature_names == ["acc_x", "acc_y"]
    months = pd.DataFrame({"month": pd.date_range("1949-01-01", periods=144, freq="MS"),
                           "passengers": load_airline()})
    months.sample(frac=1.0, random_state=0).set_index("month").to_parquet(tmp_path / "a.parquet")
    data = load_data(DataConfig(dataset="file", path=str(tmp_path / "a.parquet"), task="forecast",
                                time_column="month", target_column="passengers", window=8, horizon=4))
    assert np.allclose(data.train.X[0, :, 0], load_airline()[:8])
    assert not any("its rows are in time order" in note for note in data.notes)


@pytest.mark.parametrize("ends", ["every line", "data rows"])
def test_a_comma_at_the_end_of_each_line_reads_as_the_plain_file(tmp_path: Path, ends: str) -> None:
    """Before: on every line, an empty 'Unnamed: 5' column refused as 'a table's index'; on the data rows
    only, pandas took series_id for row names and shifted every column left (refused for a gap in
    'step' between two accelerometer values). R's write.table row names (one more field, not empty)
    are still row names."""
    lines = _motions().to_csv(index=False).splitlines()
    header = lines[0] + ("," if ends == "every line" else "")
    (tmp_path / "c.csv").write_text("\n".join([header] + [line + "," for line in lines[1:]]) + "\n")
    (tmp_path / "r.csv").write_text("\n".join([lines[0]] + [f'"{i}",{line}' for i, line in
                                                             enumerate(lines[1:], 1)]) + "\n")
    (tmp_path / "plain.csv").write_text("\n".join(lines) + "\n")
    plain = load_data(_classify(tmp_path / "plain.csv"))
    for name in ("c.csv", "r.csv"):
        data = load_data(_classify(tmp_path / name))
        assert data.feature_names == ["acc_x", "acc_y"] and np.array_equal(data.train.X, plain.train.X)


def _gunpoint() -> tuple[np.ndarray, np.ndarray]:
    """aeon's GunPoint as it loads: [N, channels, T]."""
    from aeon.datasets import load_gunpoint

    X, y = load_gunpoint(split="train")
    return X[:24, :, :40], y[:24]


@pytest.mark.parametrize(("arrays", "message"), [
    (lambda X, y: {"X": X, "y": y}, r"'X' has shape \(24, 1, 40\), read as \[N, T, F\]: 1 step\(s\) of 40 "
                                    r"features each\. aeon and sktime .* X\.transpose\(0, 2, 1\)"),
    (lambda X, y: {"X": X.transpose(0, 2, 1), "y": np.where(np.arange(24) == 5, np.nan, y.astype(float))},
     r"y\[5\] is nan, no label; every series needs one"),
    (lambda X, y: {"X": X.transpose(0, 2, 1), "y": np.where(np.arange(24) == 2, " ", y)},
     r"y\[2\] is ' ', no label"),
    (lambda X, y: {"X": X.transpose(0, 2, 1).astype(complex), "y": y}, r"'X' holds complex128, not real"),
])
def test_npz_arrays_read_wrongly_before_are_refused(tmp_path: Path, arrays, message: str) -> None:
    """Before: channels first read as 1 step of 40 features; a NaN or blank label was a class of its own
    ('nan'); complex X lost its imaginary part with a warning."""
    np.savez(tmp_path / "g.npz", **arrays(*_gunpoint()))
    with pytest.raises(ValueError, match=message):
        load_data(_classify(tmp_path / "g.npz"))


def test_npz_with_more_features_than_steps_reads_when_feature_names_say_so(tmp_path: Path) -> None:
    X, y = _gunpoint()
    np.savez(tmp_path / "g.npz", X=X, y=y, feature_names=[f"f{i}" for i in range(40)])
    assert load_data(_classify(tmp_path / "g.npz")).train.X.shape[1:] == (1, 40)


def test_a_european_excel_csv_is_refused_with_a_rewrite_that_reads_its_decimal_commas(tmp_path: Path) -> None:
    """Semicolons and decimal commas (Excel in most of Europe). Before, the fix named df.to_csv only: the
    rewritten file's '0,079106' were then refused as not numbers."""
    frame = _motions()
    frame.to_csv(tmp_path / "eu.csv", index=False, sep=";", decimal=",")
    with pytest.raises(ValueError, match=r"separates its columns with semicolons; write it with commas "
                                         r"\(pandas: pd\.read_csv\(path, sep=';', decimal=','\)\.to_csv\("
                                         r"new_path, index=False\)\)"):
        load_data(_classify(tmp_path / "eu.csv"))
    pd.read_csv(tmp_path / "eu.csv", sep=";", decimal=",").to_csv(tmp_path / "new.csv", index=False)
    frame.to_csv(tmp_path / "plain.csv", index=False)
    assert np.array_equal(load_data(_classify(tmp_path / "new.csv")).train.X,
                          load_data(_classify(tmp_path / "plain.csv")).train.X)


@pytest.mark.parametrize(("name", "write"), [
    ("m.tsv", lambda frame, path: frame.to_csv(path, sep="\t", index=False)),
    ("m.txt", lambda frame, path: frame.to_csv(path, sep="|", index=False)),
    ("m.csv.gz", lambda frame, path: frame.to_csv(path, index=False)),
    ("m.zip", lambda frame, path: frame.to_csv(path, index=False)),
])
def test_a_type_users_export_is_refused_with_the_line_that_writes_it_as_csv(tmp_path: Path, name: str,
                                                                            write) -> None:
    """Before: 'unsupported file type '.tsv'; use .csv, .parquet or .npz', and no more. The pandas line
    the message gives, run as given, writes a file that reads."""
    frame = _motions()
    write(frame, tmp_path / name)
    listed = r"unsupported file type .*; use \.csv, \.parquet or \.npz \("
    with pytest.raises(ValueError, match=listed) as refused:
        load_data(_classify(tmp_path / name))
    line = str(refused.value).rsplit(": ", 1)[-1][:-1]  # the pandas line, inside the parentheses
    eval(line, {"pd": pd, "path": tmp_path / name, "new_path": tmp_path / "new.csv"})
    assert load_data(_classify(tmp_path / "new.csv")).feature_names == ["acc_x", "acc_y"]


def test_numbers_with_thousands_separators_are_refused_with_the_line_that_reads_them(tmp_path: Path) -> None:
    """A spreadsheet's number format (1,234.5), quoted in the CSV. Before: 'not a number' alone."""
    frame = _motions().assign(acc_x=lambda f: f.acc_x * 10_000)
    frame.assign(acc_x=frame.acc_x.map("{:,.3f}".format)).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"'acc_x' is '-9,034\.970', not a number.*its thousands separators: "
                                         r"pd\.read_csv\(path, thousands=','\)"):
        load_data(_classify(tmp_path / "t.csv"))
    pd.read_csv(tmp_path / "t.csv", thousands=",").to_csv(tmp_path / "new.csv", index=False)
    frame.to_csv(tmp_path / "plain.csv", index=False)
    assert np.allclose(load_data(_classify(tmp_path / "new.csv")).train.X[0, :, 0],
                       load_data(_classify(tmp_path / "plain.csv")).train.X[0, :, 0], atol=1e-3)


def test_file_names_in_capitals_read_as_their_type(tmp_path: Path) -> None:
    """DATA.CSV, as older Windows tools name exports. Before: 'unsupported file type '.CSV'; use .csv,
    .parquet or .npz' (gru predict already read .CSV)."""
    frame = _motions()
    frame.to_csv(tmp_path / "MOTIONS.CSV", index=False)
    frame.to_parquet(tmp_path / "MOTIONS.PARQUET")
    X, y = _gunpoint()
    with open(tmp_path / "GUNPOINT.NPZ", "wb") as handle:  # np.savez would append .npz to the name
        np.savez(handle, X=X.transpose(0, 2, 1), y=y)
    for name in ("MOTIONS.CSV", "MOTIONS.PARQUET", "GUNPOINT.NPZ"):
        assert len(load_data(_classify(tmp_path / name)).test) > 0


def test_gru_predict_given_the_parquet_file_training_read_names_the_fix(tmp_path: Path) -> None:
    """Before: "gru predict: error: 'utf-8' codec can't decode byte 0xc0 in position 74" alone."""
    _motions().to_parquet(tmp_path / "m.parquet")
    command = [sys.executable, "-m", "gru_cli", "predict", "--url", "http://127.0.0.1:9", "--model", "m"]
    out = subprocess.run([*command, "--file", str(tmp_path / "m.parquet")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "m.parquet: not JSON ('utf-8' codec can't decode" in out.stderr
    assert "a Parquet file as CSV: pd.read_parquet(path).to_csv(new_path, index=False)" in out.stderr


def test_gru_predict_reads_an_excel_utf8_csv_as_training_did(tmp_path: Path) -> None:
    """Excel's 'CSV UTF-8' starts with a BOM, and hand-edited headers carry spaces (`step, acc_x`).
    Training read such a file; before, `gru predict --file` did not find 'series_id' (read as
    '\\ufeffseries_id') and sent all 24 series as one sequence. Now one answer per series, as served.
    A column of True/False (pandas reads it as 1/0 in training) was 'must be numbers' to gru predict; an
    empty cell is named, not the whole row."""
    import httpx

    from export.bundle import export_checkpoint
    from tests.helpers import Server, train_tiny

    frame = _motions()
    frame.insert(4, "moving", frame.acc_x.abs() > 0.5)
    text = frame.to_csv(index=False, lineterminator="\r\n").replace(",", ", ")
    (tmp_path / "excel.csv").write_text(text, encoding="utf-8-sig")
    path = tmp_path / "excel.csv"
    result = train_tiny(tmp_path / "runs", "motions", "data.dataset=file", f"data.path={path}",
                        "data.task=classification", "optim.max_epochs=1", "model.hidden_size=8",
                        "optim.plots=false", "optim.tensorboard=false")
    export_checkpoint(result.checkpoint, tmp_path / "models", "motions")
    lines = frame.to_csv(index=False).splitlines()
    named = [f'"{i}",{row}' for i, row in enumerate(lines[1:], 1)]  # R's write.table(df, sep = ",")
    (tmp_path / "r.csv").write_text("\n".join([lines[0], *named]))
    frame.assign(acc_y=frame.acc_y.mask(frame.index == 3)).to_csv(tmp_path / "blank.csv", index=False)
    server = Server(tmp_path / "models").start()
    try:
        predict = [sys.executable, "-m", "gru_cli", "predict", "--url", server.url, "--model", "motions"]
        out = subprocess.run([*predict, "--file", str(path)], capture_output=True, text=True, timeout=60)
        refused = subprocess.run([*predict, "--file", str(tmp_path / "r.csv")], capture_output=True,
                                 text=True, timeout=60)
        blank = subprocess.run([*predict, "--file", str(tmp_path / "blank.csv")], capture_output=True,
                               text=True, timeout=60)
        sequences = [rows[["acc_x", "acc_y", "moving"]].to_numpy(float).tolist()
                     for _, rows in frame.groupby("series_id")]
        direct = httpx.post(f"{server.url}/models/motions/predict", timeout=30,
                            json={"sequences": sequences}).json()["predictions"]
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    answers = json.loads(out.stdout)["predictions"]
    assert [a["series_id"] for a in answers] == sorted(set(frame.series_id))
    assert [a["label"] for a in answers] == [d["label"] for d in direct]
    assert refused.returncode == 2  # before: values under the names to their left ("step 's00' ... neither
    # numbers nor ISO dates"; with numeric ids, each row a series of shifted values, answered)
    assert "r.csv, line 2: 7 fields but the header names 6: a row name first" in refused.stderr
    assert blank.returncode == 2  # before: "['acc_x', 'acc_y', 'moving'] must be numbers, got {the row}"
    assert "blank.csv, line 5: 'acc_y' is '', not a number; a request holds numbers only" in blank.stderr


def test_series_ids_na_and_none_are_ids(tmp_path: Path) -> None:
    """Country codes as series ids: before, pandas read 'NA' (Namibia) and 'None' as missing, and the
    file was refused: "row 0 has no 'series_id'". Numeric ids still read as numbers: the same series in
    the same order, split alike, as the Parquet copy of the file (which pandas does not parse)."""
    frame = _motions()
    codes = ["NA", "None", "ZA", "DE", "FR", "NL"] + [f"C{i}" for i in range(18)]
    country = dict(zip(sorted(frame.series_id.unique()), codes, strict=True))
    countries = frame.assign(series_id=frame.series_id.map(country))
    countries.to_csv(tmp_path / "countries.csv", index=False)
    data = load_data(_classify(tmp_path / "countries.csv"))
    assert len(data.train) + len(data.val) + len(data.test) == 24
    numbered = frame.assign(series_id=frame.series_id.str[1:].astype(int) * 5)
    numbered.to_csv(tmp_path / "numbered.csv", index=False)
    numbered.to_parquet(tmp_path / "numbered.parquet")
    read, parquet = (load_data(_classify(tmp_path / name)) for name in ("numbered.csv", "numbered.parquet"))
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(read, part).X, getattr(parquet, part).X)
