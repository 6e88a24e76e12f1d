"""The AWS edge: boto3 clients, a stack's outputs, Athena SQL and the Glue table.

Functions here take plain values (names, URLs, a region), never the settings object: config.py
reads the settings and turns a stack's outputs into them (config.apply_stack_outputs), and this
module is below it. boto3 and pyathena are imported inside the functions, so the local backend
never needs them. Every client honours the standard AWS variables (AWS_ENDPOINT_URL included),
which is how the tests point the same code at a moto server.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from algotrading.errors import StackError
from algotrading.schema import COLUMNS, TABLE

if TYPE_CHECKING:
    import pandas as pd

ATHENA_OUTPUT_ENV = "ALGO_ATHENA_OUTPUT"


def resolve_region(region: str | None = None) -> str | None:
    """`region`, else AWS_REGION, else AWS_DEFAULT_REGION: botocore itself reads only the last.
    The one place the package looks a region up; Settings.region is only an explicit override."""
    env = os.environ
    return region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


def client(service: str, region: str | None = None) -> Any:
    """A boto3 client; botocore (>= 1.31) applies AWS_ENDPOINT_URL[_<SERVICE>] by itself."""
    import boto3

    return boto3.client(service, region_name=resolve_region(region))


def stack_outputs(stack_name: str, region: str | None = None) -> dict[str, str]:
    """The stack's outputs by key, from CloudFormation DescribeStacks."""
    from botocore.exceptions import ClientError

    try:
        stacks = client("cloudformation", region).describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise StackError(f"CloudFormation stack {stack_name!r}: "
                          f"{exc.response['Error'].get('Message', exc)}") from exc
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def athena_sql(text: str, database: str, workgroup: str | None = None,
               region: str | None = None) -> pd.DataFrame:
    """Run `text` on Athena in `workgroup` / `database` and return a DataFrame.

    Results go to the workgroup's result location; ALGO_ATHENA_OUTPUT (an s3:// URL) overrides it.
    """
    from pyathena import connect
    from pyathena.error import ProgrammingError
    from pyathena.pandas.cursor import PandasCursor

    try:
        conn = connect(work_group=workgroup, schema_name=database,
                       region_name=resolve_region(region),
                       s3_staging_dir=os.environ.get(ATHENA_OUTPUT_ENV) or None,
                       cursor_class=PandasCursor)
    except ProgrammingError as exc:
        raise ValueError("Athena needs a workgroup (ALGO_WORKGROUP or ALGO_STACK) or a result "
                         f"location ({ATHENA_OUTPUT_ENV}=s3://...)") from exc
    with conn:
        return conn.cursor().execute(text).as_pandas()


def glue_table_input(database: str, bucket_prefix: str) -> dict[str, Any]:
    """`DatabaseName` and `TableInput` of the hist_data_daily table over `<lake>/hist_data_daily/`,
    built from schema.COLUMNS: the arguments of Glue CreateTable and the properties of an
    AWS::Glue::Table, so the CloudFormation template can be checked against this one definition.

    The lake's CSV is unquoted with one header line: LazySimpleSerDe with the header skipped.
    """
    return {
        "DatabaseName": database,
        "TableInput": {
            "Name": TABLE,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "csv", "skip.header.line.count": "1",
                           "EXTERNAL": "TRUE"},
            "StorageDescriptor": {
                "Columns": [{"Name": name, "Type": kind} for name, kind in COLUMNS],
                "Location": f"{bucket_prefix.rstrip('/')}/{TABLE}/",
                "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
                "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                "SerdeInfo": {
                    "SerializationLibrary": "org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
                    "Parameters": {"field.delim": ",", "serialization.format": ","},
                },
            },
        },
    }


def ensure_glue_table(database: str, lake: str, region: str | None = None) -> dict[str, Any]:
    """Create (or bring up to date) the Glue `database` and hist_data_daily table over the S3
    `lake` (an s3:// URL, e.g. `settings().lake_path()`), so Athena sees what was ingested without a
    stack update; returns the table input."""
    if not lake.startswith("s3://"):
        raise ValueError(f"the Glue table needs an s3:// lake; ALGO_LAKE is {lake!r}")
    glue = client("glue", region)
    spec = glue_table_input(database, lake.rstrip("/"))
    try:
        glue.get_database(Name=database)
    except glue.exceptions.EntityNotFoundException:
        glue.create_database(DatabaseInput={"Name": database})
    try:
        glue.create_table(**spec)
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(**spec)
    return spec
