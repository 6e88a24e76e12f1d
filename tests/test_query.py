"""SQL on DuckDB: the workshop's Athena queries run unchanged; load_prices filters and orders.

What this proves: the SQL text is valid and means the same on DuckDB (the local engine). Athena is
Trino: `date_parse`, `cast(... as date)`, `substr` and `limit` behave the same there, but only a
real Athena run proves it for a given query.
"""

from __future__ import annotations

import pandas as pd
import pytest

from algotrading import lake, query, sources
from algotrading.config import settings
from algotrading.query import load_prices, prices_sql, sql

BLOG_QUERY = ("SELECT cast(date_parse(dt,'%Y-%m-%d') as date) as day, sym, open, close, high, low, vol "
              "FROM algo_data.hist_data_daily limit 1000")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lake")
    lake.write(sources.read("sample").frame, lake=str(folder))
    return settings(lake=str(folder))


def test_blog_queries_run_unchanged(cfg):
    preview = sql("SELECT * FROM algo_data.hist_data_daily limit 10", cfg)
    assert list(preview.columns) == ["dt", "sym", "open", "high", "low", "close", "vol"]
    assert len(preview) == 10
    days = sql(BLOG_QUERY, cfg)
    assert len(days) == 1000
    assert pd.api.types.is_datetime64_any_dtype(days["day"])
    assert days["day"].iloc[0] == pd.Timestamp("1999-01-04")


def test_aggregates_match_the_source(cfg):
    counts = sql("SELECT sym, count(*) AS n FROM algo_data.hist_data_daily GROUP BY sym ORDER BY sym", cfg)
    assert counts.to_dict("list") == {"sym": ["GSPC", "IXIC"], "n": [5031, 5031]}


def test_load_prices_filters_one_symbol_and_orders(cfg):
    prices = load_prices("IXIC", "2008-10-01", "2008-10-31", cfg)
    assert list(prices.columns) == ["open", "high", "low", "close", "vol"]
    assert prices.index.name == "dt" and prices.index.is_monotonic_increasing
    assert len(prices) == 23
    assert prices.index[0] == pd.Timestamp("2008-10-01")
    assert prices.index[-1] == pd.Timestamp("2008-10-31")


def test_prices_sql_always_filters_and_orders():
    text = prices_sql("INTC", "2014-01-01")
    assert "WHERE sym = 'INTC' AND dt >= '2014-01-01'" in text and text.endswith("ORDER BY dt")
    with pytest.raises(ValueError):
        prices_sql("X'; DROP TABLE t; --")


def test_unknown_symbol_and_empty_lake_are_clear(cfg, tmp_path):
    with pytest.raises(ValueError, match="symbol NOPE is not in the lake; it has: GSPC IXIC"):
        load_prices("NOPE", cfg=cfg)
    with pytest.raises(ValueError, match="no rows for symbol GSPC between 2030-01-01"):
        load_prices("GSPC", "2030-01-01", cfg=cfg)
    with pytest.raises(ValueError, match="the lake is empty"):
        sql("SELECT 1 FROM algo_data.hist_data_daily", settings(lake=str(tmp_path)))


def test_load_prices_reads_only_the_symbols_file(cfg, tmp_path):
    """A cold load reads one file with known columns (no sniffing of every lake file): a
    damaged other file does not matter to it, while a query over the whole table sees it."""
    folder = tmp_path / "lake"
    lake.write(sources.read("sample").frame, lake=str(folder))
    (folder / "hist_data_daily" / "IXIC.csv").write_text("dt,sym,open,high,low,close,vol\nbroken\n")
    local = settings(lake=str(folder))
    expected = load_prices("GSPC", cfg=cfg)
    pd.testing.assert_frame_equal(load_prices("gspc", cfg=local), expected)
    with pytest.raises(ValueError, match="query: .*IXIC.csv"):
        sql("SELECT count(*) FROM algo_data.hist_data_daily", local)


@pytest.mark.parametrize("name", ["algo_data.x; COPY (SELECT 1) TO '{tmp}/pwned.csv'; --",
                                  "x' OR 1", "1abc", "", "a" * 256, "algo-data"])
def test_algo_database_is_a_name_not_sql(tmp_path, monkeypatch, capsys, name):
    from algotrading.cli import main
    from algotrading.errors import ParameterError

    monkeypatch.setenv("ALGO_LAKE", str(tmp_path / "lake"))
    assert main(["ingest", "sample", "--symbols", "IXIC"]) == 0
    monkeypatch.setenv("ALGO_DATABASE", name.format(tmp=tmp_path))
    with pytest.raises(ParameterError, match="ALGO_DATABASE .*want a database name of letters"):
        query.load_prices("IXIC")
    capsys.readouterr()
    assert main(["query", "SELECT 1 AS one"]) == 2
    assert "ALGO_DATABASE" in capsys.readouterr().err
    assert not (tmp_path / "pwned.csv").exists()
    monkeypatch.setenv("ALGO_DATABASE", "My_Db_2")
    assert len(query.load_prices("IXIC")) > 1000


def test_a_query_past_the_row_limit_is_refused_with_the_limit_named(cfg, monkeypatch, capsys):
    from algotrading.cli import main

    with pytest.raises(ValueError, match=r"query \(add a WHERE or a LIMIT\): more than 5,000,000 "
                                         r"rows, the limit \(rows one SQL query returns; "
                                         r"ALGO_QUERY_MAX_ROWS raises it\)"):
        sql("SELECT * FROM range(1000000000)", cfg)
    monkeypatch.setenv("ALGO_QUERY_MAX_ROWS", "10062")  # the sample lake's rows: exactly the cap
    everything = sql("SELECT * FROM algo_data.hist_data_daily ORDER BY dt DESC, sym", cfg)
    assert len(everything) == 10062 and everything["dt"].is_monotonic_decreasing
    monkeypatch.setenv("ALGO_QUERY_MAX_ROWS", "10061")
    with pytest.raises(ValueError, match="more than 10,061 rows"):
        sql("SELECT * FROM algo_data.hist_data_daily", cfg)
    monkeypatch.setenv("ALGO_LAKE", cfg.lake)
    capsys.readouterr()
    assert main(["query", "SELECT * FROM algo_data.hist_data_daily"]) == 2
    assert "ALGO_QUERY_MAX_ROWS raises it" in capsys.readouterr().err
    monkeypatch.setenv("ALGO_QUERY_MAX_ROWS", "lots")
    with pytest.raises(ValueError, match="ALGO_QUERY_MAX_ROWS='lots': want a positive number"):
        sql("SELECT 1", cfg)
