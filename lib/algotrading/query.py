"""SQL over the lake: DuckDB locally, Athena (pyathena, Glue catalog) on AWS, same SQL text.

DuckDB gets a `date_parse` macro and an `algo_data.hist_data_daily` view so the workshop's
Athena queries run unchanged on a laptop.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pandas as pd

from algotrading import limits
from algotrading.config import Settings, settings
from algotrading.schema import COLUMNS, NUMERIC, TABLE, DataError, check_symbol

DUCKDB_TYPES = {"string": "VARCHAR", "double": "DOUBLE"}


def _lake_view(con, cfg: Settings, store, only: str | None,
               where: Callable[[str], str] = str) -> None:
    """The `hist_data_daily` view: the lake's CSV files (or only `only`'s file: every price
    load filters by one symbol, and each symbol is one file) read with the known columns and
    dialect, so DuckDB sniffs nothing. `where` maps a lake key to the file holding its committed
    bytes (see lake.reading)."""
    from algotrading import lake

    columns = "{" + ", ".join(f"'{n}': '{DUCKDB_TYPES[t]}'" for n, t in COLUMNS) + "}"
    if isinstance(store, lake.LocalStore):
        if only is not None:
            if not store.has(where(lake.key(only))):
                raise lake.missing(store, only)
            keys = [where(lake.key(only))]
        else:
            keys = [where(lake.key(s)) for s in lake.symbols(store=store)]
        if not keys:
            raise DataError(store.describe(TABLE),
                            "the lake is empty; run `algotrading ingest sample` first")
        files = [str(store.root.resolve() / k) for k in keys]
        listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
        con.execute(f"CREATE VIEW {cfg.database}.{TABLE} AS SELECT * FROM read_csv({listing}, "
                    f"header=true, auto_detect=false, delim=',', quote='\"', escape='\"', "
                    f"columns={columns})")
        con.execute("SET allowed_paths = " + listing)
    else:  # an S3 lake with the local engine: read through boto3, no DuckDB extension download
        frame = lake.read_all([only] if only else None, store=store)
        con.register("_lake_rows", frame)
        casts = ", ".join(f"CAST({n} AS {DUCKDB_TYPES[t]}) AS {n}" for n, t in COLUMNS)
        con.execute(f"CREATE VIEW {cfg.database}.{TABLE} AS SELECT {casts} FROM _lake_rows")


def _duckdb(cfg: Settings, store, only: str | None = None, where: Callable[[str], str] = str):
    """An in-memory DuckDB with the lake view, then locked down: no file or network access
    beyond the lake files, no extension installs, settings frozen."""
    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.execute("CREATE MACRO date_parse(s, fmt) AS strptime(s, fmt)")
    con.execute(f"CREATE SCHEMA {cfg.database}")
    _lake_view(con, cfg, store, only, where)
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _one_select(con, text: str) -> None:
    """Only one SELECT per call: the query path reads, it never writes or configures."""
    import duckdb

    if not text or not text.strip():
        raise DataError("query", "empty SQL; give one SELECT statement")
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as exc:
        raise DataError("query", " ".join(str(exc).split())) from exc
    if len(statements) != 1:
        raise DataError("query", f"{len(statements)} statements; give exactly one SELECT")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise DataError("query", f"only SELECT statements run here (got {kind.name}); the "
                                 "lake is changed by `algotrading ingest` only")


def sql(text: str, cfg: Settings | None = None, lake: str | None = None,
        only: str | None = None) -> pd.DataFrame:
    """Run one SELECT statement on the configured engine and return the result as a DataFrame.

    `lake` overrides the configured lake; `only` (a symbol) lets the local engine read just that
    symbol's file when the statement filters on it (as load_prices does)."""
    cfg = (cfg or settings()).with_(lake=lake)
    if cfg.backend == "aws":
        from algotrading import aws

        if not text or not text.strip():
            raise DataError("query", "empty SQL; give one SELECT statement")
        return aws.athena_sql(text, cfg.database, cfg.workgroup, cfg.region)
    from algotrading import lake as lake_mod

    store = lake_mod.lake_store(cfg.lake_path())
    with lake_mod.reading(store) as where:
        con = _duckdb(cfg, store, only, where)
        try:
            _one_select(con, text)
            cap = int(limits.value("query_rows"))
            rows = con.sql(text).limit(cap + 1).df()  # at most one row past the cap is built
            limits.check("query_rows", len(rows), "query (add a WHERE or a LIMIT)", more=True)
            return rows
        except Exception as exc:
            import duckdb

            if isinstance(exc, duckdb.Error):
                raise DataError("query", " ".join(str(exc).split())) from exc
            raise
        finally:
            con.close()


def _literal(value: str | date | pd.Timestamp) -> str:
    day = pd.Timestamp(value).strftime("%Y-%m-%d")
    return f"'{day}'"


def prices_sql(symbol: str, start: str | date | None = None, end: str | date | None = None,
               database: str = "algo_data") -> str:
    """The SQL that load_prices runs: one symbol, optional date range, ordered by dt."""
    symbol = check_symbol(symbol)
    where = [f"sym = '{symbol}'"]
    if start is not None:
        where.append(f"dt >= {_literal(start)}")
    if end is not None:
        where.append(f"dt <= {_literal(end)}")
    cols = ", ".join(n for n, _ in COLUMNS)
    return (f"SELECT {cols} FROM {database}.{TABLE} WHERE {' AND '.join(where)} ORDER BY dt")


def load_prices(symbol: str, start: str | date | None = None, end: str | date | None = None,
                cfg: Settings | None = None, lake: str | None = None) -> pd.DataFrame:
    """One symbol's daily bars: DatetimeIndex `dt`, columns open, high, low, close, vol.

    `lake` overrides the configured lake (ALGO_LAKE)."""
    cfg = (cfg or settings()).with_(lake=lake)
    symbol = check_symbol(symbol)
    rows = sql(prices_sql(symbol, start, end, cfg.database), cfg, only=symbol)
    if rows.empty:
        span = f" between {start or '...'} and {end or '...'}" if start or end else ""
        raise DataError(f"{cfg.database}.{TABLE}", f"no rows for symbol {symbol}{span}")
    index = pd.DatetimeIndex(pd.to_datetime(rows["dt"]), name="dt")
    return rows.loc[:, list(NUMERIC)].astype(float).set_index(index)
