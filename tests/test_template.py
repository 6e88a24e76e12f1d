"""The CloudFormation template, read as data: linters, our own policy rules, the Glue table against
the code's one definition, and the notebook lifecycle script run in a fake home.

What this proves: the template is valid CloudFormation (cfn-lint), has no checkov finding, and
states what a cloud team asks for (encryption everywhere, TLS-only buckets, least privilege, no
open ingress). What only a real deployment proves: that AWS accepts every property together, and
that the permissions are enough for the notebooks and jobs as AWS evaluates them
(tests/test_iam.py runs every AWS path with the template's roles on moto with IAM enforced).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from algotrading import aws, config
from algotrading.numerics import PINS

cfnlint_decode = pytest.importorskip("cfnlint.decode")

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "cloudformation" / "algotrading.yaml"
LIFECYCLE = ROOT / "cloudformation" / "notebook-lifecycle.sh"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    data, problems = cfnlint_decode.decode(str(TEMPLATE))
    assert not problems
    return json.loads(json.dumps(data))  # plain dicts and lists


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def policies(role: dict) -> list[dict]:
    """A role's inline policies, including the ones only some parameters create (`!If`)."""
    return [p["Fn::If"][1] if "Fn::If" in p else p for p in role["Properties"].get("Policies", [])]


def statements(template: dict) -> list[dict]:
    """Every statement of every identity policy (inline policies of roles)."""
    return [s for role in resources(template, "AWS::IAM::Role").values()
            for policy in policies(role) for s in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# --- linters -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_cfn_lint_is_clean() -> None:
    run = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True,
                         text=True, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


def _checkov() -> str:
    """checkov pins an old boto3, so `make` installs it into .venv/checkov (see the Makefile)."""
    for candidate in (Path(sys.prefix) / "checkov" / "bin" / "checkov", shutil.which("checkov")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("checkov not installed (make creates .venv/checkov; pip install 'checkov>=3.2.400,<4')")


@pytest.mark.slow
def test_checkov_has_no_failed_check_and_every_skip_has_a_reason(template) -> None:
    run = subprocess.run([_checkov(), "-f", str(TEMPLATE), "--framework", "cloudformation",
                          "--skip-download", "-o", "json"], capture_output=True, text=True,
                         check=False, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    report = json.loads(run.stdout)
    summary, results = report["summary"], report["results"]
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert failed == []
    assert summary["passed"] >= 30 and summary["parsing_errors"] == 0
    declared = {(skip["id"], name) for name, res in template["Resources"].items()
                for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", [])}
    reasons = [skip.get("comment", "") for res in template["Resources"].values()
               for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", [])]
    assert all(len(r) > 20 for r in reasons)  # a written reason, not a bare id
    skipped = {(c["check_id"], c["resource"].split(".")[-1]) for c in results["skipped_checks"]}
    assert skipped == declared  # no stale skip, no skip that hides nothing


# --- our own policy rules ----------------------------------------------------------------------

def test_no_managed_full_access_policy_and_no_wildcard_action(template) -> None:
    for role in resources(template, "AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]
    assert resources(template, "AWS::IAM::ManagedPolicy") == {}
    actions = [a for s in statements(template) for a in as_list(s["Action"])]
    assert actions and all(not a.endswith("*") and ":" in a for a in actions)
    assert not any("FullAccess" in json.dumps(r) for r in template["Resources"].values())


def test_resource_star_only_where_aws_allows_no_resource(template) -> None:
    """ecr:GetAuthorizationToken, cloudwatch:PutMetricData (limited to SageMaker's namespace)
    and the EC2 Describe calls of a VPC job have no resource-level permission; nothing else
    gets '*'."""
    star = [s for s in statements(template) if "*" in as_list(s["Resource"])]
    describe = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]
    assert star and all(as_list(s["Action"]) in (["ecr:GetAuthorizationToken"],
                                                 ["cloudwatch:PutMetricData"], describe) for s in star)
    for s in star:
        if s["Action"] == "cloudwatch:PutMetricData":
            assert s["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}
    for s in statements(template):
        for resource in as_list(s["Resource"]):
            text = json.dumps(resource)
            assert text == '"*"' or "${" in text or "Ref" in text or "GetAtt" in text or "Fn::If" in text


def test_pass_role_only_the_job_role_and_jobs_to_the_prefix_with_the_key(template) -> None:
    """The notebook passes only JobRole, only to SageMaker; it creates jobs only named
    `<stack>-*` and only with the stack's key on the job's volume and output."""
    role = template["Resources"]["Role"]  # the live runner's roles: tests/test_live_template.py
    own = [s for p in policies(role) for s in p["PolicyDocument"]["Statement"]]
    (pass_role,) = [s for s in own if s["Action"] == "iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": ["JobRole", "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    sagemaker = [s for s in own if any(a.startswith("sagemaker:") for a in as_list(s["Action"]))]
    for s in sagemaker:
        for resource in as_list(s["Resource"]):
            assert resource["Fn::Sub"].endswith("/${AWS::StackName}-*")  # jobs.job_prefix
    key = {"Fn::If": ["CreateKey", {"Fn::GetAtt": ["Key", "Arn"]}, {"Ref": "KmsKeyArn"}]}
    in_vpc = {"ForAllValues:StringEquals": {"sagemaker:VpcSubnets": [{"Ref": "SubnetId"}],
                                            "sagemaker:VpcSecurityGroupIds": [{"Ref": "JobSecurityGroup"}]},
              "Null": {"sagemaker:VpcSubnets": "false", "sagemaker:VpcSecurityGroupIds": "false"}}
    # network isolation: required by default, stated either way with JobNetworkIsolation=false
    isolation = {"Bool": {"sagemaker:NetworkIsolation": {
        "Fn::If": ["IsolateJobs", ["true"], ["true", "false"]]}}}
    (create,) = [s for s in sagemaker if s["Action"] == "sagemaker:CreateTrainingJob"]
    keys = {"ArnEquals": {"sagemaker:VolumeKmsKey": key, "sagemaker:OutputKmsKey": key}, **isolation}
    assert create["Condition"] == {"Fn::If": ["InVpc", {**keys, **in_vpc}, keys]}
    (tune,) = [s for s in sagemaker if s["Action"] == "sagemaker:CreateHyperParameterTuningJob"]
    keys = {"ArnEquals": {"sagemaker:OutputKmsKey": key}, **isolation}
    assert tune["Condition"] == {"Fn::If": ["InVpc", {**keys, **in_vpc}, keys]}
    assert template["Conditions"]["IsolateJobs"] == {
        "Fn::Equals": [{"Ref": "JobNetworkIsolation"}, "true"]}
    parameter = template["Parameters"]["JobNetworkIsolation"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("true", ["true", "false"])
    # the stack says which it is, and the client reads it (algotrading.jobs.network_isolation)
    assert template["Outputs"]["JobNetworkIsolation"]["Value"] == {"Ref": "JobNetworkIsolation"}
    assert config.STACK_OUTPUTS["JobNetworkIsolation"] == ("job_network_isolation",
                                                           "ALGO_JOB_NETWORK_ISOLATION")
    for name in ("Role", "JobRole"):
        principal = template["Resources"][name]["Properties"]["AssumeRolePolicyDocument"][
            "Statement"][0]["Principal"]
        assert principal == {"Service": "sagemaker.amazonaws.com"}


def test_reviewers_hand_found_iam_gaps_are_closed(template) -> None:
    """What checkov does not check (issue 20, item 7): no delete on the lake files, CreateGrant
    only for AWS resources, the training-image account a parameter, the runner pulls only its
    own repository, a permissions boundary on every role when given, the job role writes only
    jobs/."""
    res = template["Resources"]
    by_sid = {s["Sid"]: s for s in statements(template)}
    deletes = [s for s in statements(template) if "s3:DeleteObject" in as_list(s["Action"])]
    assert [d["Resource"] for d in deletes] == [{"Fn::Sub": "${DataBucket.Arn}/.algotrading/*"}]
    grants = [s for s in statements(template) if "kms:CreateGrant" in as_list(s["Action"])]
    assert grants and all(g["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
                          for g in grants)
    assert "763104351884" not in json.dumps(res)
    assert "${TrainingImageAccount}" in by_sid["PullTheFrameworkImages"]["Resource"]["Fn::Sub"]
    assert "repository/*" not in json.dumps(res)
    for name, role in resources(template, "AWS::IAM::Role").items():
        assert role["Properties"]["PermissionsBoundary"] == {
            "Fn::If": ["HasBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]}, name
    job = [s for p in policies(res["JobRole"]) for s in p["PolicyDocument"]["Statement"]]
    writes = [s for s in job if {"s3:PutObject", "s3:DeleteObject"} & set(as_list(s["Action"]))]
    assert [w["Resource"] for w in writes] == [{"Fn::Sub": "${DataBucket.Arn}/jobs/*"}]
    for param in template["Parameters"].values():  # every free-text parameter is constrained
        if param["Type"] == "String" and "AllowedValues" not in param:
            assert "AllowedPattern" in param or "MaxLength" in param, param["Description"]


def test_no_open_ingress(template) -> None:
    """No ingress except HTTPS into the VPC endpoints from the notebook's and the jobs' groups;
    egress HTTPS only, or the unroutable placeholder that replaces the default allow-all."""
    sources = [{"Ref": "NotebookSecurityGroup"}, {"Ref": "JobSecurityGroup"}]
    for name, group in resources(template, "AWS::EC2::SecurityGroup").items():
        ingress = group["Properties"].get("SecurityGroupIngress", [])
        assert name == "EndpointSecurityGroup" or ingress == []
        for rule in ingress:
            assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443)
            assert rule["SourceSecurityGroupId"] in sources and "CidrIp" not in rule
        for rule in group["Properties"].get("SecurityGroupEgress", []):
            rule = rule["Fn::If"][1] if "Fn::If" in rule else rule
            assert (rule["IpProtocol"], rule["FromPort"]) in (("tcp", 443), ("icmp", -1)), name
            if rule["IpProtocol"] == "icmp":
                assert rule["CidrIp"] == "127.0.0.1/32"
    for rule in resources(template, "AWS::EC2::SecurityGroupEgress").values():
        assert (rule["Properties"]["IpProtocol"], rule["Properties"]["FromPort"]) == ("tcp", 443)
    assert resources(template, "AWS::EC2::SecurityGroupIngress") == {}
    assert "0.0.0.0/0" not in json.dumps({k: v for k, v in template["Resources"].items()
                                          if v["Type"] != "AWS::EC2::SecurityGroup"})


def test_every_data_store_is_encrypted_with_the_key(template) -> None:
    key = {"Fn::If": ["CreateKey", {"Fn::GetAtt": ["Key", "Arn"]}, {"Ref": "KmsKeyArn"}]}
    data = template["Resources"]["DataBucket"]["Properties"]
    (rule,) = data["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key},
                    "BucketKeyEnabled": True}
    logs = template["Resources"]["LogBucket"]["Properties"]
    assert logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}  # log delivery needs SSE-S3
    (workgroup,) = resources(template, "AWS::Athena::WorkGroup").values()
    conf = workgroup["Properties"]["WorkGroupConfiguration"]
    assert conf["EnforceWorkGroupConfiguration"] is True
    assert conf["ResultConfiguration"]["EncryptionConfiguration"] == {"EncryptionOption": "SSE_KMS",
                                                                      "KmsKey": key}
    assert conf["BytesScannedCutoffPerQuery"] == {"Ref": "BytesScannedCutoffPerQuery"}
    notebook = template["Resources"]["NotebookInstance"]["Properties"]
    assert notebook["KmsKeyId"] == key
    assert (notebook["RootAccess"], notebook["InstanceMetadataServiceConfiguration"]) == (
        "Disabled", {"MinimumInstanceMetadataServiceVersion": "2"})
    assert notebook["DirectInternetAccess"] == {"Fn::If": ["InVpc", "Disabled", "Enabled"]}
    assert template["Resources"]["Key"]["Properties"]["EnableKeyRotation"] is True


def test_buckets_are_private_versioned_tls_only(template) -> None:
    for name in ("DataBucket", "LogBucket"):
        props = template["Resources"][name]["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
        assert len(props["PublicAccessBlockConfiguration"]) == 4
        assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        (policy,) = [p for p in resources(template, "AWS::S3::BucketPolicy").values()
                     if p["Properties"]["Bucket"] == {"Ref": name}]
        deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert [s["Condition"] for s in deny] == [{"Bool": {"aws:SecureTransport": "false"}}]
        assert deny[0]["Principal"] == "*" and deny[0]["Action"] == "s3:*"
        assert deny[0]["Resource"] == [{"Fn::GetAtt": [name, "Arn"]}, {"Fn::Sub": f"${{{name}.Arn}}/*"}]
    data = template["Resources"]["DataBucket"]["Properties"]
    assert data["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "LogBucket"}
    rules = {r["Id"]: r for r in data["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-athena-results"]["Prefix"] == "athena-results/"
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    (workgroup,) = resources(template, "AWS::Athena::WorkGroup").values()
    assert workgroup["Properties"]["WorkGroupConfiguration"]["ResultConfiguration"]["OutputLocation"] == {
        "Fn::Sub": "s3://${DataBucket}/athena-results/"}


# --- the template against the code ---------------------------------------------------------------

def test_glue_table_equals_the_codes_definition(template) -> None:
    """The template's table is aws.glue_table_input (built from schema.COLUMNS) over the bucket."""
    props = template["Resources"]["GlueTable"]["Properties"]
    table = json.loads(json.dumps(props["TableInput"]).replace(
        json.dumps({"Fn::Sub": "s3://${DataBucket}/hist_data_daily/"}), '"s3://BUCKET/hist_data_daily/"'))
    expected = aws.glue_table_input("algo_data", "s3://BUCKET")
    assert table == expected["TableInput"]
    assert props["DatabaseName"] == {"Ref": "GlueDatabase"}
    assert template["Parameters"]["DatabaseName"]["Default"] == "algo_data"


def test_outputs_are_the_keys_the_code_reads(template) -> None:
    outputs = set(template["Outputs"])
    assert set(config.STACK_OUTPUTS) | {config.ROLE_OUTPUT, config.NOTEBOOK_ROLE_OUTPUT,
                                        config.PREFIX_OUTPUT} <= outputs
    assert {"TableName", "NotebookInstanceName", "KmsKeyArn"} <= outputs


# --- the notebook lifecycle script -------------------------------------------------------------

def test_template_embeds_the_lifecycle_script_verbatim(template) -> None:
    props = template["Resources"]["NotebookLifecycle"]["Properties"]
    parts = props["OnStart"][0]["Content"]["Fn::Base64"]["Fn::Join"][1]
    assert parts[-1] == LIFECYCLE.read_text()
    assert parts[:4] == ["#!/bin/bash\nexport ALGO_STACK='", {"Ref": "AWS::StackName"},
                         "' AWS_REGION='", {"Ref": "AWS::Region"}]
    assert template["Resources"]["NotebookInstance"]["Properties"]["LifecycleConfigName"] == {
        "Fn::GetAtt": ["NotebookLifecycle", "NotebookInstanceLifecycleConfigName"]}


def _fake_home(tmp_path: Path) -> Path:
    """~/SageMaker as SageMaker lays it out: the code repository cloned into a folder of it."""
    home = tmp_path / "home"
    project = home / "SageMaker" / "algotrading"
    (project / "lib" / "algotrading").mkdir(parents=True)
    (project / "lib" / "algotrading" / "__init__.py").write_text("MARK = 'fake checkout'\n")
    shutil.copy(ROOT / "lib" / "algotrading" / "numerics.py", project / "lib" / "algotrading")
    (project / "requirements").mkdir()
    (project / "requirements" / "dev.txt").write_text("# the lock: nothing to install for the fake\n")
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "algotrading"\nversion = "0.0.1"\n\n'
        '[project.optional-dependencies]\naws = []\n\n'
        '[tool.setuptools.packages.find]\nwhere = ["lib"]\n')
    (home / "SageMaker" / "lost+found").mkdir()  # other folders are ignored
    return home


def _run_lifecycle(home: Path, **env: str) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
                                                          "PIP_FIND_LINKS", "PIP_CONFIG_FILE")}
    return subprocess.run(["bash", str(LIFECYCLE)], capture_output=True, text=True, check=False,
                          timeout=300, env={**keep, "HOME": str(home),
                                            "ALGO_ENV_PYTHON": sys.executable, **env})


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("sudo") and
                    subprocess.run(["id", "ec2-user"], capture_output=True).returncode == 0,
                    reason="this machine has an ec2-user: the script would hand over to it")
def test_lifecycle_script_builds_the_env_and_registers_the_kernel(tmp_path: Path) -> None:
    home = _fake_home(tmp_path)
    run = _run_lifecycle(home, ALGO_STACK="algo-prod", AWS_REGION="eu-west-1")
    assert run.returncode == 0, run.stderr
    env_python = home / "SageMaker" / ".algotrading" / "env" / "bin" / "python"
    spec = json.loads((home / ".local/share/jupyter/kernels/algotrading/kernel.json").read_text())
    wheels = str(home / "SageMaker" / ".algotrading" / "wheels")  # kept across restarts
    assert spec == {"argv": [str(env_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Python (algotrading)", "language": "python",
                    "env": {**PINS, "ALGO_BACKEND": "aws", "ALGO_STACK": "algo-prod",
                            "AWS_REGION": "eu-west-1", "ALGO_WHEELHOUSE": wheels}}
    imported = subprocess.run([str(env_python), "-c", "import algotrading; print(algotrading.__file__)"],
                              capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert imported.strip() == str(home / "SageMaker/algotrading/lib/algotrading/__init__.py")  # editable

    # A restart: ~/.local is wiped, ~/SageMaker (and the env in it) is kept and reused.
    shutil.rmtree(home / ".local")
    marker = env_python.parent.parent / "kept"
    marker.write_text("")
    again = _run_lifecycle(home, ALGO_STACK="algo-prod")
    assert again.returncode == 0, again.stderr
    assert marker.exists()
    spec = json.loads((home / ".local/share/jupyter/kernels/algotrading/kernel.json").read_text())
    assert spec["env"] == {**PINS, "ALGO_BACKEND": "aws", "ALGO_STACK": "algo-prod",
                           "ALGO_WHEELHOUSE": wheels}


@pytest.mark.slow
def test_lifecycle_script_without_a_checkout_says_what_to_do(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "SageMaker" / "other").mkdir(parents=True)
    run = _run_lifecycle(home)
    assert run.returncode == 1
    assert re.search(r"no checkout of the project under .*/SageMaker", run.stderr)
    assert not (home / ".local").exists()


def _shims(folder: Path, log: Path) -> Path:
    """`id` that says root and that ec2-user exists, and `sudo` that records its arguments (and
    runs nothing): the script's root branch, on any machine and as any user."""
    folder.mkdir()
    (folder / "id").write_text('#!/bin/sh\n[ "$1" = "-u" ] && echo 0\nexit 0\n')
    (folder / "sudo").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{log}"\n')
    for shim in ("id", "sudo"):
        (folder / shim).chmod(0o755)
    return folder


def _tree(root: Path) -> dict[str, tuple]:
    """Every path under root (symlinks not followed) with its type, mode, owner and content."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        body = p.read_bytes() if p.is_file() and not p.is_symlink() else None
        out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid,
                                         os.readlink(p) if p.is_symlink() else None, body)
    return out


@pytest.mark.parametrize("plant", [".algotrading", ".algotrading/setup.log",
                                   ".algotrading/onstart.sh"])
def test_lifecycle_root_branch_touches_nothing_the_user_controls(tmp_path: Path, plant: str) -> None:
    """Issue 20 item 3: a symlink the notebook user plants under ~/SageMaker (which survives a
    restart) is not followed by root: root writes only a fresh file of its own (mktemp) and hands
    that to ec2-user. Before, `install -d -o ec2-user` chowned the symlink's target to the user
    and the log redirect wrote through it."""
    victim = tmp_path / "usr-local-bin"
    victim.mkdir()
    (victim / "tool").write_text("root's file\n")
    home = tmp_path / "home"
    target = home / "SageMaker" / plant
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(victim if plant == ".algotrading" else victim / "tool")
    roottmp = tmp_path / "roottmp"
    roottmp.mkdir()
    before_victim, before_home = _tree(victim), _tree(home)
    log = tmp_path / "sudo-args"
    shims = _shims(tmp_path / "shims", log)
    run = subprocess.run(["bash", str(LIFECYCLE)], capture_output=True, text=True, check=False,
                         timeout=60, env={"PATH": f"{shims}:{os.environ['PATH']}", "HOME": "/root",
                                          "TMPDIR": str(roottmp), "ALGO_STACK": "algo"})
    assert (run.returncode, run.stderr) == (0, "")
    for _ in range(100):  # sudo runs in the background (nohup ... &)
        if log.exists() and log.read_text():
            break
        time.sleep(0.05)
    assert _tree(victim) == before_victim and _tree(home) == before_home
    args = log.read_text().splitlines()
    assert args[:4] == ["-u", "ec2-user", "-i", "env"]
    assert args[-2:-1] == ["/bin/bash"]
    (copy,) = roottmp.iterdir()
    assert args[-1] == str(copy) and copy.read_text() == LIFECYCLE.read_text()
    assert (copy.stat().st_uid, copy.stat().st_mode & 0o777) == (os.geteuid(), 0o755)
    assert "ALGO_STACK=algo" in args and "ALGO_ONSTART_LOG=1" in args


def _value(node: Any, params: dict[str, str], conditions: dict[str, bool]) -> Any:
    """Evaluate the condition functions of Rules and Conditions over parameter values."""
    if isinstance(node, str):
        return node
    (fn, arg), = node.items()
    if fn == "Ref":
        return params[arg]
    if fn == "Condition":
        return conditions[arg]
    if fn in ("Fn::Equals",):
        a, b = (_value(x, params, conditions) for x in arg)
        return a == b
    if fn == "Fn::Not":
        return not _value(arg[0], params, conditions)
    if fn == "Fn::And":
        return all(_value(x, params, conditions) for x in arg)
    if fn == "Fn::Or":
        return any(_value(x, params, conditions) for x in arg)
    if fn == "Fn::Join":
        return arg[0].join(_value(arg[1], params, conditions))
    raise AssertionError(f"{fn} not modelled")


def notebook_network(template: dict, **given: str) -> str | dict:
    """What CloudFormation does with these parameters: the first Rule assertion that refuses
    them, or the notebook's network properties."""
    params = {k: v.get("Default", "") for k, v in template["Parameters"].items()} | given
    params = {k: (v.split(",") if template["Parameters"][k]["Type"] == "CommaDelimitedList"
                  and isinstance(v, str) else v) for k, v in params.items()}
    for rule in template["Rules"].values():
        if "RuleCondition" in rule and not _value(rule["RuleCondition"], params, {}):
            continue
        for a in rule["Assertions"]:
            if not _value(a["Assert"], params, {}):
                return a["AssertDescription"]
    conditions: dict[str, bool] = {}
    for name, cond in template["Conditions"].items():  # in order: later ones use earlier ones
        conditions[name] = _value(cond, params, conditions)
    props = template["Resources"]["NotebookInstance"]["Properties"]
    pick = lambda v: v["Fn::If"][1] if conditions[v["Fn::If"][0]] else v["Fn::If"][2]  # noqa: E731
    return {"DirectInternetAccess": pick(props["DirectInternetAccess"]),
            "SubnetId": pick(props["SubnetId"]), "endpoints": conditions["Endpoints"],
            "egress": egress(template, "NotebookSecurityGroup", params, conditions),
            "jobs": egress(template, "JobSecurityGroup", params, conditions)}


NO_VALUE = object()


def _resolve(node: Any, params: dict, conditions: dict[str, bool]) -> Any:
    """A resource's properties with Fn::If decided, parameters put in and AWS::NoValue dropped
    (other Refs, to resources, stay as they are)."""
    if isinstance(node, list):
        return [x for x in (_resolve(n, params, conditions) for n in node) if x is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if "Fn::If" in node:
        name, yes, no = node["Fn::If"]
        return _resolve(yes if conditions[name] else no, params, conditions)
    if set(node) == {"Ref"}:
        return NO_VALUE if node["Ref"] == "AWS::NoValue" else params.get(node["Ref"], node)
    return {k: _resolve(v, params, conditions) for k, v in node.items()}


def egress(template: dict, group: str, params: dict, conditions: dict[str, bool]) -> set | None:
    """Where `group` may send traffic, as (protocol, port, destination) - its own egress rules
    and the separate SecurityGroupEgress resources on it; None if the group is not created."""
    res = template["Resources"]
    if not conditions[res[group]["Condition"]]:
        return None
    rules = _resolve(res[group]["Properties"].get("SecurityGroupEgress", []), params, conditions)
    rules += [_resolve(r["Properties"], params, conditions) for r in res.values()
              if r["Type"] == "AWS::EC2::SecurityGroupEgress" and conditions[r.get("Condition", "InVpc")]
              and r["Properties"]["GroupId"] == {"Ref": group}]
    out = set()
    for rule in rules:
        (dest,) = [json.dumps(rule[k]) if isinstance(rule[k], dict) else rule[k] for k in
                   ("CidrIp", "DestinationPrefixListId", "DestinationSecurityGroupId") if k in rule]
        out.add((rule["IpProtocol"], rule["FromPort"], dest))
    return out


def test_notebook_has_no_internet_unless_asked_and_refuses_half_given_networks(template) -> None:
    vpc, subnet = "vpc-0123456789abcdef0", "subnet-0123456789abcdef0"
    cases = {(v, s, i): notebook_network(template, VpcId=v, SubnetId=s, NotebookDirectInternet=i,
                                         S3PrefixListId="pl-63a5400a")
             for v in ("", vpc) for s in ("", subnet) for i in ("false", "true")}
    assert cases[("", "", "false")].startswith("The notebook has no internet access by default")
    assert cases[("", "", "true")] == {"DirectInternetAccess": "Enabled", "egress": None, "jobs": None,
                                       "SubnetId": {"Ref": "AWS::NoValue"}, "endpoints": False}
    for half in ((vpc, ""), ("", subnet)):
        for internet in ("false", "true"):
            assert cases[(*half, internet)].startswith("Give both VpcId and SubnetId")
    assert {k: v for k, v in cases[(vpc, subnet, "false")].items() if k not in ("egress", "jobs")} == {
        "DirectInternetAccess": "Disabled", "SubnetId": {"Ref": "SubnetId"}, "endpoints": True}
    assert cases[(vpc, subnet, "true")].startswith("NotebookDirectInternet=true runs the notebook")
    names = {r["Properties"]["ServiceName"]["Fn::Sub"].split("}.", 1)[1]
             for r in resources(template, "AWS::EC2::VPCEndpoint").values()}
    assert names == {"s3", "sagemaker.api", "sagemaker.runtime", "sts", "logs", "athena", "glue",
                     "ecr.api", "ecr.dkr", "kms", "cloudformation"}
    notebook = template["Resources"]["NotebookInstance"]["Properties"]
    assert notebook["PlatformIdentifier"] == "notebook-al2023-v1"
    assert notebook["RootAccess"] == "Disabled"


# --- tags --------------------------------------------------------------------------------------

def _taggable(kind: str) -> bool:
    """Whether CloudFormation's own resource schema (as cfn-lint ships it) has a Tags property."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    return "Tags" in PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", kind).schema["properties"]


def test_every_taggable_resource_carries_the_stacks_tags(template) -> None:
    """Issue 20 item 7: cost and ownership reports find every resource of the stack."""
    expected = [{"Key": "Project", "Value": "algotrading"},
                {"Key": "Stack", "Value": {"Ref": "AWS::StackName"}},
                {"Fn::If": ["HasCostCenter", {"Key": "CostCenter", "Value": {"Ref": "CostCenter"}},
                            {"Ref": "AWS::NoValue"}]},
                {"Fn::If": ["HasOwner", {"Key": "Owner", "Value": {"Ref": "Owner"}},
                            {"Ref": "AWS::NoValue"}]}]
    kinds = {r["Type"] for r in template["Resources"].values()}
    taggable = {k for k in kinds if _taggable(k)}
    assert {"AWS::KMS::Key", "AWS::S3::Bucket", "AWS::IAM::Role", "AWS::SageMaker::NotebookInstance",
            "AWS::EC2::VPCEndpoint", "AWS::Logs::LogGroup"} <= taggable
    untagged = [name for name, r in template["Resources"].items()
                if r["Type"] in taggable and r["Properties"].get("Tags") != expected]
    assert untagged == []
    for name in ("CostCenter", "Owner"):
        assert template["Conditions"][f"Has{name}"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": name}, ""]}]}


# --- the key policy ----------------------------------------------------------------------------

def test_key_policy_has_no_kms_star_and_names_exactly_the_stacks_roles(template) -> None:
    """Issue 20 item 7: administration (KeyAdminArns, else the account) and use (the stack's
    roles, named) are separate statements; tests/test_iam.py evaluates the policy per principal
    and checks every recorded path's key use against it."""
    policy = template["Resources"]["Key"]["Properties"]["KeyPolicy"]["Statement"]
    by_sid = {s["Sid"]: s for s in policy}
    crypto = {"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom",
              "kms:ReEncryptTo", "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant"}
    assert "kms:*" not in json.dumps(policy)
    admin = by_sid["AdministerTheKeyOnly"]
    assert not set(admin["Action"]) & crypto and "kms:PutKeyPolicy" in admin["Action"]
    assert admin["Principal"] == {"AWS": {"Fn::If": ["HasKeyAdmins", {"Ref": "KeyAdminArns"}, {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}]}}
    use = by_sid["OnlyTheStacksRolesUseTheKey"]
    names = [arn["Fn::Sub"].split(":role/")[1] for arn in use["Condition"]["ArnEquals"]["aws:PrincipalArn"]]
    roles = {n: r["Properties"].get("RoleName", {}).get("Fn::Sub")
             for n, r in resources(template, "AWS::IAM::Role").items()}
    assert sorted(names) == sorted(roles[n] for n in ("Role", "JobRole", "LiveTaskRole", "LiveExecutionRole"))
    for name in ("Role", "JobRole", "LiveTaskRole", "LiveExecutionRole"):  # each role's IAM side
        own = [s for p in policies(template["Resources"][name]) for s in p["PolicyDocument"]["Statement"]]
        assert any("kms:Decrypt" in as_list(s["Action"]) for s in own), name
    for s in policy:
        principal = s["Principal"]
        if s["Sid"] != "AdministerTheKeyOnly" and "AWS" in principal:  # the account root only
            assert s["Condition"], s["Sid"]                            # with a condition
        if "Service" in principal:
            assert s["Condition"], s["Sid"]
    assert by_sid["GrantsOnlyThroughTheServicesThatNeedThem"]["Condition"]["Bool"] == {
        "kms:GrantIsForAWSResource": "true"}


def test_in_a_vpc_the_notebook_talks_only_to_the_endpoints_and_s3(template) -> None:
    """Issue 20 item 4: with VpcId/SubnetId the notebook's group sends HTTPS only to this stack's
    interface endpoints and S3's prefix list (plus ExtraEgressCidr when given: 0.0.0.0/0 only if
    asked for); missing pieces are refused by a Rule, not left open."""
    net = {"VpcId": "vpc-0123456789abcdef0", "SubnetId": "subnet-0123456789abcdef0"}
    pl = "pl-63a5400a"
    endpoints, s3 = ("tcp", 443, '{"Ref": "EndpointSecurityGroup"}'), ("tcp", 443, pl)
    placeholder = ("icmp", -1, "127.0.0.1/32")
    assert notebook_network(template, **net).startswith(
        "With VpcId and SubnetId the notebook and the jobs reach S3 through the gateway endpoint")
    closed = notebook_network(template, **net, S3PrefixListId=pl)
    assert closed["egress"] == {endpoints, s3, placeholder}
    mirror = notebook_network(template, **net, S3PrefixListId=pl, ExtraEgressCidr="10.1.2.0/24")
    assert mirror["egress"] == {endpoints, s3, placeholder, ("tcp", 443, "10.1.2.0/24")}
    nat = notebook_network(template, **net, S3PrefixListId=pl, ExtraEgressCidr="0.0.0.0/0")
    assert ("tcp", 443, "0.0.0.0/0") in nat["egress"]  # only because it was asked for
    own = dict(net, S3PrefixListId=pl, CreateVpcEndpoints="false")
    assert notebook_network(template, **own).startswith("CreateVpcEndpoints=false: the VPC's own endpoints")
    existing = notebook_network(template, **own, ExtraEgressCidr="10.0.0.0/16")
    assert existing["egress"] == {s3, placeholder, ("tcp", 443, "10.0.0.0/16")}
    assert existing["endpoints"] is False
    internet = notebook_network(template, NotebookDirectInternet="true")
    assert (internet["DirectInternetAccess"], internet["egress"]) == ("Enabled", None)
    for case in (closed, mirror, nat, existing):  # the jobs leave the VPC the same ways, and
        assert case["jobs"] == case["egress"]     # the endpoints admit both groups
    assert internet["jobs"] is None  # no VPC: the jobs run in SageMaker's own network
    ingress = template["Resources"]["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [r["SourceSecurityGroupId"] for r in ingress] == [{"Ref": "NotebookSecurityGroup"},
                                                             {"Ref": "JobSecurityGroup"}]
