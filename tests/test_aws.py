"""The AWS code paths against a moto server on 127.0.0.1 (no account, no internet).

What the emulator proves: our boto3/pyathena calls are well formed and go where AWS_ENDPOINT_URL
points; the S3 lake round-trips bytes, merges on re-ingest (replaces on request), leaves the lake
untouched when staging fails, finishes an interrupted commit from its journal and serialises
writers on a lock object created with If-None-Match (moto implements that condition); the
Alpha Vantage reader and the local SQL engine read through S3; stack outputs become settings; the
Glue table built from schema.COLUMNS is accepted by the Glue API; Athena receives the exact SQL
text in the configured workgroup and database, and its result shape comes back as a DataFrame.

What only a real account proves: bucket policies and encryption (IAM: tests/test_iam.py runs
every path with the template's roles on moto with IAM enforced, and says what that leaves out); that Athena
actually executes the SQL (moto returns canned rows; the SQL's semantics are tested by running the
same text in DuckDB) and reads the lake through the Glue table's SerDe and header skip; the
workgroup's own result location (moto ignores it, so pyathena falls back to GetQueryResults);
eventual consistency, throttling and retries; the CloudFormation template's real resources.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("pyathena")

from algotrading import aws, config, lake, query, sources, wheelhouse  # noqa: E402
from algotrading.config import Settings  # noqa: E402
from algotrading.schema import COLUMNS, NAMES  # noqa: E402

pytestmark = pytest.mark.aws

REGION = "us-east-1"
CLEARED = ("ALGO_BACKEND", "ALGO_LAKE", "ALGO_DATABASE", "ALGO_WORKGROUP", "ALGO_STACK", "ALGO_KMS_KEY",
           "ALGO_ATHENA_OUTPUT", "ALGO_JOB_SUBNETS", "ALGO_JOB_SECURITY_GROUP",
           "ALGO_JOB_NETWORK_ISOLATION", "ALGO_WHEELHOUSE", "AWS_REGION", "AWS_PROFILE",
           "AWS_SESSION_TOKEN", "AWS_ATHENA_WORK_GROUP", "AWS_ATHENA_S3_STAGING_DIR")


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
    config.stack_outputs.cache_clear()  # the emulator was reset: no stack is known any more
    monkeypatch.setattr(wheelhouse, "fill", placeholder_wheels)
    return moto_url


def placeholder_wheels(pins: list, target: Path, cache: Path | None = None) -> list[Path]:
    """In place of algotrading.wheelhouse.fill for the moto tests: moto runs no container, so a
    job's code channel gets a small placeholder per wheel instead of a download (the real wheels,
    their hashes and an offline install are tested in tests/test_wheelhouse.py)."""
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for pin in pins:
        path = target / f"{pin.name.replace('-', '_')}-{pin.version}-py3-none-any.whl"
        path.write_text(f"placeholder for {pin.name}=={pin.version}\n")
        out.append(path)
    return out


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
    report = lake.write(frame, lake=url)
    assert list(report.index) == ["AAPL", "MSFT"] and set(report["action"]) == {"new"}
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
    assert again["lake/hist_data_daily/MSFT.csv"] == first["lake/hist_data_daily/MSFT.csv"]
    assert sorted(again) == sorted(first)  # no lock, journal or staging object left behind


@pytest.mark.parametrize("existing", [("AAA", "BBB"), ("BBB",)])
def test_s3_lake_failed_ingest_leaves_lake_as_it_was(existing: tuple[str, ...],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The 2nd staged file's PUT fails: no symbol file changes, CCC never lands, nothing stays."""
    bucket = _bucket()
    url = f"s3://{bucket}/lake"
    lake.write(_frame(*existing, base=10.0), lake=url)
    before = _objects(bucket)
    real_put, calls = lake.S3Store.put, []

    def flaky_put(self: lake.S3Store, key: str, data: bytes, atomic: bool = True) -> None:
        calls.append(key)
        if len([k for k in calls if k.endswith(".csv")]) == 2:
            raise ConnectionError("simulated network failure on the second PUT")
        real_put(self, key, data, atomic)

    monkeypatch.setattr(lake.S3Store, "put", flaky_put)
    with pytest.raises(OSError, match="nothing in the lake changed: simulated network failure"):
        lake.write(_frame("AAA", "BBB", "CCC", base=20.0), lake=url)
    assert [k.rsplit("/", 1)[-1] for k in calls if k.endswith(".csv")] == ["AAA.csv", "BBB.csv"]
    assert all(k.startswith(lake.STAGING) for k in calls if k.endswith(".csv"))
    assert _objects(bucket) == before


def test_s3_lake_interrupted_commit_is_completed_by_the_next_operation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that dies after its journal (here: the 2nd copy fails) leaves the journal in
    the bucket; readers do not touch it (on S3 they read the lake files as they are, like
    Athena); the next ingest redoes the remaining moves from it."""
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
    before = _objects(bucket)
    assert "lake/.algotrading/journal.json" in before
    closes = lake.read_all(lake=url).groupby("sym")["close"].first()
    assert sorted(closes.tolist()) == [10.0, 10.0, 20.0]  # the files as they are: one moved
    assert _objects(bucket) == before  # the read changed nothing
    lake.write(_frame("DDD", base=30.0), lake=url)  # the next ingest completes the commit first
    closes = lake.read_all(lake=url).groupby("sym")["close"].first()
    assert closes.to_dict() == {"AAA": 20.0, "BBB": 20.0, "CCC": 20.0, "DDD": 30.0}
    assert sorted(_objects(bucket)) == [f"lake/hist_data_daily/{s}.csv"
                                        for s in ("AAA", "BBB", "CCC", "DDD")]


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



def test_s3_lock_is_fenced_by_its_etag(monkeypatch: pytest.MonkeyPatch) -> None:
    """Takeover of a stale lock is a PUT with If-Match on the ETag seen stale, so a second
    waiter holding the same stale ETag loses; release is a DELETE with If-Match on the writer's
    own ETag, so a writer whose lock was taken over never deletes the new holder's lock, and
    learns it (LakeError); a writer that lost its lock before the commit point commits nothing."""
    from botocore.exceptions import ClientError

    bucket = _bucket()
    url = f"s3://{bucket}/lake"
    s3 = aws.client("s3")
    lock_key = "lake/.algotrading/lock"
    stale = s3.put_object(Bucket=bucket, Key=lock_key, Body=b'{"dead": 1}')["ETag"]
    monkeypatch.setattr(lake, "S3_LOCK_STALE", 0.0)
    store = lake.S3Store(url, s3, {})
    with pytest.raises(OSError, match="another writer took the lock over"), \
            store.lock(exclusive=True):
        mine = s3.head_object(Bucket=bucket, Key=lock_key)["ETag"]
        assert mine != stale and store._lock_etag == mine
        with pytest.raises(ClientError) as err:  # the other waiter, with the same stale ETag
            s3.put_object(Bucket=bucket, Key=lock_key, Body=b"{}", IfMatch=stale)
        assert err.value.response["Error"]["Code"] == "PreconditionFailed"
        # someone takes the lock over from this (slow) writer:
        theirs = s3.put_object(Bucket=bucket, Key=lock_key, Body=b'{"other": 1}')["ETag"]
        with pytest.raises(OSError, match="no longer holds the lake lock"):
            store.confirm_lock()
    # release did not delete the other writer's lock ...
    assert s3.head_object(Bucket=bucket, Key=lock_key)["ETag"] == theirs
    s3.delete_object(Bucket=bucket, Key=lock_key)
    monkeypatch.setattr(lake, "S3_LOCK_STALE", 900.0)

    # ... and an ingest whose lock is taken over before its commit point changes nothing
    lake.write(_frame("AAA", base=10.0), lake=url)
    real_put = lake.S3Store.put

    def overtaken(self: lake.S3Store, key: str, data: bytes, atomic: bool = True) -> None:
        if key.startswith(lake.STAGING):
            s3.put_object(Bucket=bucket, Key=lock_key, Body=b'{"usurper": 1}')
        real_put(self, key, data, atomic)

    monkeypatch.setattr(lake.S3Store, "put", overtaken)
    with pytest.raises(OSError, match="nothing in the lake changed.*no longer holds the lake lock"):
        lake.write(_frame("AAA", base=20.0), lake=url, replace=True)
    monkeypatch.setattr(lake.S3Store, "put", real_put)
    assert lake.read("AAA", lake=url)["close"].iloc[0] == 10.0
    assert lock_key in _objects(bucket)  # the usurper's lock stays


def test_s3_lock_release_after_a_takeover_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = _bucket()
    s3 = aws.client("s3")
    store = lake.S3Store(f"s3://{bucket}/lake", s3, {})
    with pytest.raises(OSError, match="another writer took the lock over"):
        with store.lock(exclusive=True):
            s3.put_object(Bucket=bucket, Key="lake/.algotrading/lock", Body=b'{"other": 1}')
    assert "lake/.algotrading/lock" in _objects(bucket)  # not deleted by the loser


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
        aws.athena_sql("SELECT 1", "algo_data", region=REGION)


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
    assert config.role_arn(outputs) == "arn:aws:iam::123456789012:role/algo-sagemaker"
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
    aws.ensure_glue_table("algo_data", "s3://lake-bucket/data/", REGION)
    table = glue.get_table(DatabaseName="algo_data", Name="hist_data_daily")["Table"]
    sd = table["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == list(COLUMNS)
    assert sd["Location"] == "s3://lake-bucket/data/hist_data_daily/"
    assert sd["SerdeInfo"]["Parameters"]["field.delim"] == ","
    assert table["Parameters"]["skip.header.line.count"] == "1"
    assert table["TableType"] == "EXTERNAL_TABLE"

    aws.ensure_glue_table("algo_data", "s3://other-bucket", REGION)  # exists -> updated, not duplicated
    tables = glue.get_tables(DatabaseName="algo_data")["TableList"]
    assert [t["Name"] for t in tables] == ["hist_data_daily"]
    assert tables[0]["StorageDescriptor"]["Location"] == "s3://other-bucket/hist_data_daily/"


def test_glue_table_needs_an_s3_lake() -> None:
    with pytest.raises(ValueError, match="s3://"):
        aws.ensure_glue_table("algo_data", "data/lake")


# --- the project's CloudFormation template, deployed to moto -----------------------------------
#
# moto's CloudFormation creates the bucket (with its KMS encryption), the KMS key (with rotation),
# the role with its inline policies, the lifecycle configuration and the notebook instance. It
# silently skips AWS::S3::BucketPolicy, AWS::Glue::Database, AWS::Glue::Table and
# AWS::Athena::WorkGroup while still reporting CREATE_COMPLETE, and ignores the bucket's versioning,
# public access block, ownership, logging and lifecycle and the notebook's KMS key, root access and
# IMDS settings. tests/test_template.py checks those in the template; here the Glue database and
# table and the Athena workgroup are created in the emulator from the template's own definitions.

TEMPLATE_FILE = Path(__file__).resolve().parents[1] / "cloudformation" / "algotrading.yaml"
STACK = "algo"


def _template() -> dict:
    from cfnlint.decode import decode

    data, problems = decode(str(TEMPLATE_FILE))
    assert not problems
    return json.loads(json.dumps(data))


def render(node: object, refs: dict[str, object], conditions: dict[str, bool]) -> object:
    """Resolve the intrinsic functions the template uses (Ref, GetAtt, Sub, If, Select, Split)."""
    if isinstance(node, list):
        return [render(n, refs, conditions) for n in node]
    if not isinstance(node, dict):
        return node
    if "Ref" in node:
        return refs[node["Ref"]]
    if "Fn::GetAtt" in node:
        return refs[".".join(node["Fn::GetAtt"])]
    if "Fn::Sub" in node:
        text, extra = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        local = {**refs, **{k: render(v, refs, conditions) for k, v in extra.items()}}
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(local[m[1]]), text)
    if "Fn::If" in node:
        name, yes, no = node["Fn::If"]
        return render(yes if conditions[name] else no, refs, conditions)
    if "Fn::Select" in node:
        index, items = node["Fn::Select"]
        return render(items, refs, conditions)[int(index)]
    if "Fn::Split" in node:
        sep, text = node["Fn::Split"]
        return render(text, refs, conditions).split(sep)
    return {k: render(v, refs, conditions) for k, v in node.items()}


MOTO_SKIPS = pytest.mark.filterwarnings("ignore:Tried to parse AWS::.*not supported by moto")


def _for_moto_cfn(template: dict) -> dict:
    """The template with the tags moto 5.2.5's CloudFormation cannot create: an `!If` that gives
    AWS::NoValue inside a Tags list reaches its taggers as None (the optional CostCenter/Owner
    tags, off by default; the jobs' network policy, VPC stacks only), and its KMS key reads tags
    as TagKey/TagValue, not CloudFormation's Key/Value. tests/test_template.py checks the tags themselves."""
    for resource in template["Resources"].values():
        tags = resource.get("Properties", {}).get("Tags")
        if isinstance(tags, list):
            resource["Properties"]["Tags"] = [t for t in tags if "Fn::If" not in t]
        if resource["Type"] == "AWS::KMS::Key":
            resource["Properties"].pop("Tags", None)
        if resource["Type"] == "AWS::IAM::Role":  # likewise a policy only a VPC stack has
            resource["Properties"]["Policies"] = [
                p for p in resource["Properties"]["Policies"] if "Fn::If" not in p]
    return template


def _deploy(glue_and_athena: bool = True) -> dict[str, str]:
    """Deploy the template to moto; then create what moto skipped from the template's text.
    Returns the stack outputs plus the workgroup and database names moto could not output, and
    the rendered data-bucket policy (not applied: its TLS-only rule refuses the emulator's HTTP)."""
    cf = aws.client("cloudformation")
    cf.create_stack(StackName=STACK, TemplateBody=json.dumps(_for_moto_cfn(_template())),
                    Capabilities=["CAPABILITY_NAMED_IAM"])
    outputs = aws.stack_outputs(STACK)
    if not glue_and_athena:
        return outputs
    template = _template()
    params = {k: v.get("Default", "") for k, v in template["Parameters"].items()}  # Number stays int
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"]
                for r in cf.list_stack_resources(StackName=STACK)["StackResourceSummaries"]}
    refs = {**params, **physical, "AWS::StackName": STACK, "AWS::Region": REGION,
            "AWS::AccountId": "123456789012", "AWS::Partition": "aws", "AWS::NoValue": None,
            "Key.Arn": outputs["KmsKeyArn"], "DataBucket.Arn": f"arn:aws:s3:::{outputs['BucketName']}"}
    conditions = {"CreateKey": True, "InVpc": False, "HasRepository": False, "HasCostCenter": False,
                  "HasOwner": False}
    res = template["Resources"]
    db = render(res["GlueDatabase"]["Properties"], refs, conditions)
    aws.client("glue").create_database(DatabaseInput=db["DatabaseInput"])
    refs["GlueDatabase"] = db["DatabaseInput"]["Name"]
    table = render(res["GlueTable"]["Properties"], refs, conditions)
    aws.client("glue").create_table(DatabaseName=table["DatabaseName"], TableInput=table["TableInput"])
    group = render(res["WorkGroup"]["Properties"], refs, conditions)
    aws.client("athena").create_work_group(Name=group["Name"], Description=group["Description"],
                                           Configuration=group["WorkGroupConfiguration"])
    policy = render(res["DataBucketPolicy"]["Properties"], refs, conditions)
    return {**outputs, "DatabaseName": refs["GlueDatabase"], "WorkGroupName": group["Name"],
            "BucketPolicy": json.dumps(policy["PolicyDocument"])}


@MOTO_SKIPS
def test_template_deploys_to_moto_and_creates_what_it_says() -> None:
    outputs = _deploy(glue_and_athena=False)
    cf = aws.client("cloudformation")
    assert cf.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    created = {r["ResourceType"] for r in cf.list_stack_resources(StackName=STACK)["StackResourceSummaries"]
               if r["PhysicalResourceId"]}
    assert created == {"AWS::KMS::Key", "AWS::KMS::Alias", "AWS::S3::Bucket", "AWS::IAM::Role",
                       "AWS::Logs::LogGroup",
                       "AWS::SageMaker::NotebookInstanceLifecycleConfig",
                       "AWS::SageMaker::NotebookInstance"}

    s3 = aws.client("s3")
    (rule,) = s3.get_bucket_encryption(Bucket=outputs["BucketName"])[
        "ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms",
                                                          "KMSMasterKeyID": outputs["KmsKeyArn"]}
    (rule,) = s3.get_bucket_encryption(Bucket=outputs["LogBucketName"])[
        "ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    kms = aws.client("kms")
    assert kms.get_key_rotation_status(KeyId=outputs["KmsKeyArn"])["KeyRotationEnabled"] is True
    assert [a["TargetKeyId"] for a in kms.list_aliases()["Aliases"]
            if a["AliasName"] == f"alias/{STACK}"] == [outputs["KmsKeyArn"].split("/")[-1]]

    iam = aws.client("iam")
    role = outputs["SageMakerRoleArn"].split("/")[-1]
    assert role == f"algo-{STACK}-{REGION}"
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    assert sorted(iam.list_role_policies(RoleName=role)["PolicyNames"]) == ["jobs", "lake", "sql"]
    job_role = outputs["JobRoleArn"].split("/")[-1]
    assert job_role == f"algo-{STACK}-jobs-{REGION}"
    assert iam.list_role_policies(RoleName=job_role)["PolicyNames"] == ["job"]
    lake_policy = iam.get_role_policy(RoleName=role, PolicyName="lake")["PolicyDocument"]
    if isinstance(lake_policy, str):  # moto keeps a CloudFormation inline policy as the dict's repr
        import ast

        lake_policy = ast.literal_eval(lake_policy)
    by_sid = {s["Sid"]: s for s in lake_policy["Statement"]}
    assert by_sid["ListTheBucket"]["Resource"] == f"arn:aws:s3:::{outputs['BucketName']}"
    assert by_sid["ReadWriteObjects"]["Resource"] == f"arn:aws:s3:::{outputs['BucketName']}/*"
    assert by_sid["UseTheKey"]["Resource"] == outputs["KmsKeyArn"]

    sm = aws.client("sagemaker")
    notebook = sm.describe_notebook_instance(NotebookInstanceName=outputs["NotebookInstanceName"])
    assert notebook["RoleArn"] == outputs["SageMakerRoleArn"]
    assert notebook["InstanceType"] == "ml.t3.medium"
    (arn,) = [r["PhysicalResourceId"] for r in cf.list_stack_resources(StackName=STACK)[
        "StackResourceSummaries"] if r["LogicalResourceId"] == "NotebookLifecycle"]
    import base64

    (script,) = sm.describe_notebook_instance_lifecycle_config(
        NotebookInstanceLifecycleConfigName=arn.split("/")[-1])["OnStart"]
    text = base64.b64decode(script["Content"]).decode()
    assert text.startswith(f"#!/bin/bash\nexport ALGO_STACK='{STACK}' AWS_REGION='{REGION}'\n")
    assert text.endswith((TEMPLATE_FILE.parent / "notebook-lifecycle.sh").read_text())

    # What moto skipped while reporting CREATE_COMPLETE: nothing of these exists.
    assert aws.client("glue").get_databases()["DatabaseList"] == []
    assert [g["Name"] for g in aws.client("athena").list_work_groups()["WorkGroups"]] == ["primary"]
    assert not {"DatabaseName", "WorkGroupName", "TableName"} & set(outputs)


def _sent(hook_event: str) -> list[dict[str, str]]:
    """Record the HTTP headers of every request matching `hook_event` on the default session."""
    import boto3

    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    seen: list[dict[str, str]] = []
    boto3.DEFAULT_SESSION.events.register(
        hook_event, lambda request, **_: seen.append({k.lower(): v.decode() if isinstance(v, bytes) else v
                                          for k, v in request.headers.items()}), unique_id=hook_event)
    return seen


def _unhook(hook_event: str) -> None:
    import boto3

    boto3.DEFAULT_SESSION.events.unregister(hook_event, unique_id=hook_event)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The template deployed on moto, and the aws backend pointed at it by ALGO_STACK alone (plus
    the workgroup, an output moto cannot produce because it skipped the resource)."""
    outputs = _deploy()
    monkeypatch.setenv("ALGO_BACKEND", "aws")
    monkeypatch.setenv("ALGO_STACK", STACK)
    monkeypatch.setenv("ALGO_WORKGROUP", outputs["WorkGroupName"])
    yield outputs


@MOTO_SKIPS
def test_settings_read_the_stack_once_per_process(stack) -> None:
    describes = _sent("before-send.cloudformation.DescribeStacks")
    try:
        first = [config.settings() for _ in range(5)]
    finally:
        _unhook("before-send.cloudformation.DescribeStacks")
    assert len(describes) == 1
    cfg = first[0]
    assert (cfg.backend, cfg.lake, cfg.kms_key, cfg.workgroup, cfg.database) == (
        "aws", f"s3://{stack['BucketName']}", stack["KmsKeyArn"], stack["WorkGroupName"], "algo_data")
    assert cfg.s3_put_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": stack["KmsKeyArn"],
                                 "BucketKeyEnabled": True}


@MOTO_SKIPS
def test_aws_backend_end_to_end_on_the_deployed_stack(stack, aws_env, capsys) -> None:
    """ingest sample -> the stack's bucket with the stack's key; read back through the lake code;
    the SQL path sends load_prices' text to Athena, and that text run on DuckDB over the same
    files gives the rows Athena is told to return."""
    from algotrading import cli

    puts = _sent("before-send.s3.PutObject")
    copies = _sent("before-send.s3.CopyObject")  # the lake stages files, then copies them in place
    try:
        assert cli.main(["ingest", "sample"]) == 0
    finally:
        _unhook("before-send.s3.PutObject")
        _unhook("before-send.s3.CopyObject")
    bucket = stack["BucketName"]
    assert sorted(_objects(bucket)) == ["hist_data_daily/GSPC.csv", "hist_data_daily/IXIC.csv",
                                 "provenance/GSPC.json", "provenance/IXIC.json"]
    assert len(copies) == 4 and len(puts) >= 4  # two symbols: prices and provenance
    for headers in puts + copies:
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == stack["KmsKeyArn"]
        assert headers["x-amz-server-side-encryption-bucket-key-enabled"] == "true"
    head = aws.client("s3").head_object(Bucket=bucket, Key="hist_data_daily/GSPC.csv")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", stack["KmsKeyArn"])

    cfg = config.settings()
    stored = lake.read("GSPC")  # the lake code, on the stack's bucket
    assert stored["dt"].iloc[0] == "1999-01-04" and len(stored) > 4000
    local = query.load_prices("GSPC", start="2018-12-01", cfg=cfg.with_(backend="local"))  # DuckDB
    text = query.prices_sql("GSPC", "2018-12-01", None, cfg.database)
    duck = query.sql(text, cfg.with_(backend="local"))
    _queue_athena_result(aws_env, list(duck.columns),
                         [t.replace("string", "varchar") for _, t in COLUMNS],
                         duck.astype(str).to_numpy().tolist())
    athena = query.load_prices("GSPC", start="2018-12-01")  # ALGO_BACKEND=aws: pyathena
    client = aws.client("athena")
    (qid,) = client.list_query_executions(WorkGroup=stack["WorkGroupName"])["QueryExecutionIds"]
    run = client.get_query_execution(QueryExecutionId=qid)["QueryExecution"]
    assert run["Query"] == text
    assert (run["WorkGroup"], run["QueryExecutionContext"]["Database"]) == (stack["WorkGroupName"],
                                                                             "algo_data")
    pd.testing.assert_frame_equal(athena, local)
    assert list(local.index.strftime("%Y-%m-%d")[:2]) == ["2018-12-03", "2018-12-04"]
    # Glue sees what the template defines: the code's table over the stack's bucket.
    table = aws.client("glue").get_table(DatabaseName="algo_data", Name="hist_data_daily")["Table"]
    assert table["StorageDescriptor"]["Location"] == f"s3://{bucket}/hist_data_daily/"
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]] == list(COLUMNS)


@MOTO_SKIPS
def test_tls_only_bucket_policy_refuses_plain_http(stack) -> None:
    """moto evaluates bucket policies: the template's policy, applied, refuses the emulator's plain
    HTTP endpoint, which is what AWS does to any client that does not use TLS."""
    from botocore.exceptions import ClientError

    s3 = aws.client("s3")
    bucket = stack["BucketName"]
    s3.put_object(Bucket=bucket, Key="probe.txt", Body=b"x")
    s3.put_bucket_policy(Bucket=bucket, Policy=stack["BucketPolicy"])
    for call in (lambda: s3.get_object(Bucket=bucket, Key="probe.txt"),
                 lambda: s3.put_object(Bucket=bucket, Key="other.txt", Body=b"y")):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
