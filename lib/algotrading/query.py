"""SQL over the lake: DuckDB locally, Athena (pyathena, Glue catalog) on AWS, same SQL text.

DuckDB gets a `date_parse` macro and an `algo_data.hist_data_daily` view so the workshop's
Athena queries run unchanged on a laptop.
"""

from __future__ import annotations

import re
from datetime import date

import pandas as pd

from algotrading.config import Settings, settings
from algotrading.schema import COLUMNS, NUMERIC, TABLE, DataError

DUCKDB_TYPES = {"string": "VARCHAR", "double": "DOUBLE"}


def _duckdb(cfg: Settings):
    import duckdb

    con = duckdb.connect()
    con.execute("CREATE MACRO date_parse(s, fmt) AS strptime(s, fmt)")
    con.execute(f"CREATE SCHEMA {cfg.database}")
    from algotrading import lake

    store = lake.lake_store(cfg.lake_path())
    columns = "{" + ", ".join(f"'{n}': '{DUCKDB_TYPES[t]}'" for n, t in COLUMNS) + "}"
    if isinstance(store, lake.LocalStore):
        files = [str(store.root / k) for k in store.keys(TABLE) if k.endswith(".csv")]
        if not files:
            raise DataError(store.describe(TABLE),
                            "the lake is empty; run `algotrading ingest sample` first")
        listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
        con.execute(f"CREATE VIEW {cfg.database}.{TABLE} AS SELECT * FROM read_csv({listing}, "
                    f"header=true, columns={columns})")
    else:  # an S3 lake with the local engine: read through boto3, no DuckDB extension download
        frame = lake.read_all(store=store)
        con.register("_lake_rows", frame)
        casts = ", ".join(f"CAST({n} AS {DUCKDB_TYPES[t]}) AS {n}" for n, t in COLUMNS)
        con.execute(f"CREATE VIEW {cfg.database}.{TABLE} AS SELECT {casts} FROM _lake_rows")
    return con


def sql(text: str, cfg: Settings | None = None) -> pd.DataFrame:
    """Run one SQL statement on the configured engine and return the result as a DataFrame."""
    cfg = cfg or settings()
    if cfg.backend == "aws":
        from algotrading import aws

        return aws.athena_sql(text, cfg)
    con = _duckdb(cfg)
    try:
        return con.execute(text).df()
    finally:
        con.close()


def _literal(value: str | date | pd.Timestamp) -> str:
    day = pd.Timestamp(value).strftime("%Y-%m-%d")
    return f"'{day}'"


def prices_sql(symbol: str, start: str | date | None = None, end: str | date | None = None,
               database: str = "algo_data") -> str:
    """The SQL that load_prices runs: one symbol, optional date range, ordered by dt."""
    if not re.fullmatch(r"[A-Za-z0-9.\-_^]+", symbol):
        raise ValueError(f"symbol {symbol!r} has characters a ticker never has")
    where = [f"sym = '{symbol}'"]
    if start is not None:
        where.append(f"dt >= {_literal(start)}")
    if end is not None:
        where.append(f"dt <= {_literal(end)}")
    cols = ", ".join(n for n, _ in COLUMNS)
    return (f"SELECT {cols} FROM {database}.{TABLE} WHERE {' AND '.join(where)} ORDER BY dt")


def load_prices(symbol: str, start: str | date | None = None, end: str | date | None = None,
                cfg: Settings | None = None) -> pd.DataFrame:
    """One symbol's daily bars: DatetimeIndex `dt`, columns open, high, low, close, vol."""
    cfg = cfg or settings()
    rows = sql(prices_sql(symbol, start, end, cfg.database), cfg)
    if rows.empty:
        span = f" between {start or '...'} and {end or '...'}" if start or end else ""
        raise DataError(f"{cfg.database}.{TABLE}", f"no rows for symbol {symbol}{span}")
    index = pd.DatetimeIndex(pd.to_datetime(rows["dt"]), name="dt")
    return rows.loc[:, list(NUMERIC)].astype(float).set_index(index)
