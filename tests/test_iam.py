"""Every AWS code path run as the principal that runs it in production, with that role's policy
taken from cloudformation/algotrading.yaml, against moto with IAM enforced.

Two checks per path:

1. **moto enforces** (server mode, `/moto-api/reset-auth` 0: every request is authorised). The
   role's inline policies are rendered from the template and put on the role; the code runs with
   credentials from sts:AssumeRole of that role. moto evaluates identity policies by action for
   every service, and by resource only for S3 (and IAM, STS, SQS); for the other services it asks
   about resource "*", and it cannot evaluate conditions (it treats any condition as unmet). So
   the policies given to moto keep S3's resources and, for the other services, only the actions
   (resource "*", no conditions).
2. **the policy-level check** (`allowed` below): every call the path made (recorded from botocore
   in this process), mapped to its IAM action and resource ARN, plus the calls AWS makes
   implicitly on the caller's permissions (kms:GenerateDataKey / kms:Decrypt for SSE-KMS objects,
   iam:PassRole with iam:PassedToService for a job's role, the job-creation condition keys), is
   allowed by the template's statements as written: resources, conditions and all.

What only a real account proves: that IAM evaluates these policies as this file does (service
control policies, permissions boundaries, resource policies other than the bucket's, the KMS key
policy, VPC endpoint policies); the calls SageMaker, ECS and EventBridge make on the roles' behalf
(emulated here from the recorded requests: a job's channel downloads and output upload); and the
AWS SDK's calls that moto does not serve.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytest.importorskip("moto.server")
pytest.importorskip("sagemaker.train")

from test_aws import (  # noqa: E402,F401  (the shared moto fixtures and template helpers)
    REGION,
    STACK,
    _deploy,
    _post,
    _queue_athena_result,
    _template,
    aws_env,
    moto_url,
    render,
)

from algotrading import aws, cli, config, jobs, lake, query, schema, sources  # noqa: E402
from algotrading.backtest import job  # noqa: E402
from algotrading.schema import COLUMNS  # noqa: E402

pytestmark = [pytest.mark.aws,
              pytest.mark.filterwarnings("ignore:Tried to parse AWS::.*not supported by moto")]

ACCOUNT = "123456789012"
LIFECYCLE = Path(__file__).resolve().parents[1] / "cloudformation" / "notebook-lifecycle.sh"
# services moto authorises by resource (the rest it asks about "*")
MOTO_RESOURCE_SERVICES = ("s3", "iam", "sts", "sqs")
# Calls whose AccessDenied the caller handles: boto3's Bucket.creation_date (the SageMaker SDK's
# bucket check) lists all buckets and treats AccessDenied as "not known", then HEADs the bucket.
TOLERATED = ("s3:ListAllMyBuckets",)


# --- the template's policies, rendered -------------------------------------------------------

def role_statements(template: dict, role: str, refs: dict, conditions: dict) -> list[dict]:
    props = template["Resources"][role]["Properties"]
    return [s for p in render(props["Policies"], refs, conditions) if p is not None  # NoValue
            for s in p["PolicyDocument"]["Statement"]]


def for_moto(statements: list[dict]) -> dict:
    """What moto can evaluate (see the module docstring)."""
    out = []
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        if all(a.split(":")[0] in MOTO_RESOURCE_SERVICES for a in actions):
            out.append({k: v for k, v in s.items() if k != "Condition"})
        else:
            out.append({"Effect": s["Effect"], "Action": actions, "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": out}


# --- the policy-level evaluator --------------------------------------------------------------

def _match(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("?", "[?]"))


def _condition_ok(condition: dict, context: dict[str, Any]) -> bool:
    for op, tests in condition.items():
        for key, want in tests.items():
            wants = want if isinstance(want, list) else [want]
            have = context.get(key)
            if op == "Null":  # "false": the key must be in the request
                if (have is None) != (str(want).lower() == "true"):
                    return False
                continue
            if op == "ForAllValues:StringEquals":  # every value listed (vacuously true if absent)
                if not all(v in wants for v in (have or [])):
                    return False
                continue
            if have is None:
                return False
            if op in ("StringEquals", "ArnEquals", "Bool"):
                ok = str(have).lower() in [str(w).lower() for w in wants] if op == "Bool" \
                    else have in wants
            elif op in ("StringLike", "ArnLike"):
                ok = any(_match(w, have) for w in wants)
            else:
                raise AssertionError(f"condition operator {op} not modelled here")
            if not ok:
                return False
    return True


def allowed(statements: list[dict], action: str, resource: str,
            context: dict[str, str] | None = None) -> bool:
    """IAM's identity-policy logic: an explicit deny wins, else some allow must match."""
    context = context or {}
    verdict = False
    for s in statements:
        actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        if not any(_match(a, action) for a in actions):
            continue
        if not any(_match(r, resource) for r in resources):
            continue
        if not _condition_ok(s.get("Condition", {}), context):
            continue
        if s["Effect"] == "Deny":
            return False
        verdict = True
    return verdict


def key_policy_allows(statements: list[dict], principal: str, action: str, key: str,
                      context: dict[str, str] | None = None) -> bool:
    """KMS's key-policy logic for a principal of the key's account: the statements that name it
    or the account root apply, with aws:PrincipalArn set (an account-root statement still needs
    the principal's IAM policy too: `allowed` checks that separately)."""
    root = f"arn:aws:iam::{principal.split(':')[4]}:root"
    mine = [s for s in statements
            if {principal, root} & set(as_list(s.get("Principal", {}).get("AWS", [])))]
    return allowed(mine, action, key, {"aws:PrincipalArn": principal, **(context or {})})


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# --- calls as made, and as IAM sees them ------------------------------------------------------

class Calls:
    """Every botocore API call made in this process while recording."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def permissions(self, bucket_key: str, stack_id: str) -> list[tuple[str, str, dict[str, str]]]:
        """(action, resource, condition context) for each call, implicit ones included."""
        out, workgroup = [], "primary"
        for service, op, p in self.seen:
            if service == "athena":  # Get* name the query only: it runs in its start's workgroup
                workgroup = p.get("WorkGroup", workgroup)
                p = {**p, "WorkGroup": workgroup}
            out += _iam_view(service, op, p, bucket_key, stack_id)
        return out


def _vpc_keys(request: dict) -> dict[str, list[str]]:
    """sagemaker:VpcSubnets / VpcSecurityGroupIds of a job request (absent outside a VPC)."""
    vpc = request.get("VpcConfig")
    return {"sagemaker:VpcSubnets": vpc["Subnets"],
            "sagemaker:VpcSecurityGroupIds": vpc["SecurityGroupIds"]} if vpc else {}


def _isolation_key(request: dict) -> dict[str, str]:
    """sagemaker:NetworkIsolation of a job request: its EnableNetworkIsolation, when stated."""
    stated = request.get("EnableNetworkIsolation")
    return {} if stated is None else {"sagemaker:NetworkIsolation": str(bool(stated)).lower()}


def _iam_view(service: str, op: str, p: dict, key_arn: str,
              stack_id: str) -> list[tuple[str, str, dict[str, str]]]:
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    action = f"{service}:{op}"
    if service == "s3":
        bucket = p.get("Bucket", "")
        obj = p.get("Key")
        names = {"ListBuckets": "ListAllMyBuckets", "HeadObject": "GetObject",
                 "ListObjectsV2": "ListBucket", "CopyObject": "PutObject",
                 "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject",
                 "CompleteMultipartUpload": "PutObject", "HeadBucket": "ListBucket"}
        action = f"s3:{names.get(op, op)}"
        resource = f"arn:aws:s3:::{bucket}/{obj}" if obj is not None and op != "ListObjectsV2" \
            else f"arn:aws:s3:::{bucket}" if bucket else "*"
        out = [(action, resource, {})]
        if op == "CopyObject":
            src = p["CopySource"]
            src = src if isinstance(src, str) else f"{src['Bucket']}/{src['Key']}"
            out.append(("s3:GetObject", f"arn:aws:s3:::{src}", {}))
            out.append(("kms:Decrypt", key_arn, {}))
        if action == "s3:PutObject":
            out.append(("kms:GenerateDataKey", key_arn, {}))  # the bucket's default is SSE-KMS
        if action == "s3:GetObject":
            out.append(("kms:Decrypt", key_arn, {}))
        return out
    if service == "dynamodb":
        return [(action, arn.format("dynamodb", f"table/{p['TableName']}"), {})]
    if service == "sns":
        return [(action, p["TopicArn"], {})]
    if service == "cloudformation":
        return [(action, stack_id, {})]
    if service == "athena":
        group = p.get("WorkGroup", "primary")
        return [(action, arn.format("athena", f"workgroup/{group}"), {})]
    if service == "glue":
        db, table = p.get("DatabaseName"), p.get("Name") or p.get("TableInput", {}).get("Name")
        return [(action, arn.format("glue", "catalog"), {}),
                (action, arn.format("glue", f"database/{db}"), {}),
                *([(action, arn.format("glue", f"table/{db}/{table}"), {})] if table else [])]
    if service == "sagemaker":
        if op in ("CreateTrainingJob", "DescribeTrainingJob", "StopTrainingJob"):
            name = p["TrainingJobName"]
            out = [(action, arn.format("sagemaker", f"training-job/{name.lower()}"), {
                "sagemaker:VolumeKmsKey": p.get("ResourceConfig", {}).get("VolumeKmsKeyId", ""),
                "sagemaker:OutputKmsKey": p.get("OutputDataConfig", {}).get("KmsKeyId", ""),
                **_vpc_keys(p), **_isolation_key(p)} if op == "CreateTrainingJob" else {})]
            if op == "CreateTrainingJob":
                out.append(("iam:PassRole", p["RoleArn"],
                            {"iam:PassedToService": "sagemaker.amazonaws.com"}))
            return out
        if op in ("CreateHyperParameterTuningJob", "DescribeHyperParameterTuningJob"):
            name = p["HyperParameterTuningJobName"]
            out = [(action, arn.format("sagemaker", f"hyper-parameter-tuning-job/{name.lower()}"),
                    {"sagemaker:OutputKmsKey": p.get("TrainingJobDefinition", {}).get(
                        "OutputDataConfig", {}).get("KmsKeyId", ""),
                     **_vpc_keys(p.get("TrainingJobDefinition", {})),
                     **_isolation_key(p.get("TrainingJobDefinition", {}))}
                    if op.startswith("Create") else {})]
            if op.startswith("Create"):
                out.append(("iam:PassRole", p["TrainingJobDefinition"]["RoleArn"],
                            {"iam:PassedToService": "sagemaker.amazonaws.com"}))
            return out
    if service == "iam" and op in ("SimulatePrincipalPolicy", "GetRole"):
        role = p.get("PolicySourceArn") or f"arn:aws:iam::{ACCOUNT}:role/{p['RoleName']}"
        return [(action, role, {})]
    if service == "sts" and op == "GetCallerIdentity":
        return []  # needs no permission
    raise AssertionError(f"no IAM mapping for {service}:{op} here; add it")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    from botocore.client import BaseClient

    record = Calls()
    real = BaseClient._make_api_call

    def spy(self: Any, operation: str, params: dict) -> Any:
        record.seen.append((self.meta.service_model.endpoint_prefix.replace("api.", ""),
                            operation, params))
        return real(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", spy)
    return record


# --- the deployed stack, its roles, and enforcement --------------------------------------------

class Stack:
    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        import boto3

        self.url, self.mp = url, monkeypatch
        self.template = _template()
        cf = aws.client("cloudformation")
        self.outputs = _deploy()  # plus the Glue table and Athena workgroup moto's CFN skips
        self.stack_id = cf.describe_stacks(StackName=STACK)["Stacks"][0]["StackId"]
        self.bucket, self.key = self.outputs["BucketName"], self.outputs["KmsKeyArn"]
        params = {k: v.get("Default", "") for k, v in self.template["Parameters"].items()}
        self.table, self.topic = "algo-live-journal", \
            aws.client("sns").create_topic(Name="algo-alerts")["TopicArn"]
        aws.client("dynamodb").create_table(
            TableName=self.table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "run", "AttributeType": "S"},
                                  {"AttributeName": "key", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "run", "KeyType": "HASH"},
                       {"AttributeName": "key", "KeyType": "RANGE"}])
        self.workgroup = self.outputs["WorkGroupName"]
        self.refs = {**params, "AWS::StackName": STACK, "AWS::Region": REGION,
                     "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws", "AWS::StackId": self.stack_id,
                     "AWS::NoValue": None, "WorkGroup": self.workgroup,
                     "LiveImageUri": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/algo-live@sha256:" + "0" * 64,
                     "Key.Arn": self.key, "DataBucket.Arn": f"arn:aws:s3:::{self.bucket}",
                     "JobRole.Arn": self.outputs["JobRoleArn"],
                     "LiveJournalTable.Arn": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{self.table}",
                     "LiveAlertTopic": self.topic,
                     "LiveLogGroup.Arn":
                         f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/algotrading/{STACK}/live:*"}
        self.conditions = {"CreateKey": True, "InVpc": False, "IsolateJobs": True, "HasRepository": False,
                           "HasBoundary": False, "LiveWithAlpacaKeys": False, "HasKeyAdmins": False}
        self.key_policy = render(self.template["Resources"]["Key"]["Properties"]["KeyPolicy"],
                                 self.refs, self.conditions)["Statement"]
        iam = aws.client("iam")
        self.policies: dict[str, list[dict]] = {}
        self.arns = {"Role": self.outputs["SageMakerRoleArn"], "JobRole": self.outputs["JobRoleArn"]}
        trust = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "sts:AssumeRole"}]})
        for name in ("LiveTaskRole",):  # the live roles are off by default: create them here
            self.arns[name] = iam.create_role(RoleName=f"{STACK}-{name}",
                                              AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        for name, arn in self.arns.items():
            role = arn.split("/")[-1]
            statements = role_statements(self.template, name, self.refs, self.conditions)
            self.policies[name] = statements
            for old in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                iam.delete_role_policy(RoleName=role, PolicyName=old)
            iam.put_role_policy(RoleName=role, PolicyName="template",
                                PolicyDocument=json.dumps(for_moto(statements)))
        # an administrator, for the tests' own setup and inspection while IAM is enforced
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                    "Resource": "*"}]}))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = (key["AccessKeyId"], key["SecretAccessKey"], None)
        self.sessions = {}
        for name, arn in self.arns.items():
            c = aws.client("sts").assume_role(RoleArn=arn, RoleSessionName=name)["Credentials"]
            self.sessions[name] = (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
        boto3.DEFAULT_SESSION = None

    def become(self, principal: str) -> None:
        """Every client created from now on signs as `principal` ("admin" or a role)."""
        import boto3

        key, secret, token = self.admin if principal == "admin" else self.sessions[principal]
        self.mp.setenv("AWS_ACCESS_KEY_ID", key)
        self.mp.setenv("AWS_SECRET_ACCESS_KEY", secret)
        if token:
            self.mp.setenv("AWS_SESSION_TOKEN", token)
        else:
            self.mp.delenv("AWS_SESSION_TOKEN", raising=False)
        boto3.DEFAULT_SESSION = None
        config.stack_outputs.cache_clear()

    def check(self, principal: str, seen: Calls) -> list[tuple[str, str]]:
        """The policy-level check: every permission the recorded calls needed, against the
        template's statements for `principal`; returns the (action, resource) pairs checked."""
        needed = seen.permissions(self.key, self.stack_id)
        denied = [(a, r, c) for a, r, c in needed if not allowed(self.policies[principal], a, r, c)
                  and a not in TOLERATED]
        assert denied == [], f"{principal} lacks: {denied}"
        # the key's own policy must let the role use the key too (as the template names the role)
        arn = f"arn:aws:iam::{ACCOUNT}:role/" + render(
            self.template["Resources"][principal]["Properties"]["RoleName"], self.refs, self.conditions)
        refused = [(a, c) for a, r, c in needed if r == self.key
                   and not key_policy_allows(self.key_policy, arn, a, self.key, c)]
        assert refused == [], f"the key policy refuses {principal}: {refused}"
        return sorted({(a, r) for a, r, _ in needed})


@pytest.fixture
def stack(aws_env: str,  # noqa: F811
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")  # moto has no SimulatePrincipalPolicy
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    deployed = Stack(aws_env, monkeypatch)
    monkeypatch.setenv("ALGO_STACK", STACK)
    monkeypatch.setenv("ALGO_WORKGROUP", deployed.workgroup)
    _post(f"{aws_env}/moto-api/reset-auth", 0)
    try:
        yield deployed
    finally:
        _post(f"{aws_env}/moto-api/reset-auth", float("inf"))
        import boto3

        boto3.DEFAULT_SESSION = None


def _denied(call: Any) -> bool:
    """The call was refused for lack of permission (403: S3 says AccessDenied, or only 403 for
    a HEAD, which has no body)."""
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as err:
        call()
    response = err.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"] == 403 and \
        response["Error"]["Code"] in ("403", "AccessDenied")


# --- the paths -------------------------------------------------------------------------------

def test_moto_enforces_the_template_policy(stack: Stack) -> None:
    """The harness itself: moto refuses what the policies do not grant."""
    stack.become("LiveTaskRole")
    s3 = aws.client("s3")
    assert _denied(lambda: s3.head_object(Bucket=stack.bucket, Key=lake.JOURNAL))
    assert _denied(lambda: s3.put_object(Bucket=stack.bucket, Key="hist_data_daily/X.csv",
                                         Body=b""))
    assert _denied(lambda: aws.client("sagemaker").list_training_jobs())
    stack.become("Role")
    assert _denied(lambda: aws.client("s3").delete_object(
        Bucket=stack.bucket, Key="hist_data_daily/GSPC.csv"))


def _ingest(stack: Stack, calls: Calls) -> list[tuple[str, str]]:
    stack.become("Role")
    calls.seen.clear()
    assert cli.main(["ingest", "sample"]) == 0
    return stack.check("Role", calls)


def test_ingest_as_the_notebook_role(stack: Stack, calls: Calls) -> None:
    checked = _ingest(stack, calls)
    assert ("s3:DeleteObject", f"arn:aws:s3:::{stack.bucket}/.algotrading/lock") in checked
    assert ("cloudformation:DescribeStacks", stack.stack_id) in checked
    stack.become("admin")
    keys = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=stack.bucket)["Contents"]]
    assert sorted(keys) == ["hist_data_daily/GSPC.csv", "hist_data_daily/IXIC.csv",
                                 "provenance/GSPC.json", "provenance/IXIC.json"]


def test_query_as_the_notebook_role(stack: Stack, calls: Calls) -> None:
    _ingest(stack, calls)
    local = query.load_prices("GSPC", start="2018-12-01",
                              cfg=config.settings().with_(backend="local"))
    text = query.prices_sql("GSPC", "2018-12-01", None, "algo_data")
    _queue_athena_result(stack.url, [n for n, _ in COLUMNS],
                         [t.replace("string", "varchar") for _, t in COLUMNS],
                         local.reset_index().assign(dt=lambda f: f["dt"].dt.strftime("%Y-%m-%d"),
                                                    sym="GSPC")[[n for n, _ in COLUMNS]]
                         .astype(str).to_numpy().tolist())
    calls.seen.clear()
    athena = query.load_prices("GSPC", start="2018-12-01", cfg=config.settings().with_(backend="aws"))
    pd.testing.assert_frame_equal(athena, local)
    checked = stack.check("Role", calls)
    assert ("athena:StartQueryExecution",
            f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/{stack.workgroup}") in checked
    (start,) = [p for svc, op, p in calls.seen if op == "StartQueryExecution"]
    assert (start["QueryString"], start["WorkGroup"]) == (text, stack.workgroup)


def test_live_runner_reads_the_lake_as_the_task_role(stack: Stack, calls: Calls,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 1: the runner's task role may read hist_data_daily/ only; the lake read,
    the DynamoDB journal and the SNS alerts all run under it, with the container's settings."""
    from algotrading.live import service

    _ingest(stack, calls)
    stack.become("LiveTaskRole")
    for name, value in {"ALGO_BACKEND": "local", "ALGO_LAKE": f"s3://{stack.bucket}",
                        "ALGO_JOURNAL": f"dynamodb://{stack.table}",
                        "ALGO_ALERT_TOPIC": stack.topic}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ALGO_STACK")  # the task definition sets ALGO_LAKE, not the stack
    calls.seen.clear()
    history = query.load_prices("GSPC", end="2018-12-31")  # service.poll's history read
    assert history.index[-1] == pd.Timestamp("2018-12-31")
    summary = service.replay("sma", "GSPC", "2018-06-01", end="2018-12-31",
                             params={"size": 10, "fast_period": 5, "slow_period": 20},
                             alerts={"loss": 1.0, "drawdown": 0.0001}, run="iam-test")
    assert summary
    checked = stack.check("LiveTaskRole", calls)
    ops = {a for a, _ in checked}
    assert {"s3:GetObject", "dynamodb:PutItem", "dynamodb:Query", "sns:Publish"} <= ops
    assert not [r for a, r in checked if a == "s3:GetObject" and "/hist_data_daily/" not in r]


def _as_the_job(stack: Stack, request: dict, definition: dict | None = None) -> list[str]:
    """What SageMaker does with the job's role: download each S3 input channel, upload the
    output. Returns the objects read."""
    spec = definition or request
    stack.become("JobRole")
    s3 = aws.client("s3")
    read = []
    for channel in spec["InputDataConfig"]:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        bucket, _, prefix = uri[5:].partition("/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
        assert keys, uri
        for k in keys:
            s3.get_object(Bucket=bucket, Key=k)
            read.append(k)
    for static in ("sagemaker_submit_directory",):
        uri = spec.get("StaticHyperParameters", {}).get(static)
        if uri:
            bucket, _, k = uri[5:].partition("/")
            s3.get_object(Bucket=bucket, Key=k)
            read.append(k)
    out = spec["OutputDataConfig"]["S3OutputPath"]
    bucket, _, prefix = out[5:].partition("/")
    name = request.get("TrainingJobName") or request["HyperParameterTuningJobName"]
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}/output/model.tar.gz", Body=b"x",
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=spec["OutputDataConfig"]["KmsKeyId"])
    return read


def _created(calls: Calls, op: str) -> list[dict]:
    return [p for s, o, p in calls.seen if s == "sagemaker" and o == op]


def test_sweep_shards_as_the_notebook_role_and_the_jobs_as_the_job_role(stack: Stack,
                                                                        calls: Calls) -> None:
    _ingest(stack, calls)
    calls.seen.clear()
    grid = {"fast_period": list(range(5, 201)), "slow_period": list(range(20, 401))}  # item 10
    names = job.sweep_jobs("ema", "GSPC", grid, 2, requirements=())
    checked = stack.check("Role", calls)
    assert ("iam:PassRole", stack.outputs["JobRoleArn"]) in checked
    requests = _created(calls, "CreateTrainingJob")
    assert [r["TrainingJobName"] for r in requests] == names
    jobs.wait(names, poll=0)  # moto marks them Completed
    for request in requests:
        assert request["RoleArn"] == stack.outputs["JobRoleArn"]
        assert len(request["HyperParameters"]["grid"]) < job.HP_VALUE_MAX
        read = _as_the_job(stack, request)
        assert "hist_data_daily/GSPC.csv" in read
    stack.become("JobRole")
    assert _denied(lambda: aws.client("s3").put_object(
        Bucket=stack.bucket, Key="hist_data_daily/GSPC.csv", Body=b""))


def test_tune_as_the_notebook_role_and_its_trials_as_the_job_role(stack: Stack,
                                                                  calls: Calls) -> None:
    _ingest(stack, calls)
    calls.seen.clear()
    job.tune("ema", "GSPC", {"fast_period": (5, 10), "slow_period": (21, 31)},
             train=("1999-01-04", "2006-12-29"), validation=("2007-01-03", "2012-12-31"),
             params={"size": 10}, max_jobs=4, max_parallel_jobs=2, requirements=())
    stack.check("Role", calls)
    (request,) = _created(calls, "CreateHyperParameterTuningJob")
    definition = request["TrainingJobDefinition"]
    assert definition["RoleArn"] == stack.outputs["JobRoleArn"]
    assert definition["EnableNetworkIsolation"] is True
    channels = {c["ChannelName"] for c in definition["InputDataConfig"]}
    assert channels == {"prices", "sm_drivers"}
    read = _as_the_job(stack, request, definition)
    assert "hist_data_daily/GSPC.csv" in read
    assert any(k.endswith("sourcedir.tar.gz") for k in read)


def test_train_as_the_notebook_role_and_the_job_as_the_job_role(stack: Stack, calls: Calls) -> None:
    from algotrading.models import forecast, train

    prices = schema.to_prices(sources.read("sample").frame, "IXIC")
    stack.become("Role")
    calls.seen.clear()
    name = train.submit(prices, forecast.Config(symbol="IXIC", epochs=1, patience=1),
                        f"s3://{stack.bucket}/jobs/models")
    stack.check("Role", calls)
    (request,) = _created(calls, "CreateTrainingJob")
    assert request["TrainingJobName"] == name and request["RoleArn"] == stack.outputs["JobRoleArn"]
    assert request["ResourceConfig"]["VolumeKmsKeyId"] == stack.key
    assert request["EnableNetworkIsolation"] is True
    read = _as_the_job(stack, request)
    assert any(k.endswith("/requirements.txt") for k in read)  # the code channel, as the job role
    assert any("/wheels/" in k for k in read)  # ... with the lock's wheels (placeholders here)


def test_the_lifecycle_script_calls_no_aws_api() -> None:
    """The notebook's start-up script makes no AWS call (pip reads the package index; the kernel
    spec is a local file), so its role needs nothing for it: checked on the script's text."""
    text = LIFECYCLE.read_text()
    assert not re.search(r"(^|\s)aws\s|boto3|botocore|sagemaker\.|curl |wget ", text)


def test_ingest_needs_only_s3_kms_and_the_stack_outputs(stack: Stack, calls: Calls) -> None:
    """Every call of the ingest was mapped (an unmapped one fails `Calls.permissions`), and they
    touch S3, the key and the stack's outputs only (no Glue or Athena on ingest)."""
    checked = _ingest(stack, calls)
    services = {a.split(":")[0] for a, _ in checked}
    assert services == {"s3", "kms", "cloudformation"}


def test_model_output_from_a_job_is_readable_by_the_notebook(stack: Stack, calls: Calls) -> None:
    """gather_sweep (the notebook reading the jobs' outputs) runs under the notebook role."""
    _ingest(stack, calls)
    stack.become("Role")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"fast_period,slow_period,pnl\n5,20,1.0\n"
        info = tarfile.TarInfo(job.SWEEP_FILE)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    aws.client("s3").put_object(Bucket=stack.bucket, Key="jobs/sweep/j1/output/model.tar.gz",
                                Body=buf.getvalue())
    calls.seen.clear()
    table = job.gather_sweep(["j1"])
    assert table.to_dict("records") == [{"fast_period": 5, "slow_period": 20, "pnl": 1.0}]
    stack.check("Role", calls)


CRYPTO = ("kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
          "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:CreateGrant")


@pytest.mark.parametrize("admins", [[""], [f"arn:aws:iam::{ACCOUNT}:user/alice"]])
def test_key_policy_splits_administration_from_use(admins: list[str]) -> None:
    """Issue 20 item 7: the key's administrators (KeyAdminArns, else the account) can change and
    delete the key but not use it; only the stack's four roles use it (each also through its own
    IAM policy); grants only for AWS resources through SageMaker, EC2 and DynamoDB."""
    template = _template()
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k"
    refs = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::Region": REGION,
            "AWS::StackName": STACK, "NamePrefix": "algo", "KeyAdminArns": admins}
    conditions = {"HasKeyAdmins": admins != [""]}
    policy = render(template["Resources"]["Key"]["Properties"]["KeyPolicy"], refs, conditions)["Statement"]
    roles = {name: f"arn:aws:iam::{ACCOUNT}:role/" + render(
        template["Resources"][name]["Properties"]["RoleName"], refs, conditions)
        for name in ("Role", "JobRole", "LiveTaskRole", "LiveExecutionRole")}
    for name, arn in roles.items():
        needs = ["kms:Decrypt"] + (["kms:GenerateDataKey"] if name != "LiveExecutionRole" else [])
        assert all(key_policy_allows(policy, arn, a, key) for a in needs), name
        assert not key_policy_allows(policy, arn, "kms:PutKeyPolicy", key) or not conditions["HasKeyAdmins"]
    admin = admins[0] or f"arn:aws:iam::{ACCOUNT}:role/account-admin"
    for action in ("kms:PutKeyPolicy", "kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:EnableKeyRotation"):
        assert key_policy_allows(policy, admin, action, key)
    for action in CRYPTO:
        assert not key_policy_allows(policy, admin, action, key), action
    if conditions["HasKeyAdmins"]:  # then the rest of the account cannot administer it
        assert not key_policy_allows(policy, f"arn:aws:iam::{ACCOUNT}:role/other", "kms:PutKeyPolicy", key)
    grant = {"kms:GrantIsForAWSResource": "true"}
    for service in ("sagemaker", "ec2", "dynamodb"):
        assert key_policy_allows(policy, roles["Role"], "kms:CreateGrant", key,
                                 {**grant, "kms:ViaService": f"{service}.{REGION}.amazonaws.com"})
    assert not key_policy_allows(policy, roles["Role"], "kms:CreateGrant", key, grant)  # not directly
    assert not key_policy_allows(policy, admin, "kms:CreateGrant", key,
                                 {"kms:ViaService": f"s3.{REGION}.amazonaws.com"})
    for s in policy:  # no kms:* and no statement that both administers and uses
        actions = set(as_list(s["Action"]))
        assert not any(a.endswith("*") for a in actions)
        assert not (actions & set(CRYPTO) and actions & {"kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"})


def test_jobs_in_a_vpc_only_in_the_job_subnet_and_group(stack: Stack, calls: Calls,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 5: with the stack's VPC outputs (here their ALGO_* variables: moto's stack
    has no VPC) training and tuning requests carry VpcConfig, and the notebook role's policy as
    rendered for a VPC stack allows exactly those and refuses a job outside the VPC."""
    from algotrading.models import forecast, train

    subnet, group = "subnet-0123456789abcdef0", "sg-0123456789abcdef0"
    monkeypatch.setenv("ALGO_JOB_SUBNETS", subnet)
    monkeypatch.setenv("ALGO_JOB_SECURITY_GROUP", group)
    _ingest(stack, calls)
    stack.become("Role")
    calls.seen.clear()
    prices = schema.to_prices(sources.read("sample").frame, "IXIC")
    train.submit(prices, forecast.Config(symbol="IXIC", epochs=1, patience=1),
                 f"s3://{stack.bucket}/jobs/models")
    job.tune("ema", "GSPC", {"fast_period": (5, 10), "slow_period": (21, 31)},
             train=("1999-01-04", "2006-12-29"), validation=("2007-01-03", "2012-12-31"),
             params={"size": 10}, max_jobs=2, max_parallel_jobs=1, requirements=())
    (trained,) = _created(calls, "CreateTrainingJob")
    (tuned,) = _created(calls, "CreateHyperParameterTuningJob")
    expected = {"Subnets": [subnet], "SecurityGroupIds": [group]}
    assert trained["VpcConfig"] == expected and tuned["TrainingJobDefinition"]["VpcConfig"] == expected
    in_vpc = role_statements(stack.template, "Role", {**stack.refs, "SubnetId": subnet,
                                                      "JobSecurityGroup": group},
                             {**stack.conditions, "InVpc": True})
    needed = calls.permissions(stack.key, stack.stack_id)
    assert [(a, r) for a, r, c in needed if not allowed(in_vpc, a, r, c) and a not in TOLERATED] == []
    creates = [(a, r, c) for a, r, c in needed if a in ("sagemaker:CreateTrainingJob",
                                                        "sagemaker:CreateHyperParameterTuningJob")]
    assert len(creates) == 2
    for action, resource, context in creates:
        outside = {k: v for k, v in context.items() if not k.startswith("sagemaker:Vpc")}
        other = {**context, "sagemaker:VpcSubnets": ["subnet-0fffffffffffffff0"]}
        assert not allowed(in_vpc, action, resource, outside)
        assert not allowed(in_vpc, action, resource, other)
        assert allowed(stack.policies["Role"], action, resource, outside)  # the stack without a VPC


def test_jobs_only_with_network_isolation(stack: Stack, calls: Calls,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Training and tuning requests carry EnableNetworkIsolation true by default (the tuning
    definition's is added to what the SDK builds, with the trials' volume key); the notebook
    role's policy allows them and refuses the same requests with isolation false or unstated.
    A stack deployed with JobNetworkIsolation=false allows a job either way, still stated, and
    ALGO_JOB_NETWORK_ISOLATION=false sends false. moto does not evaluate condition keys, so
    this is the policy-level evaluator against the template's statements."""
    from algotrading.models import forecast, train

    _ingest(stack, calls)
    prices = schema.to_prices(sources.read("sample").frame, "IXIC")
    relaxed = role_statements(stack.template, "Role", {**stack.refs, "JobNetworkIsolation": "false"},
                              {**stack.conditions, "IsolateJobs": False})
    for isolated in (True, False):
        monkeypatch.setenv("ALGO_JOB_NETWORK_ISOLATION", str(isolated).lower())
        stack.become("Role")
        calls.seen.clear()
        train.submit(prices, forecast.Config(symbol="IXIC", epochs=1, patience=1),
                     f"s3://{stack.bucket}/jobs/models", requirements=())
        # tuning job names have minute resolution: another strategy for the second round
        job.tune("ema" if isolated else "sma", "GSPC", {"fast_period": (5, 10), "slow_period": (21, 31)},
                 train=("1999-01-04", "2006-12-29"), validation=("2007-01-03", "2012-12-31"),
                 params={"size": 10}, max_jobs=2, max_parallel_jobs=1, requirements=())
        (trained,) = _created(calls, "CreateTrainingJob")
        (tuned,) = _created(calls, "CreateHyperParameterTuningJob")
        definition = tuned["TrainingJobDefinition"]
        assert trained["EnableNetworkIsolation"] is isolated
        assert definition["EnableNetworkIsolation"] is isolated
        assert definition["ResourceConfig"]["VolumeKmsKeyId"] == stack.key
        needed = calls.permissions(stack.key, stack.stack_id)
        creates = [(a, r, c) for a, r, c in needed if a in ("sagemaker:CreateTrainingJob",
                                                            "sagemaker:CreateHyperParameterTuningJob")]
        assert len(creates) == 2
        for action, resource, context in creates:
            assert context["sagemaker:NetworkIsolation"] == str(isolated).lower()
            assert allowed(stack.policies["Role"], action, resource, context) is isolated
            assert allowed(relaxed, action, resource, context)
            unstated = {k: v for k, v in context.items() if k != "sagemaker:NetworkIsolation"}
            assert not allowed(stack.policies["Role"], action, resource, unstated)
            assert not allowed(relaxed, action, resource, unstated)
        if isolated:
            stack.check("Role", calls)  # and everything else the two submissions needed
