"""The AWS code paths against a moto server on 127.0.0.1 (no account, no internet).

What the emulator proves: our boto3/pyathena calls are well formed and go where AWS_ENDPOINT_URL
points; the S3 lake round-trips bytes, merges on re-ingest (replaces on request), leaves the lake
untouched when staging fails, finishes an interrupted commit from its journal and serialises
writers on a lock object created with If-None-Match (moto implements that condition); the
Alpha Vantage reader and the local SQL engine read through S3; stack outputs become settings; the
Glue table built from schema.COLUMNS is accepted by the Glue API; Athena receives the exact SQL
text in the configured workgroup and database, and its result shape comes back as a DataFrame.

What only a real account proves: IAM permissions, bucket policies and encryption; that Athena
actually executes the SQL (moto returns canned rows; the SQL's semantics are tested by running the
same text in DuckDB) and reads the lake through the Glue table's SerDe and header skip; the
workgroup's own result location (moto ignores it, so pyathena falls back to GetQueryResults);
eventual consistency, throttling and retries; the CloudFormation template's real resources.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("pyathena")

from algotrading import aws, config, lake, query, sources  # noqa: E402
from algotrading.config import Settings  # noqa: E402
from algotrading.schema import COLUMNS, NAMES  # noqa: E402

pytestmark = pytest.mark.aws

REGION = "us-east-1"
CLEARED = ("ALGO_BACKEND", "ALGO_LAKE", "ALGO_DATABASE", "ALGO_WORKGROUP", "ALGO_STACK",
           "ALGO_ATHENA_OUTPUT", "AWS_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN",
           "AWS_ATHENA_WORK_GROUP", "AWS_ATHENA_S3_STAGING_DIR")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server for the session, on a free port of 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> str:
    """Fake credentials and every client pointed at a freshly reset moto; no ALGO_* leaks in."""
    _post(f"{moto_url}/moto-api/reset", {})
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    return moto_url


def _post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status in (200, 201)


def _bucket(name: str = "lake-bucket") -> str:
    aws.client("s3").create_bucket(Bucket=name)
    return name


def _objects(bucket: str) -> dict[str, bytes]:
    s3 = aws.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _bars(sym: str, days: int = 5, start: str = "2024-01-02", base: float = 100.0) -> pd.DataFrame:
    """Valid canonical rows: business days, close drifting up, high/low around open/close."""
    dt = pd.bdate_range(start, periods=days).strftime("%Y-%m-%d")
    close = base + np.arange(days, dtype=float)
    open_ = close - 0.5
    return pd.DataFrame({"dt": dt, "sym": sym, "open": open_, "high": close + 1.0,
                         "low": open_ - 1.0, "close": close, "vol": 1000.0 + np.arange(days)})


def _frame(*syms: str, **kw: object) -> pd.DataFrame:
    return pd.concat([_bars(s, **kw) for s in syms], ignore_index=True)


# --- clients -----------------------------------------------------------------------------------

def test_client_uses_endpoint_env_and_aws_region(aws_env: str, monkeypatch) -> None:
    """boto3 applies AWS_ENDPOINT_URL natively; AWS_REGION (which botocore ignores) wins here."""
    assert aws.client("s3").meta.endpoint_url == aws_env
    assert aws.client("s3").meta.region_name == REGION
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert aws.client("glue").meta.region_name == "eu-west-1"
    assert aws.client("glue", region="ap-south-1").meta.region_name == "ap-south-1"


# --- the S3 lake -------------------------------------------------------------------------------

def test_s3_lake_write_read_symbols() -> None:
    bucket = _bucket()
    url = f"s3://{bucket}/prefix"
    frame = _frame("MSFT", "AAPL")
    assert lake.write(frame, lake=url).index.tolist() == ["AAPL", "MSFT"]
    stored = _objects(bucket)
    assert sorted(stored) == ["prefix/hist_data_daily/AAPL.csv", "prefix/hist_data_daily/MSFT.csv"]
    assert stored["prefix/hist_data_daily/AAPL.csv"].startswith(b"dt,sym,open,high,low,close,vol\n")
    assert lake.symbols(lake=url) == ["AAPL", "MSFT"]
    back = lake.read("MSFT", lake=url)
    pd.testing.assert_frame_equal(back, _bars("MSFT"), check_dtype=False)  # ints read as int64
    assert list(lake.read_all(lake=url)["sym"].unique()) == ["AAPL", "MSFT"]


def test_s3_lake_reingest_merges_replaces_on_request_and_is_idempotent() -> None:
    bucket = _bucket()
    url = f"s3://{bucket}/lake"
    lake.write(_frame("AAPL", "MSFT", days=6), lake=url)
    first = _objects(bucket)
    lake.write(_frame("AAPL", "MSFT", days=6), lake=url)
    assert _objects(bucket) == first  # same input, same bytes, no extra objects (lock, journal)
    report = lake.write(_bars("AAPL", days=8).iloc[6:], lake=url)
    assert report.loc["AAPL", ["action", "added", "kept", "rows"]].tolist() == ["merged", 2, 6, 8]
    lake.write(_bars("AAPL", days=3, base=50.0), lake=url, replace=True)
    again = _objects(bucket)
    assert len(lake.read("AAPL", lake=url)) == 3
    assert lake.read("AAPL", lake=url)["close"].iloc[0] == 50.0
    assert again["lake/hist_data_daily/MSFT.csv"] == first["lake/hist_data_daily/MSFT.csv"]
    assert sorted(again) == sorted(first)


@pytest.mark.parametrize("existing", [("AAA", "BBB"), ("BBB",)])
def test_s3_lake_failed_ingest_leaves_lake_as_it_was(existing: tuple[str, ...],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2nd staged PUT fails: nothing under hist_data_daily/ changed, no staged object left."""
    bucket = _bucket()
    url = f"s3://{bucket}/lake"
    lake.write(_frame(*existing, base=10.0), lake=url)
    before = _objects(bucket)
    real_put, calls = lake.S3Store.put, []

    def flaky_put(self: lake.S3Store, key: str, data: bytes, **kw: object) -> None:
        calls.append(key)
        if len(calls) == 2:
            raise ConnectionError("simulated network failure on the second PUT")
        real_put(self, key, data)

    monkeypatch.setattr(lake.S3Store, "put", flaky_put)
    with pytest.raises(OSError, match="nothing in the lake changed: simulated network failure"):
        lake.write(_frame("AAA", "BBB", "CCC", base=20.0), lake=url)
    assert [k.rsplit("/", 1)[1] for k in calls[:2]] == ["AAA.csv", "BBB.csv"]
    assert all(k.startswith(lake.STAGING) for k in calls)
    assert _objects(bucket) == before


def test_s3_lake_interrupted_commit_is_completed_by_the_next_operation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that dies after its journal (here: the 2nd copy fails) leaves the journal in
    the bucket; the next lake operation redoes the remaining moves from it."""
    bucket = _bucket()
    url = f"s3://{bucket}/lake"
    lake.write(_frame("AAA", "BBB", "CCC", base=10.0), lake=url)
    real_move, calls = lake.S3Store.move, []

    def dying_move(self: lake.S3Store, src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise ConnectionError("writer lost")
        real_move(self, src, dst)

    monkeypatch.setattr(lake.S3Store, "move", dying_move)
    with pytest.raises(OSError, match="committed but not fully applied"):
        lake.write(_frame("AAA", "BBB", "CCC", base=20.0), lake=url, replace=True)
    monkeypatch.setattr(lake.S3Store, "move", real_move)
    assert "lake/.algotrading/journal.json" in _objects(bucket)
    closes = lake.read_all(lake=url).groupby("sym")["close"].first()
    assert (closes == 20.0).all()  # all three new: the read finished the commit first
    assert sorted(_objects(bucket)) == [f"lake/hist_data_daily/{s}.csv" for s in ("AAA", "BBB", "CCC")]


def test_s3_lake_lock_serialises_writers_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock object is created with If-None-Match: * (moto honours it, as S3 does since
    2024): a second writer waits, and gives up with a clear error after LOCK_TIMEOUT; a lock
    older than S3_LOCK_STALE (a dead writer's) is removed and taken."""
    bucket = _bucket()
    url = f"s3://{bucket}/lake"
    aws.client("s3").put_object(Bucket=bucket, Key="lake/.algotrading/lock", Body=b"{}")
    monkeypatch.setattr(lake, "LOCK_TIMEOUT", 0.5)
    with pytest.raises(ValueError, match="locked by another ingest"):
        lake.write(_frame("AAA"), lake=url)
    assert sorted(_objects(bucket)) == ["lake/.algotrading/lock"]
    monkeypatch.setattr(lake, "S3_LOCK_STALE", 0.0)
    lake.write(_frame("AAA"), lake=url)
    assert sorted(_objects(bucket)) == ["lake/hist_data_daily/AAA.csv"]


# --- sources through S3 ------------------------------------------------------------------------

def _alpha_vantage(sym: str, days: int = 4) -> bytes:
    """daily_adjusted_<SYM>.csv as Alpha Vantage writes it: newest first; last day pays a
    dividend so adjusted_close/close differs on the older rows."""
    bars = _bars(sym, days=days).iloc[::-1].reset_index(drop=True)
    adj = bars["close"] * np.where(np.arange(days) == 0, 1.0, 0.9)
    raw = pd.DataFrame({"timestamp": bars["dt"], "open": bars["open"], "high": bars["high"],
                        "low": bars["low"], "close": bars["close"], "adjusted_close": adj,
                        "volume": bars["vol"].astype(int), "dividend_amount": 0.0,
                        "split_coefficient": 1.0})
    return raw.to_csv(index=False).encode()


def test_adx_reads_alpha_vantage_files_from_s3_prefix_and_object() -> None:
    bucket = _bucket("adx-bucket")
    s3 = aws.client("s3")
    for sym in ("IBM", "MSFT"):
        s3.put_object(Bucket=bucket, Key=f"adx/daily_adjusted_{sym}.csv", Body=_alpha_vantage(sym))
    s3.put_object(Bucket=bucket, Key="adx/README.txt", Body=b"not a price file")

    batch = sources.read("adx", f"s3://{bucket}/adx/")
    frame = batch.frame
    assert sorted(frame["sym"].unique()) == ["IBM", "MSFT"]
    ibm = frame[frame["sym"] == "IBM"].reset_index(drop=True)
    expected = _bars("IBM", days=4)
    assert list(ibm["dt"]) == list(expected["dt"])  # oldest first after reading newest-first
    np.testing.assert_allclose(ibm["close"].iloc[:-1], expected["close"].iloc[:-1] * 0.9)
    assert ibm["close"].iloc[-1] == expected["close"].iloc[-1]

    single = sources.read("adx", f"s3://{bucket}/adx/daily_adjusted_MSFT.csv")
    assert list(single.frame["sym"].unique()) == ["MSFT"]
    assert len(single.frame) == 4


# --- SQL ---------------------------------------------------------------------------------------

def test_local_sql_engine_reads_an_s3_lake() -> None:
    bucket = _bucket()
    lake.write(_frame("AAPL", "MSFT", days=5), lake=f"s3://{bucket}/lake")
    cfg = Settings(backend="local", lake=f"s3://{bucket}/lake")
    counts = query.sql("SELECT sym, count(*) AS n, max(close) AS hi FROM algo_data.hist_data_daily "
                       "GROUP BY sym ORDER BY sym", cfg)
    assert counts.to_dict("list") == {"sym": ["AAPL", "MSFT"], "n": [5, 5], "hi": [104.0, 104.0]}
    prices = query.load_prices("MSFT", start="2024-01-04", cfg=cfg)
    assert list(prices.index.strftime("%Y-%m-%d")) == ["2024-01-04", "2024-01-05", "2024-01-08"]
    assert list(prices.columns) == ["open", "high", "low", "close", "vol"]


def _queue_athena_result(url: str, header: list[str], types: list[str],
                         rows: list[list[str]]) -> None:
    """Tell moto what the next Athena query 'returns' (it never runs SQL)."""
    info = [{"Name": h, "Label": h, "Type": t, "CatalogName": "hive", "SchemaName": "",
             "TableName": "", "Nullable": "UNKNOWN", "CaseSensitive": True, "Precision": 0,
             "Scale": 0} for h, t in zip(header, types, strict=True)]
    data = [{"Data": [{"VarCharValue": v} for v in row]} for row in [header, *rows]]
    _post(f"{url}/moto-api/static/athena/query-results",
          {"region": REGION, "results": [{"rows": data, "column_info": info}]})


def _athena_cfg() -> Settings:
    athena = aws.client("athena")
    _bucket("athena-results")
    athena.create_work_group(Name="algo-wg", Configuration={
        "ResultConfiguration": {"OutputLocation": "s3://athena-results/wg/"}})
    return Settings(backend="aws", lake="s3://lake-bucket", database="algo_data",
                    workgroup="algo-wg", region=REGION)


def test_athena_gets_exact_sql_in_workgroup_and_database(aws_env: str) -> None:
    """Submission and result plumbing only: moto hands back the queued rows for any SQL."""
    cfg = _athena_cfg()
    _queue_athena_result(aws_env, ["sym", "n"], ["varchar", "bigint"], [["AAPL", "5"]])
    text = "SELECT sym, count(*) AS n FROM algo_data.hist_data_daily GROUP BY sym ORDER BY sym"
    out = query.sql(text, cfg)
    assert out.to_dict("list") == {"sym": ["AAPL"], "n": [5]}
    athena = aws.client("athena")
    (qid,) = athena.list_query_executions()["QueryExecutionIds"]
    run = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert run["Query"] == text
    assert run["WorkGroup"] == "algo-wg"
    assert run["QueryExecutionContext"]["Database"] == "algo_data"
    assert "ResultConfiguration" not in run  # the workgroup's location is left to Athena


def test_athena_output_override_and_load_prices_shape(aws_env: str, monkeypatch) -> None:
    """With ALGO_ATHENA_OUTPUT the result CSV is read from that S3 location (moto writes it
    there) and load_prices turns Athena's string dt and double columns into the price frame."""
    cfg = _athena_cfg()
    monkeypatch.setenv("ALGO_ATHENA_OUTPUT", "s3://athena-results/override")
    bars = _bars("IBM", days=3)
    _queue_athena_result(aws_env, list(NAMES), [t.replace("string", "varchar") for _, t in COLUMNS],
                         bars.astype(str).to_numpy().tolist())
    prices = query.load_prices("IBM", start="2024-01-02", cfg=cfg)
    athena = aws.client("athena")
    (qid,) = athena.list_query_executions()["QueryExecutionIds"]
    run = athena.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert run["Query"] == query.prices_sql("IBM", "2024-01-02", None, "algo_data")
    assert run["ResultConfiguration"]["OutputLocation"].startswith("s3://athena-results/override/")
    assert list(prices.index.strftime("%Y-%m-%d")) == list(bars["dt"])
    assert prices.dtypes.eq(float).all()
    np.testing.assert_allclose(prices["close"], bars["close"])


def test_athena_without_workgroup_or_output_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="ALGO_WORKGROUP"):
        aws.athena_sql("SELECT 1", Settings(backend="aws", region=REGION))


# --- CloudFormation stack -> settings ----------------------------------------------------------

TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {"Lake": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "algo-lake"}}},
    "Outputs": {
        "BucketName": {"Value": {"Ref": "Lake"}},
        "DatabaseName": {"Value": "algo_stack_db"},
        "WorkGroupName": {"Value": "algo-stack-wg"},
        "SageMakerRoleArn": {"Value": "arn:aws:iam::123456789012:role/algo-sagemaker"},
    },
}


def test_stack_outputs_become_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    aws.client("cloudformation").create_stack(StackName="algo", TemplateBody=json.dumps(TEMPLATE))
    outputs = aws.stack_outputs("algo")
    assert outputs["BucketName"] == "algo-lake"
    assert aws.role_arn(outputs) == "arn:aws:iam::123456789012:role/algo-sagemaker"
    assert "algo-lake" in [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]]

    monkeypatch.setenv("ALGO_BACKEND", "aws")
    monkeypatch.setenv("ALGO_STACK", "algo")
    cfg = config.settings()
    assert (cfg.backend, cfg.lake, cfg.database, cfg.workgroup) == (
        "aws", "s3://algo-lake", "algo_stack_db", "algo-stack-wg")
    assert cfg.lake_path() == "s3://algo-lake"

    monkeypatch.setenv("ALGO_DATABASE", "mine")  # an explicit variable wins over the stack
    monkeypatch.setenv("ALGO_WORKGROUP", "")  # an empty one does not
    cfg = config.settings()
    assert (cfg.lake, cfg.database, cfg.workgroup) == ("s3://algo-lake", "mine", "algo-stack-wg")


def test_missing_stack_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="'nope'"):
        aws.stack_outputs("nope")


# --- Glue --------------------------------------------------------------------------------------

def test_ensure_glue_table_matches_schema_columns() -> None:
    glue = aws.client("glue")
    cfg = Settings(backend="aws", lake="s3://lake-bucket/data/", database="algo_data",
                   region=REGION)
    aws.ensure_glue_table(cfg)
    table = glue.get_table(DatabaseName="algo_data", Name="hist_data_daily")["Table"]
    sd = table["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == list(COLUMNS)
    assert sd["Location"] == "s3://lake-bucket/data/hist_data_daily/"
    assert sd["SerdeInfo"]["Parameters"]["field.delim"] == ","
    assert table["Parameters"]["skip.header.line.count"] == "1"
    assert table["TableType"] == "EXTERNAL_TABLE"

    aws.ensure_glue_table(cfg.with_(lake="s3://other-bucket"))  # exists -> updated, not duplicated
    tables = glue.get_tables(DatabaseName="algo_data")["TableList"]
    assert [t["Name"] for t in tables] == ["hist_data_daily"]
    assert tables[0]["StorageDescriptor"]["Location"] == "s3://other-bucket/hist_data_daily/"


def test_glue_table_needs_an_s3_lake() -> None:
    with pytest.raises(ValueError, match="s3://"):
        aws.ensure_glue_table(Settings(backend="aws", lake="data/lake"))
