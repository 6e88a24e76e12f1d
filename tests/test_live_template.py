"""The paper/live trading part of the CloudFormation template (EnableLiveTrading), read as data:
off by default, least privilege, private subnets, everything encrypted, and in agreement with the
code (journal key schema, environment variables, metric lines). cfn-lint and checkov cover the
whole template in tests/test_template.py. What only a deployment proves: that the task starts,
pulls its image and reaches the vendor and broker through the subnets' NAT or endpoints.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

cfnlint_decode = pytest.importorskip("cfnlint.decode")

from test_template import TEMPLATE, as_list  # noqa: E402

from algotrading.live import alerts  # noqa: E402

KEY = {"Fn::If": ["CreateKey", {"Fn::GetAtt": ["Key", "Arn"]}, {"Ref": "KmsKeyArn"}]}


@pytest.fixture(scope="module")
def cfn() -> dict:
    data, problems = cfnlint_decode.decode(str(TEMPLATE))
    assert not problems
    return json.loads(json.dumps(data))


def live(template: dict) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if k.startswith("Live")}


def policy(resource: dict) -> list[dict]:
    return [s for p in resource["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def test_off_by_default_and_needs_private_subnets(cfn) -> None:
    assert cfn["Parameters"]["EnableLiveTrading"]["Default"] == "false"
    assert {r.get("Condition") for r in live(cfn).values()} == {"LiveOn"}
    on = cfn["Conditions"]["LiveOn"]["Fn::And"]
    assert on[0] == {"Fn::Equals": [{"Ref": "EnableLiveTrading"}, "true"]}
    assert all(o.get("Condition") == "LiveOn" for k, o in cfn["Outputs"].items()
               if k.startswith("Live"))
    schedule = live(cfn)["LiveSchedule"]["Properties"]
    (target,) = schedule["Targets"]
    network = target["EcsParameters"]["NetworkConfiguration"]["AwsVpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert network["Subnets"] == {"Ref": "LiveSubnetIds"}
    assert schedule["ScheduleExpression"] == {"Ref": "LiveScheduleExpression"}
    assert "MON-FRI" in cfn["Parameters"]["LiveScheduleExpression"]["Default"]
    group = live(cfn)["LiveSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group


def test_journal_logs_and_topic_are_encrypted_with_the_key(cfn) -> None:
    res = live(cfn)
    table = res["LiveJournalTable"]["Properties"]
    assert table["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    # the key schema DynamoJournal.create_table uses (tests/test_live_aws.py runs it on moto)
    assert table["KeySchema"] == [{"AttributeName": "run", "KeyType": "HASH"},
                                  {"AttributeName": "key", "KeyType": "RANGE"}]
    assert res["LiveLogGroup"]["Properties"]["KmsKeyId"] == KEY
    assert res["LiveLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert min(cfn["Parameters"]["LogRetentionDays"]["AllowedValues"]) >= 30
    assert res["LiveAlertTopic"]["Properties"]["KmsMasterKeyId"] == KEY
    (logs,) = [s for s in cfn["Resources"]["Key"]["Properties"]["KeyPolicy"]["Statement"]
               if s.get("Principal", {}).get("Service", {}) != {} and "logs" in json.dumps(s["Principal"])]
    assert "log-group:/algotrading/*" in json.dumps(logs["Condition"])


def test_roles_are_least_privilege(cfn) -> None:
    res = live(cfn)
    task = policy(res["LiveTaskRole"])
    assert sorted(a for s in task for a in as_list(s["Action"])) == sorted([
        "s3:GetObject", "s3:ListBucket", "dynamodb:Query", "dynamodb:GetItem", "dynamodb:PutItem",
        "sns:Publish", "kms:Decrypt", "kms:GenerateDataKey"])  # no update or delete of the journal
    assert all(s["Resource"] != "*" for s in task)
    schedule = policy(res["LiveScheduleRole"])
    (run,) = [s for s in schedule if s["Action"] == "ecs:RunTask"]
    assert run["Resource"] == {"Ref": "LiveTaskDefinition"}
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["LiveCluster", "Arn"]}}}
    (passing,) = [s for s in schedule if s["Action"] == "iam:PassRole"]
    assert passing["Resource"] == [{"Fn::GetAtt": ["LiveExecutionRole", "Arn"]},
                                   {"Fn::GetAtt": ["LiveTaskRole", "Arn"]}]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    for name in ("LiveTaskRole", "LiveExecutionRole", "LiveScheduleRole"):
        (trust,) = res[name]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_task_runs_the_entry_point_with_the_settings_the_code_reads(cfn) -> None:
    props = live(cfn)["LiveTaskDefinition"]["Properties"]
    assert (props["RequiresCompatibilities"], props["NetworkMode"]) == (["FARGATE"], "awsvpc")
    assert props["ExecutionRoleArn"] != props["TaskRoleArn"]
    (container,) = props["ContainerDefinitions"]
    assert container["ReadonlyRootFilesystem"] is True and container["Privileged"] is False
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "LiveLogGroup"}
    env = {e["Name"] for e in container["Environment"]}
    code = open("lib/algotrading/live/__main__.py").read() + open("lib/algotrading/live/service.py").read()
    read = set(re.findall(r'"((?:ALGO|APCA)_[A-Z_]+)"', code)) - {"APCA_API_BASE_URL"}
    secrets = {s["Name"] for s in container["Secrets"]["Fn::If"][1]}
    assert read <= env | secrets | {"ALGO_ALERT_TOPIC"} and "ALGO_ALERT_TOPIC" in env
    assert secrets == {"APCA_API_KEY_ID", "APCA_API_SECRET_KEY"}  # keys only from Secrets Manager
    assert "Dockerfile" in open("lib/algotrading/live/__main__.py").read()
    dockerfile = open("Dockerfile").read()
    assert 'ENTRYPOINT ["python", "-m", "algotrading.live"]' in dockerfile and "USER 10001" in dockerfile
    assert container["User"] == "10001"


def test_metric_filters_match_the_runners_log_lines(cfn, caplog) -> None:
    filters = [r["Properties"] for r in live(cfn).values() if r["Type"] == "AWS::Logs::MetricFilter"]
    assert filters
    with caplog.at_level(logging.INFO, logger="algotrading.live.metrics"):
        alerts.log_metrics("run", "SPY", "2026-01-02", {"drawdown": 0.05, "pnl": -12.5, "equity": 1.0})
    lines = [json.loads(r.message) for r in caplog.records]
    for f in filters:
        name = re.fullmatch(r'\{ \$\.metric = "(\w+)" \}', f["FilterPattern"]).group(1)
        (transform,) = f["MetricTransformations"]
        assert transform["MetricValue"] == "$.value"
        (line,) = [x for x in lines if x["metric"] == name]  # the pattern selects exactly one line
        assert isinstance(line["value"], float)


def test_operations_alert_someone(cfn) -> None:
    """Issue 20 item 8: a failed start is retried then dead-lettered (and alarms), a task that
    exits non-zero alerts, drawdown and silence alarm, the topic refuses plain HTTP, and
    SageMaker's own log groups get the key and a retention."""
    res = live(cfn)
    (target,) = res["LiveSchedule"]["Properties"]["Targets"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["LiveDeadLetterQueue", "Arn"]}}
    assert res["LiveDeadLetterQueue"]["Properties"]["KmsMasterKeyId"] == KEY
    rule = res["LiveTaskFailedRule"]["Properties"]
    assert rule["EventPattern"]["detail"]["lastStatus"] == ["STOPPED"]
    assert rule["EventPattern"]["detail"]["containers"]["exitCode"] == [{"anything-but": 0}]
    assert rule["Targets"][0]["Arn"] == {"Ref": "LiveAlertTopic"}
    alarms = {name: r["Properties"] for name, r in res.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert {a["MetricName"] for a in alarms.values()} == {"ApproximateNumberOfMessagesVisible",
                                                         "Drawdown", "PnL"}
    assert all(a["AlarmActions"] == [{"Ref": "LiveAlertTopic"}] for a in alarms.values())
    (deny,) = [s for s in res["LiveAlertTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
               if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    for name in ("TrainingJobLogGroup", "NotebookLogGroup"):
        props = cfn["Resources"][name]["Properties"]
        assert props["KmsKeyId"] == KEY and props["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    (logs,) = [s for s in cfn["Resources"]["Key"]["Properties"]["KeyPolicy"]["Statement"]
               if s["Sid"] == "CloudWatchLogsEncryptsTheRunnersLogGroup"]
    assert any(a.get("Fn::Sub", "").endswith(":log-group:/aws/sagemaker/TrainingJobs")
               for a in logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"])
