"""Sources -> validated canonical frames, and the validator's errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from algotrading import lake, sources
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


def test_csv_rejects_a_date_repeated_across_files_naming_both(tmp_path):
    head = "dt,sym,open,high,low,close,vol\n"
    (tmp_path / "a.csv").write_text(head + "2020-01-02,AAA,10,11,9,10.5,100\n")
    (tmp_path / "b.csv").write_text(head + "2020-01-03,AAA,10,11,9,10.5,100\n"
                                    "2020-01-02,aaa,10,11,9,10.5,100\n")
    with pytest.raises(DataError, match=r"symbol AAA: date 2020-01-02 appears twice: \S*a.csv line 2 "
                                        r"and \S*b.csv line 3"):
        sources.read("csv", str(tmp_path))


HEAD = "dt,sym,open,high,low,close,vol\n"
GOOD = "2020-01-02,AAA,10,11,9,10.5,100\n"


def _one(tmp_path, body, name="f.csv", head=HEAD, encoding="utf-8"):
    (tmp_path / name).write_bytes((head + body).encode(encoding))
    return sources.read("csv", str(tmp_path / name))


@pytest.mark.parametrize("sym", ["../../../victim", "../hist_data_daily/GSPC", "a/b", ".HID",
                                 "   ", '"A\nB"', "X" * 300, "", "-A", "A B"])
def test_symbols_outside_the_grammar_are_rejected(tmp_path, sym):
    with pytest.raises(DataError, match=r"line 3: column sym: bad symbol .*symbols are 1-20 of"):
        _one(tmp_path, GOOD + f"2020-01-03,{sym},10,11,9,10.5,100\n")


def test_lower_case_symbols_are_upper_cased(tmp_path):
    batch = _one(tmp_path, GOOD.replace("AAA", " brk.b ") + "2020-01-03,^gspc,10,11,9,10.5,1\n")
    assert sorted(set(batch.frame["sym"])) == ["BRK.B", "^GSPC"]
    with pytest.raises(DataError, match="duplicate date"):  # aaa and AAA are one symbol
        _one(tmp_path, GOOD + GOOD.replace("AAA", "aaa"))


@pytest.mark.parametrize("value, rule", [
    ("0001-01-02", "date before 1920-01-01"), ("1677-09-22", "date before 1920-01-01"),
    ("1900-01-02", "date before 1920-01-01"), ("2200-01-02", "date after today"),
    ("2300-01-02", "date after today"), ("2020-1-2", "unparseable date '2020-1-2'"),
    ("2020-02-30", "unparseable date"),
])
def test_dates_outside_the_bounds_are_rejected(tmp_path, value, rule):
    with pytest.raises(DataError, match=f"line 3.*{rule}"):
        _one(tmp_path, GOOD + f"{value},AAA,10,11,9,10.5,100\n")


def test_a_date_after_today_is_rejected():
    tomorrow = (pd.Timestamp.now("UTC") + pd.Timedelta(days=1)).strftime("%Y-%m-%d")
    with pytest.raises(DataError, match="date after today"):
        validate(_frame({("dt", 2): tomorrow}), "f.csv")


@pytest.mark.parametrize("row, rule", [
    ("2020-01-03,AAA,1e308,1e308,1e308,1e308,1", "price outside \\[1e-06, 1e\\+09\\]"),
    ("2020-01-03,AAA,1e-320,1e-320,1e-320,1e-320,1", "price outside"),
    ("2020-01-03,AAA,10,11,9,10.5,-0", "vol must be >= 0"),
    ("2020-01-03,AAA,10,11,9,10.5,1e14", "vol above 1e\\+13"),
    ("2020-01-03,AAA,10,11,9,10.5,", "column vol: not a finite number"),
    ("2020-01-03,AAA,10,11,9,abc,1", "column close: not a finite number \\('abc'\\)"),
])
def test_numbers_outside_the_bounds_are_rejected(tmp_path, row, rule):
    with pytest.raises(DataError, match=f"f.csv: symbol AAA: line 3 \\(2020-01-03\\): {rule}"):
        _one(tmp_path, GOOD + row + "\n")


def test_an_empty_symbol_beside_a_good_one_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="line 3: column sym: bad symbol \\(empty\\)"):
        _one(tmp_path, GOOD + "2020-01-03,,10,11,9,10.5,100\n")


def test_a_second_close_column_is_rejected(tmp_path):
    with pytest.raises(DataError, match="column 'close' appears more than once"):
        _one(tmp_path, GOOD.rstrip() + ",11\n", head=HEAD.rstrip() + ",close\n")


def test_utf16_files_are_decoded_and_utf16_without_bom_is_named(tmp_path):
    batch = _one(tmp_path, GOOD, encoding="utf-16")
    assert batch.frame["sym"].tolist() == ["AAA"]
    (tmp_path / "g.csv").write_bytes((HEAD + GOOD).encode("utf-16-le"))
    with pytest.raises(DataError, match="UTF-16 without a BOM"):
        sources.read("csv", str(tmp_path / "g.csv"))


def test_yahoo_style_export_loads_with_a_column_mapping(tmp_path):
    (tmp_path / "AAPL.csv").write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2020-01-02,74.06,75.15,73.80,75.09,73.15,135480400\n"
        "2020-01-03,74.29,75.14,74.13,74.36,72.44,146322800\n")
    mapping = {"Date": "dt", "Open": "open", "High": "high", "Low": "low", "Close": "close",
               "Adj Close": "adj_close", "Volume": "vol"}
    frame = sources.read("csv", str(tmp_path / "AAPL.csv"), columns=mapping).frame
    assert frame["sym"].tolist() == ["AAPL", "AAPL"]  # from the file name
    assert frame["close"].iloc[0] == pytest.approx(73.15)  # adjusted by Adj Close / Close
    with pytest.raises(DataError, match="missing column\\(s\\) dt.*--columns"):
        sources.read("csv", str(tmp_path / "AAPL.csv"))


def test_adx_file_name_pattern_is_anchored_and_not_recursive(tmp_path):
    write_adx(tmp_path, "ABC", adx_rows(3))
    (tmp_path / "old_daily_adjusted_AAA.csv").write_text((tmp_path / "daily_adjusted_ABC.csv")
                                                         .read_text())
    write_adx(tmp_path / "sub", "SUB", adx_rows(3))
    assert set(sources.read("adx", str(tmp_path)).frame["sym"]) == {"ABC"}
    (tmp_path / "nomatch").mkdir()
    (tmp_path / "nomatch" / "AAA.csv").write_text("x")
    with pytest.raises(DataError, match="nomatch/AAA.csv: an ADX export's file name must be "
                                        "daily_adjusted_<SYM>.csv"):
        sources.read("adx", str(tmp_path / "nomatch" / "AAA.csv"))
    with pytest.raises(DataError, match="file name: bad symbol"):
        write_adx(tmp_path / "bad", "..x", adx_rows(3))
        sources.read("adx", str(tmp_path / "bad"))


@pytest.mark.parametrize("col, value, rule", [
    (8, "0", "column split_coefficient: want a number > 0"),
    (8, "-2", "column split_coefficient: want a number > 0"),
    (8, "abc", "column split_coefficient: want a number > 0"),
    (7, "-0.5", "column dividend_amount: want a number >= 0"),
    (5, "1e308", "adjusted_close/close outside"),
])
def test_adx_adjustment_columns_are_checked(tmp_path, col, value, rule):
    rows = adx_rows(4)
    rows[1][col] = value
    write_adx(tmp_path, "ABC", rows)
    with pytest.raises(DataError, match=f"daily_adjusted_ABC.csv: symbol ABC: line 4 "
                                        f"\\(2020-01-07\\): {rule}"):
        sources.read("adx", str(tmp_path))


def test_adx_batches_ask_the_lake_to_restate_re_adjusted_history(tmp_path):
    write_adx(tmp_path, "ABC", adx_rows(3))
    assert sources.read("adx", str(tmp_path)).restate
    assert not sources.read("sample").restate


def test_public_symbol_errors_name_what_the_file_has(tmp_path):
    import h5py

    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as h5:
        h5["history"] = np.ones((2, 3, 5))
        h5["abbreviation"] = [b"AAA", b"../../victim"]
    with pytest.raises(DataError, match="abbreviation\\[1\\]: bad symbol '../../victim'"):
        sources.read("public", str(path))
    with h5py.File(path, "w") as h5:
        h5["history"] = np.ones((0, 3, 5))
        h5["abbreviation"] = np.array([], dtype="S4")
    with pytest.raises(DataError, match="the file holds no symbols"):
        sources.read("public", str(path))


@needs_public
def test_public_unknown_symbol_lists_the_symbols():
    with pytest.raises(DataError, match="symbol\\(s\\) not in this source: ZZZZ; it has AAPL ATVI"):
        sources.read("public", PUBLIC, ["ZZZZ"])


def test_public_offline_names_the_url_and_ALGO_PUBLIC_DATA(tmp_path, monkeypatch):
    import urllib.error

    from algotrading import web

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv("ALGO_PUBLIC_DATA", raising=False)
    monkeypatch.setenv("ALGO_CACHE", str(tmp_path))
    monkeypatch.setattr(web, "opener", lambda credentials: offline)
    with pytest.raises(DataError) as err:
        sources.read("public")
    text = str(err.value)
    assert sources.PUBLIC_URL in text and "could not download" in text
    assert "set ALGO_PUBLIC_DATA" in text


def test_a_file_over_the_ingest_limit_is_refused_before_it_is_read(tmp_path, monkeypatch, capsys):
    from algotrading.cli import main

    path = tmp_path / "big.csv"
    path.write_text("dt,sym,open,high,low,close,vol\n" + "2020-01-02,AAA,1,1,1,1,1\n" * 2000)
    size = path.stat().st_size
    monkeypatch.setenv("ALGO_INGEST_MAX_BYTES", str(size - 1))
    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    with pytest.raises(ValueError, match=rf"big.csv: {size:,} bytes is over the limit of "
                                         rf"{size - 1:,} \(one file ingested \(csv, adx\); "
                                         r"ALGO_INGEST_MAX_BYTES raises it\)"):
        sources.read("csv", str(path))
    capsys.readouterr()
    assert main(["ingest", "csv", str(path)]) == 2
    assert "ALGO_INGEST_MAX_BYTES raises it" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_a_download_is_streamed_under_its_size_limit_and_needs_https(tmp_path, monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(3 * 2**20))
            self.end_headers()
            self.wfile.write(b"\0" * (3 * 2**20))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/stocks.h5"
        monkeypatch.setenv("ALGO_DOWNLOAD_MAX_BYTES", str(2**20))
        with pytest.raises(DataError, match=r"could not download it \(.*3,145,728 bytes is over the "
                                            r"limit of 1,048,576 \(ALGO_DOWNLOAD_MAX_BYTES raises"):
            sources.fetch(url, cache=tmp_path)
        assert list(tmp_path.iterdir()) == []  # nothing partial is kept
        monkeypatch.setenv("ALGO_DOWNLOAD_MAX_BYTES", str(4 * 2**20))
        assert sources.fetch(url, cache=tmp_path).stat().st_size == 3 * 2**20
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(DataError, match="is not an https URL"):
        sources.fetch("http://example.com/stocks.h5", cache=tmp_path / "other")


SPINOFF = ("dt,sym,open,high,low,close,vol\n"
           "2015-07-15,EBAY,66.0,67.0,65.5,66.5,100\n2015-07-16,EBAY,66.5,66.9,65.9,66.0,100\n"
           "2015-07-17,EBAY,66.0,66.6,65.8,66.29,100\n2015-07-20,EBAY,26.89,28.9,26.5,28.57,100\n"
           "2015-07-21,EBAY,28.6,29.0,28.1,28.8,100\n")


def test_an_unexplained_overnight_move_is_refused_naming_symbol_date_and_prices(tmp_path):
    path = tmp_path / "ebay.csv"
    path.write_text(SPINOFF)
    with pytest.raises(DataError, match=r"1 overnight move\(s\) above 30% that no correction explains: "
                                        r"EBAY 2015-07-20: open 26.89 is -59.4% from the previous "
                                        r"close 66.29\. .*--corrections.*--accept-jumps"):
        sources.read("csv", str(path))
    assert len(sources.read("csv", str(path), jump=0.6).frame) == 5  # the user's threshold
    accepted = sources.read("csv", str(path), accept_jumps=True)
    assert [(j["sym"], j["date"]) for j in accepted.jumps] == [("EBAY", "2015-07-20")]
    assert accepted.frame["close"].iloc[2] == 66.29  # accepted, not changed


def test_a_correction_back_adjusts_the_prices_before_its_date_and_is_recorded(tmp_path):
    path = tmp_path / "ebay.csv"
    path.write_text(SPINOFF)
    fixes = tmp_path / "corrections.csv"
    fixes.write_text("sym,date,factor,note,source\n"
                     "ebay,2015-07-20,0.40564,PayPal spin-off,open/previous close of the file\n")
    batch = sources.read("csv", str(path), corrections=str(fixes))
    raw = pd.read_csv(path)
    got = batch.frame.set_index("dt")
    for col in ("open", "high", "low", "close"):
        assert list(got[col].iloc[:3]) == pytest.approx(list(raw[col].iloc[:3] * 0.40564))
        assert list(got[col].iloc[3:]) == list(raw[col].iloc[3:])
    assert list(got["vol"]) == list(raw["vol"])  # volume is left as traded
    assert batch.corrections == [{"sym": "EBAY", "date": "2015-07-20", "factor": 0.40564,
                                  "note": "PayPal spin-off", "source": "open/previous close of the file",
                                  "rows": 3}]
    lake_dir = tmp_path / "lake"
    lake.write(batch.frame, lake=str(lake_dir), provenance=batch.provenance())
    assert lake.provenance("EBAY", lake=str(lake_dir))["corrections"] == batch.corrections
    assert lake.symbols(lake=str(lake_dir)) == ["EBAY"]  # provenance is not a price table
    # a note without a factor accepts the move as real
    fixes.write_text("sym,date,factor,note\nEBAY,2015-07-20,,earnings gap, checked\n")
    with pytest.raises(DataError, match="line 2"):  # an unquoted comma: 5 fields, not 4
        sources.read("csv", str(path), corrections=str(fixes))
    fixes.write_text('sym,date,factor,note\nEBAY,2015-07-20,,"checked: real"\n')
    kept = sources.read("csv", str(path), corrections=str(fixes))
    assert kept.frame["close"].iloc[2] == 66.29 and kept.corrections[0]["factor"] is None


@pytest.mark.parametrize("line, message", [
    ("EBAY,2015-07-20,0.4,", "needs a note"),
    ("EBAY,2015-07-20,-1,spin-off", "must be a finite number > 0"),
    ("EBAY,20150720,0.4,spin-off", "is not YYYY-MM-DD"),
    ("EBAY,2015-07-20,half,spin-off", "is not a number"),
])
def test_corrections_file_errors_name_the_line(tmp_path, line, message):
    fixes = tmp_path / "c.csv"
    fixes.write_text("sym,date,factor,note\n" + line + "\n")
    with pytest.raises(DataError, match=message) as err:
        sources.read_corrections(str(fixes))
    assert "line 2" in str(err.value)


def test_the_public_source_ships_the_ebay_spinoff_correction():
    (fix,) = sources.PUBLIC_CORRECTIONS
    assert (fix.sym, fix.date) == ("EBAY", "2015-07-20") and fix.factor == pytest.approx(26.89 / 66.29)
    assert "PayPal" in fix.note and "26.89 / 66.29" in fix.source


@needs_public
def test_the_public_ebay_gap_is_caught_without_and_corrected_with_the_shipped_correction():
    raw = sources.read_public(PUBLIC, ["EBAY"])
    with pytest.raises(DataError, match="EBAY 2015-07-20: open 26.89 is -59.4%"):
        sources.checked_jumps(raw, sources.JUMP, False)
    batch = sources.read("public", PUBLIC, ["EBAY"])
    assert batch.corrections[0]["rows"] == 736 and not batch.jumps
    assert sources.overnight_jumps(batch.frame).empty
