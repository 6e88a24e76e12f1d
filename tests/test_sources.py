"""Sources -> validated canonical frames, and the validator's errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algotrading import sources
from algotrading.schema import NAMES, DataError, validate

from helpers import adx_rows, write_adx

PUBLIC = os.environ.get("ALGO_PUBLIC_DATA")
needs_public = pytest.mark.skipif(not PUBLIC or not Path(PUBLIC).is_file(),
                                  reason="public dataset (../shared/data) not present")


def test_sample_is_the_arch_history_adjusted():
    batch = sources.read("sample")
    assert list(batch.frame.columns) == list(NAMES)
    counts = batch.frame.groupby("sym").size().to_dict()
    assert counts == {"GSPC": 5031, "IXIC": 5031}
    gspc = batch.frame[batch.frame["sym"] == "GSPC"]
    assert gspc["dt"].iloc[0] == "1999-01-04" and gspc["dt"].iloc[-1] == "2018-12-31"
    assert gspc["close"].iloc[-1] == pytest.approx(2506.850098, rel=1e-9)


def test_adx_reads_newest_first_and_adjusts(tmp_path):
    write_adx(tmp_path, "ABC", adx_rows(5))
    write_adx(tmp_path, "XYZ", adx_rows(3, base=50))
    (tmp_path / "notes.txt").write_text("ignored")
    batch = sources.read("adx", str(tmp_path))
    abc = batch.frame[batch.frame["sym"] == "ABC"]
    assert list(abc["dt"]) == sorted(abc["dt"])  # sorted oldest first
    # adjusted_close = close * 0.5, so every price is halved; volume stays as traded
    assert abc["open"].iloc[0] == pytest.approx(50.0)
    assert abc["close"].iloc[0] == pytest.approx(50.25)
    assert abc["vol"].iloc[0] == 1000
    assert batch.summary().loc["XYZ", "rows"] == 3


def test_adx_symbols_filter_and_single_file(tmp_path):
    write_adx(tmp_path, "ABC", adx_rows(5))
    path = write_adx(tmp_path, "XYZ", adx_rows(3))
    assert set(sources.read("adx", str(tmp_path), ["xyz"]).frame["sym"]) == {"XYZ"}
    assert set(sources.read("adx", str(path)).frame["sym"]) == {"XYZ"}
    with pytest.raises(DataError, match="files found for NOPE"):
        sources.read("adx", str(tmp_path), ["NOPE"])


@needs_public
def test_public_drops_forward_filled_days():
    batch = sources.read("public", PUBLIC)
    summary = batch.summary()
    assert len(summary) == 16
    assert summary["rows"].between(1250, 1260).all()
    assert (summary["rows"] + summary["dropped"] == 1825).all()
    days = pd.to_datetime(batch.frame["dt"])
    assert not days.dt.day_of_week.isin([5, 6]).any()
    assert summary.loc["INTC", "repaired"] == 2 and summary.loc["AAPL", "repaired"] == 1
    assert summary["first"].min() == "2012-08-13"


def test_public_checks_sha256_of_downloads(tmp_path):
    bad = tmp_path / "cache"
    bad.mkdir()
    (bad / "stocks_history_target.h5").write_bytes(b"not the file")
    with pytest.raises(DataError, match="sha256 mismatch"):
        sources.fetch("https://example.invalid/stocks_history_target.h5", sources.PUBLIC_SHA256, bad)
    assert not (bad / "stocks_history_target.h5").exists()  # a bad cached copy is not kept


def test_public_rejects_wrong_file_type(tmp_path):
    path = tmp_path / "stocks.h5"
    path.write_text("dt,sym\n")
    with pytest.raises(DataError, match="not an HDF5 file"):
        sources.read("public", str(path))


def test_csv_with_column_mapping(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("Date,Ticker,open,high,low,close,Volume\n"
                    "2020-01-03,AAA,10,11,9,10.5,100\n2020-01-02,AAA,10,11,9,10.5,100\n")
    batch = sources.read("csv", str(path), columns={"Date": "dt", "Ticker": "sym", "Volume": "vol"})
    assert list(batch.frame["dt"]) == ["2020-01-02", "2020-01-03"]


def _frame(change=None):
    frame = pd.DataFrame({"dt": ["2020-01-02", "2020-01-03", "2020-01-06"], "sym": "AAA",
                          "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "vol": 100.0})
    for (col, row), value in (change or {}).items():
        frame.loc[row, col] = value
    return frame


@pytest.mark.parametrize("change, message", [
    ({("dt", 1): "2020-13-01"}, "f.csv: symbol AAA: row 2: column dt: unparseable date '2020-13-01'"),
    ({("dt", 2): "2020-01-03"}, "f.csv: symbol AAA: row 3 (2020-01-03): duplicate date"),
    ({("close", 1): np.nan}, "f.csv: symbol AAA: row 2 (2020-01-03): column close: not a finite number"),
    ({("open", 0): -1.0, ("low", 0): -2.0}, "row 1 (2020-01-02): prices must be > 0"),
    ({("high", 2): 8.0}, "row 3 (2020-01-06): high < low"),
    ({("high", 2): 10.2}, "row 3 (2020-01-06): high < max(open, close)"),
    ({("low", 1): 10.6}, "row 2 (2020-01-03): low > min(open, close)"),
    ({("vol", 2): -5.0}, "row 3 (2020-01-06): vol must be >= 0"),
])
def test_validator_names_file_symbol_row_and_rule(change, message):
    with pytest.raises(DataError) as err:
        validate(_frame(change), "f.csv")
    assert message in str(err.value)


def test_validator_missing_column_and_empty():
    with pytest.raises(DataError, match="f.csv: missing column\\(s\\) vol"):
        validate(_frame().drop(columns="vol"), "f.csv")
    with pytest.raises(DataError, match="empty"):
        validate(_frame().iloc[:0], "f.csv")


def test_validator_sorts_by_symbol_and_date():
    out = validate(_frame().iloc[::-1], "f.csv")
    assert list(out["dt"]) == ["2020-01-02", "2020-01-03", "2020-01-06"]


def test_csv_rejects_a_date_repeated_across_files(tmp_path):
    row = "dt,sym,open,high,low,close,vol\n2020-01-02,AAA,10,11,9,10.5,100\n"
    (tmp_path / "a.csv").write_text(row)
    (tmp_path / "b.csv").write_text(row)
    with pytest.raises(DataError, match="symbol AAA: row 2 \\(2020-01-02\\): duplicate date"):
        sources.read("csv", str(tmp_path))
