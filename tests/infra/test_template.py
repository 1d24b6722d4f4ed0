"""Offline checks of infra/template.yaml against the code and the state machine.

- every function crate in functions/ (except core) has a function resource built from its binary;
- every `${...}` of statemachine/pipeline.asl.json is defined in DefinitionSubstitutions, and the state
  machine's role may invoke exactly the functions it substitutes;
- each function's role allows exactly the EC2, SSM and Step Functions actions its requests need, as listed in
  infra/contract.json (generated from functions/core/src/contract.rs; the e2e run checks that list against every
  request each function made, tests/e2e/test_actions.py);
- no policy allows a `*` action, destructive EC2 actions need the pipeline's tag on the resource, create actions
  need it in the request, CreateTags is only on create or limited to named tag keys, iam:PassRole names its
  roles, KMS is used only through EC2.

Run with `bash tests/infra/check.sh`. AMI_TEMPLATE=<file> checks another template (e.g. a broken copy).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

from local import cfn  # the one template loader

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = Path(os.environ.get("AMI_TEMPLATE", ROOT / "infra" / "template.yaml"))
ASL = ROOT / "statemachine" / "pipeline.asl.json"
FUNCTIONS = ROOT / "functions"

# Used when statemachine/pipeline.asl.json does not exist yet.
EXPECTED_SUBSTITUTIONS = [
    "BuildFunctionArn",
    "SnapshotFunctionArn",
    "RegisterFunctionArn",
    "TestLaunchFunctionArn",
    "CopyFunctionArn",
    "ShareFunctionArn",
    "PublishFunctionArn",
    "RetireFunctionArn",
    "CleanupFunctionArn",
]

# EC2 actions that create resources: the resource types they create, which must carry our tag in the request.
CREATE_ACTIONS = {
    "ec2:RunInstances": {"instance", "volume"},
    "ec2:CreateSnapshots": {"snapshot"},
    "ec2:RegisterImage": {"image"},
    "ec2:CopyImage": {"image", "snapshot"},
}
# EC2 actions that destroy or change existing resources: only on resources that carry a pipeline tag.
DESTRUCTIVE_ACTIONS = {
    "ec2:TerminateInstances",
    "ec2:StopInstances",
    "ec2:DeregisterImage",
    "ec2:DeleteSnapshot",
    "ec2:ModifyImageAttribute",
    "ec2:ModifySnapshotAttribute",
    "ec2:EnableImageDeprecation",
}
PIPELINE_TAG = "ami-pipeline:pipeline"
TAG_PREFIX = "ami-pipeline:"
# Actions that do not support resource-level permissions: the only ones allowed on Resource "*" in a role.
# DescribeImageAttribute and DescribeSnapshotAttribute are authorized on the image / snapshot (Service Authorization
# Reference, Amazon EC2): not on "*".
STAR_RESOURCE_OK = re.compile(
    r"^(ec2:Describe(?!ImageAttribute$|SnapshotAttribute$)\w+|xray:(PutTraceSegments|PutTelemetryRecords|GetSamplingRules|GetSamplingTargets)|"
    r"logs:(CreateLogDelivery|GetLogDelivery|UpdateLogDelivery|DeleteLogDelivery|ListLogDeliveries|"
    r"PutResourcePolicy|DescribeResourcePolicies|DescribeLogGroups)|"
    # Run Command's follow-up calls have no resource types (Service Authorization Reference, Systems Manager)
    r"ssm:(DescribeInstanceInformation|GetCommandInvocation|ListCommands))$"
)


# --------------------------------------------------------------------------------------------------------------
# Loading the template (CloudFormation short-form tags become their long form: tests/local/cfn.py).
# --------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def template() -> dict:
    return cfn.load_template(TEMPLATE)


def resources(kind: str | None = None) -> dict[str, dict]:
    res = template()["Resources"]
    return {k: v for k, v in res.items() if kind is None or v["Type"] == kind}


def getatt_target(value) -> str | None:
    """`!GetAtt X.Arn` -> X."""
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target, attr = value["Fn::GetAtt"]
        return target if attr == "Arn" else None
    return None


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statements(policy_document: dict) -> list[dict]:
    """Statements of a policy, with `Fn::If` resolved to the statement (the permissive case)."""
    out = []
    for st in as_list(policy_document.get("Statement", [])):
        if isinstance(st, dict) and "Fn::If" in st:
            _, yes, no = st["Fn::If"]
            out.extend(s for s in (yes, no) if isinstance(s, dict) and "Effect" in s)
        else:
            out.append(st)
    return out


def role_statements(role_name: str) -> list[dict]:
    role = resources()[role_name]
    assert role["Type"] == "AWS::IAM::Role", f"{role_name} is not an IAM role"
    out = []
    for policy in role["Properties"].get("Policies", []):
        out.extend(statements(policy["PolicyDocument"]))
    # inline policies written once for several roles (AWS::IAM::Policy, e.g. PassBuilderRolePolicy)
    for res in resources().values():
        if res["Type"] == "AWS::IAM::Policy" and {"Ref": role_name} in res["Properties"]["Roles"]:
            out.extend(statements(res["Properties"]["PolicyDocument"]))
    assert not role["Properties"].get("ManagedPolicyArns"), f"{role_name}: no managed policies, everything inline"
    return out


def actions(st: dict) -> list[str]:
    return [a for a in as_list(st.get("Action", []))]


def all_policy_documents():
    """(where, document) for every policy document in the template: roles, key, queue and topic policies."""
    for name, res in resources().items():
        props = res.get("Properties", {})
        for policy in props.get("Policies", []) or []:
            if isinstance(policy, dict) and "PolicyDocument" in policy:
                yield f"{name}.{policy.get('PolicyName')}", policy["PolicyDocument"]
        for key in ("PolicyDocument", "KeyPolicy", "AssumeRolePolicyDocument"):
            if isinstance(props.get(key), dict):
                yield f"{name}.{key}", props[key]


# --------------------------------------------------------------------------------------------------------------
# What each function calls: infra/contract.json (generated by functions/core/src/contract.rs), whose per-function
# actions the e2e run checks against every request the function really made (tests/e2e/test_actions.py).
# --------------------------------------------------------------------------------------------------------------
CONTRACT = json.loads((ROOT / "infra" / "contract.json").read_text())


def contract_actions(binary: str) -> set[str]:
    return set(CONTRACT["functions"][binary]["actions"])


def expected_actions(binary: str) -> set[str]:
    """The EC2, SSM and Step Functions actions the function's requests need (iam:PassRole is checked apart)."""
    return contract_actions(binary) - {"iam:PassRole"}


def passes_instance_profile(binary: str) -> bool:
    return "iam:PassRole" in contract_actions(binary)


# --------------------------------------------------------------------------------------------------------------
# The workspace's functions and their template resources.
# --------------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def crates() -> dict[str, Path]:
    """{binary name: crate dir} for every crate in functions/ with a [[bin]]."""
    out = {}
    for manifest in sorted(FUNCTIONS.glob("*/Cargo.toml")):
        data = tomllib.loads(manifest.read_text())
        for b in data.get("bin", []):
            out[b["name"]] = manifest.parent
    return out


def code_uri_binary(props: dict) -> str | None:
    m = re.fullmatch(r"\.\./dist/([\w-]+)/bootstrap\.zip", str(props.get("CodeUri", "")))
    return m.group(1) if m else None


@lru_cache(maxsize=None)
def function_resources() -> dict[str, str]:
    """{binary: logical id} of the template's functions."""
    out = {}
    for name, res in resources("AWS::Serverless::Function").items():
        binary = code_uri_binary(res["Properties"])
        assert binary, f"{name}: CodeUri must be ../dist/<binary>/bootstrap.zip (scripts/package.sh)"
        assert binary not in out, f"{binary} is deployed twice ({out[binary]}, {name})"
        out[binary] = name
    return out


def function_role(binary: str) -> str:
    fn = resources()[function_resources()[binary]]
    role = getatt_target(fn["Properties"].get("Role"))
    assert role, f"{binary}: Role must be !GetAtt <its own role>.Arn"
    return role


def controlled_actions(st_list: list[dict]) -> set[str]:
    """The actions a function's own requests use: EC2, SSM, Step Functions, CloudWatch Logs reads (Run Command
    output; the function's own logging, CreateLogStream and PutLogEvents, is the Lambda runtime's), and KMS called
    directly (KMS allowed only through EC2, kms:ViaService, is EC2 using the key on the function's behalf: no
    request of its own)."""
    return {a for st in st_list for a in actions(st)
            if a.split(":")[0] in ("ec2", "ssm", "states") or (a.startswith("kms:") and not via_service(st))
            or (a.startswith("logs:") and a not in ("logs:CreateLogStream", "logs:PutLogEvents"))}


# --------------------------------------------------------------------------------------------------------------
# Policy rules, as functions so the self-tests below can show that each one fails on a bad statement.
# --------------------------------------------------------------------------------------------------------------
def condition_keys(st: dict) -> dict[str, object]:
    """{condition key: value} over all operators (`StringEquals`, `Null`, `ForAllValues:StringEquals` ...)."""
    out = {}
    for op, block in (st.get("Condition") or {}).items():
        for key, value in block.items():
            out[f"{op}|{key}"] = value
    return out


def has_tag_condition(st: dict, kind: str, key: str | None = None) -> bool:
    """kind: ResourceTag or RequestTag. The tag must be required: `Null: false`, or a StringEquals value."""
    for opkey, value in condition_keys(st).items():
        op, k = opkey.split("|", 1)
        m = re.fullmatch(rf"(?:aws|ec2):{kind}/(.+)", k)
        if not m or not m.group(1).startswith(TAG_PREFIX) or (key and m.group(1) != key):
            continue
        if op == "Null" and str(value).lower() == "false":
            return True
        if op in ("StringEquals", "StringLike") and value not in ("", [], None):
            return True
    return False


def resource_types(st: dict) -> set[str]:
    """EC2 resource types a statement names (`...:instance/*` -> instance); `*` for a wildcard resource."""
    out = set()
    for r in as_list(st.get("Resource", [])):
        text = re.sub(r"\$\{[^}]*\}", "x", json.dumps(r))  # ${AWS::Region} and the like hold colons
        if r == "*":
            out.add("*")
        for m in re.finditer(r":ec2:[^:]*:[^:]*:([a-z-]+)/", text):
            out.add(m.group(1))
    return out


KMS_DIRECT_OK = {"kms:DescribeKey"}
# ssm:SendCommand on instances: by the instance's tag in the form AWS's Run Command examples use, ssm:resourceTag
# ("Restricting Run Command access based on tags"; also listed for the instance resource by the service authorization
# reference), never by a global key (aws:*), which on SendCommand would also need aws:ViaAWSService ("Setting up Run
# Command"). tests/stack/README.md has the reasoning.
RUN_COMMAND_TAG = re.compile(r"ssm:resourceTag/(ami-pipeline:role)")
# Launch templates publish may change: only those that opt in with this tag (README, "Publishing to launch templates").
LAUNCH_TEMPLATE_ACTIONS = {"ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate"}
PUBLISH_OPT_IN = CONTRACT["tags"]["publish_opt_in"]


def copies_from_own_home_images(st: dict) -> bool:
    """A CopyImage statement for the source image (authorized on it since 2024-10-28): only images of the stack's
    account (`ec2:Owner`) in the stack's region, where every copy starts and no copy is made."""
    owner = condition_keys(st).get("StringEquals|ec2:Owner")
    home = all(
        re.fullmatch(r".*:ec2:\$\{AWS::Region\}::image/\*", str(r.get("Fn::Sub", "")) if isinstance(r, dict) else "")
        for r in as_list(st.get("Resource", []))
    )
    return owner == {"Ref": "AWS::AccountId"} and home and resource_types(st) == {"image"}


def via_service(st: dict) -> bool:
    return any(k.endswith("|kms:ViaService") for k in condition_keys(st))


def policy_problems(st: dict) -> list[str]:
    """Everything wrong with one statement of a function's or pipeline role's policy."""
    problems = []
    acts = actions(st)
    if "NotAction" in st or "NotResource" in st:
        problems.append("NotAction/NotResource")
    for a in acts:
        if a == "*" or a.endswith(":*"):
            problems.append(f"wildcard action {a}")
    resources_ = as_list(st.get("Resource", []))
    if "*" in resources_:
        bad = [a for a in acts if not STAR_RESOURCE_OK.match(a)]
        if bad:
            problems.append(f"Resource * for actions that support resource-level permissions: {bad}")
    for a in acts:
        if a in DESTRUCTIVE_ACTIONS and not has_tag_condition(st, "ResourceTag"):
            problems.append(f"{a} without an ami-pipeline resource-tag condition")
        if a in CREATE_ACTIONS:
            created = CREATE_ACTIONS[a] & resource_types(st)
            source_only = a == "ec2:CopyImage" and copies_from_own_home_images(st)
            if (
                ("*" in resource_types(st) or created)
                and not has_tag_condition(st, "RequestTag", PIPELINE_TAG)
                and not source_only
            ):
                problems.append(f"{a} creates {created or '*'} without aws:RequestTag/{PIPELINE_TAG}")
        if a in LAUNCH_TEMPLATE_ACTIONS and condition_keys(st).get(
            f"StringEquals|aws:ResourceTag/{PUBLISH_OPT_IN}"
        ) != "true":
            problems.append(f"{a} on launch templates that did not opt in (aws:ResourceTag/{PUBLISH_OPT_IN}=true)")
        if a == "ec2:CreateTags":
            keys = condition_keys(st)
            on_create = any(k.endswith("|ec2:CreateAction") for k in keys) and has_tag_condition(
                st, "RequestTag", PIPELINE_TAG
            )
            tag_keys = [v for k, v in keys.items() if k.startswith("ForAllValues:") and k.endswith("|aws:TagKeys")]
            on_ours = (
                has_tag_condition(st, "ResourceTag", PIPELINE_TAG)
                and tag_keys
                and all(str(t).startswith(TAG_PREFIX) for t in as_list(tag_keys[0]))
            )
            if not (on_create or on_ours):
                problems.append(
                    "ec2:CreateTags neither on create (ec2:CreateAction + request tag) nor limited to "
                    "ami-pipeline tag keys on pipeline resources"
                )
        if a == "iam:PassRole":
            if any("*" in json.dumps(r) for r in resources_) or not resources_:
                problems.append("iam:PassRole without explicit role ARNs")
            if "StringEquals|iam:PassedToService" not in condition_keys(st):
                problems.append("iam:PassRole without iam:PassedToService")
        if a == "ssm:SendCommand" and ("instance" in resource_types(st) or "*" in resource_types(st)):
            keys = condition_keys(st)
            by_tag = [k for k in keys if k.startswith("StringEquals|") and RUN_COMMAND_TAG.fullmatch(k.split("|")[1])]
            if not by_tag:
                problems.append("ssm:SendCommand on instances without StringEquals ssm:resourceTag/ami-pipeline:role")
            if [k for k in keys if k.split("|", 1)[1].lower().startswith("aws:")]:
                problems.append("ssm:SendCommand with a global condition key (needs aws:ViaAWSService on SendCommand)")
        # Key metadata (the trigger's check of recipe keys) may be read directly, on named keys only.
        direct_ok = a in KMS_DIRECT_OK and resources_ and not any("*" in json.dumps(r) for r in resources_)
        if a.startswith("kms:") and not via_service(st) and not direct_ok:
            problems.append(f"{a} without a kms:ViaService condition")
    return problems


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------
def test_every_function_crate_is_deployed():
    deployed = function_resources()
    assert set(crates()) - {"ami-core"}, "no function crates found"
    missing = sorted(set(crates()) - set(deployed))
    extra = sorted(set(deployed) - set(crates()))
    assert not missing, f"function crates without a template resource: {missing}"
    assert not extra, f"template functions without a crate: {extra}"


def test_function_settings():
    glob = template().get("Globals", {}).get("Function", {})
    for binary, name in function_resources().items():
        props = {**glob, **resources()[name]["Properties"]}
        assert props.get("Runtime") == "provided.al2023", name
        assert props.get("Handler") == "bootstrap", name
        arch = props.get("Architectures")
        assert arch in (["arm64"], [{"Ref": "Architecture"}]), f"{name}: Architectures {arch}"
        if arch == [{"Ref": "Architecture"}]:
            assert template()["Parameters"]["Architecture"]["Default"] == "arm64"
        logging = props.get("LoggingConfig", {})
        assert logging.get("LogFormat") == "JSON", f"{name}: JSON logs"
        group = logging.get("LogGroup", {}).get("Ref")
        assert group in resources("AWS::Logs::LogGroup"), f"{name}: LoggingConfig.LogGroup must Ref its log group"
        assert "RetentionInDays" in resources()[group]["Properties"], f"{group}: retention"
        # the trigger's nightly refresh runs longer: test_trigger_timeout_covers_the_nightly_refresh
        if binary != "ami-trigger":
            assert 30 <= int(props["Timeout"]) <= 120, f"{name}: Timeout {props['Timeout']}"
        assert int(props["Timeout"]) > 25, f"{name}: Timeout must exceed the SDK's 25 s operation timeout"
        assert 128 <= int(props["MemorySize"]) <= 256, f"{name}: MemorySize {props['MemorySize']}"
        # The role's log permission is for its own log group.
        role_logs = [st for st in role_statements(function_role(binary)) if "logs:PutLogEvents" in actions(st)]
        assert role_logs and all(getatt_target(st["Resource"]) == group for st in role_logs), name
    groups = [
        res["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        for res in resources("AWS::Serverless::Function").values()
    ]
    assert len(groups) == len(set(groups)), "one log group per function"


def test_functions_that_burst_on_ec2_limits_reserve_concurrency():
    for binary in ("ami-build", "ami-test-launch", "ami-copy"):
        props = resources()[function_resources()[binary]]["Properties"]
        assert "ReservedConcurrentExecutions" in props, binary


def test_trigger_environment():
    env = resources()[function_resources()["ami-trigger"]]["Properties"]["Environment"]["Variables"]
    assert env["STATE_MACHINE_ARN"] == {"Ref": "PipelineStateMachine"}
    assert env["RECIPE_PREFIX"] == {"Ref": "RecipePrefix"}
    # the preflight refuses publish parameters outside the prefix the publish role may write
    assert env["PUBLISH_PARAMETER_PREFIX"] == {"Ref": "PublishParameterPrefix"}


def test_trigger_timeout_covers_the_nightly_refresh():
    """The nightly refresh paces its pipelines and gives each a time budget (functions/core/src/model/event.rs,
    `nightly`): the trigger's Timeout must cover the most pipelines it takes, plus one SDK call's timeout for the
    listing, within Lambda's 900 s."""
    nightly = CONTRACT["nightly"]
    assert nightly["start_interval_seconds"] <= nightly["seconds_per_pipeline"]
    needed = nightly["max_pipelines"] * nightly["seconds_per_pipeline"] + 30
    timeout = int(resources()[function_resources()["ami-trigger"]]["Properties"]["Timeout"])
    assert needed <= timeout <= 900, f"trigger Timeout {timeout}: the nightly refresh needs {needed} s"


def asl_substitutions() -> list[str]:
    if not ASL.exists():
        return EXPECTED_SUBSTITUTIONS
    return sorted(set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", ASL.read_text())))


def state_machine() -> dict:
    (sm,) = resources("AWS::Serverless::StateMachine").values()
    return sm["Properties"]


def test_every_asl_substitution_is_defined():
    props = state_machine()
    assert props["DefinitionUri"] == "../statemachine/pipeline.asl.json"
    defined = props.get("DefinitionSubstitutions", {})
    used = asl_substitutions()
    assert used, "the ASL uses no ${...} substitutions?"
    missing = sorted(set(used) - set(defined))
    assert not missing, f"ASL substitutions not in DefinitionSubstitutions: {missing}"
    unused = sorted(set(defined) - set(used))
    assert not unused, f"DefinitionSubstitutions the ASL does not use: {unused}"


def invoked_functions() -> set[str]:
    """Logical ids of the functions the state machine's tasks invoke (through the substitutions)."""
    subs = state_machine()["DefinitionSubstitutions"]
    if ASL.exists():
        text = ASL.read_text()
        used = set()
        for m in re.finditer(r'"(?:Resource|FunctionName)"\s*:\s*"\$\{([A-Za-z0-9_]+)\}(?::\$LATEST)?"', text):
            used.add(m.group(1))
        assert used, "no Task resource in the ASL uses a ${...} function ARN"
    else:
        used = set(EXPECTED_SUBSTITUTIONS)
    out = set()
    for name in used:
        assert name in subs, f"the ASL invokes ${{{name}}}, which DefinitionSubstitutions does not define"
        target = getatt_target(subs[name])
        assert target in resources("AWS::Serverless::Function"), f"{name} must be !GetAtt <Function>.Arn"
        out.add(target)
    return out


def test_state_machine_role_invokes_exactly_the_pipeline_functions():
    props = state_machine()
    role = getatt_target(props["Role"])
    allowed = set()
    for st in role_statements(role):
        if "lambda:InvokeFunction" in actions(st):
            for r in as_list(st["Resource"]):
                target = getatt_target(r)
                assert target, f"{role}: lambda:InvokeFunction on {r}: name functions by !GetAtt"
                allowed.add(target)
    invoked = invoked_functions()
    assert invoked <= allowed, f"state machine invokes functions its role may not: {sorted(invoked - allowed)}"
    pipeline = {name for b, name in function_resources().items() if b != "ami-trigger"}
    assert allowed == pipeline, f"role may invoke {sorted(allowed)}, expected the pipeline steps {sorted(pipeline)}"
    assert function_resources()["ami-trigger"] not in allowed


def test_state_machine_logging_and_tracing():
    props = state_machine()
    # ERROR keeps every failure and its cause at a fifteenth of ALL's volume (BENCHMARKS.md, CloudWatch Logs).
    assert props["Logging"]["Level"] == "ERROR" and props["Logging"]["IncludeExecutionData"] is True
    assert props["Logging"]["Destinations"], "log destination"
    assert props["Tracing"]["Enabled"] is True


@pytest.mark.parametrize("binary", sorted(b for b in crates() if b != "ami-core"))
def test_role_allows_exactly_the_calls_in_the_code(binary):
    wanted = expected_actions(binary)
    assert wanted, f"{binary}: infra/contract.json lists no actions for it"
    allowed = controlled_actions(role_statements(function_role(binary)))
    missing = sorted(wanted - allowed)
    extra = sorted(allowed - wanted)
    assert not missing, f"{binary}: the code calls {missing}, which its role does not allow"
    assert not extra, f"{binary}: its role allows {extra}, which its code never calls"


@pytest.mark.parametrize("binary", sorted(b for b in crates() if b != "ami-core"))
def test_pass_role_only_where_an_instance_profile_is_passed(binary):
    passes = any("iam:PassRole" in actions(st) for st in role_statements(function_role(binary)))
    assert passes == passes_instance_profile(binary), binary


def test_role_policies_follow_the_rules():
    problems = []
    roles = {function_role(b) for b in function_resources()} | {
        getatt_target(state_machine()["Role"]),
        "SchedulerRole",
    }
    for role in sorted(roles):
        for st in role_statements(role):
            problems += [f"{role} {st.get('Sid', '')}: {p}" for p in policy_problems(st)]
    assert not problems, "\n".join(problems)


def test_no_wildcard_action_in_any_policy():
    bad = []
    for where, doc in all_policy_documents():
        for st in statements(doc):
            if "NotAction" in st:
                bad.append(f"{where}: NotAction")
            for a in actions(st):
                if a == "*" or a.endswith(":*"):
                    bad.append(f"{where}: {a}")
    assert not bad, bad


def test_scheduler_may_only_invoke_the_trigger():
    trigger = function_resources()["ami-trigger"]
    for st in role_statements("SchedulerRole"):
        if "lambda:InvokeFunction" in actions(st):
            for r in as_list(st["Resource"]):
                assert trigger in json.dumps(r), f"scheduler may invoke {r}"
        else:
            assert actions(st) == ["sqs:SendMessage"], st


def test_schedule_input_and_dead_letters():
    (schedule,) = resources("AWS::Scheduler::Schedule").values()
    # one schedule refreshes every stored recipe (the trigger's nightly refresh), on by default
    assert schedule["Condition"] == "NightlyRefreshOn"
    assert template()["Conditions"]["NightlyRefreshOn"] == {"Fn::Equals": [{"Ref": "NightlyRefresh"}, "true"]}
    assert template()["Parameters"]["NightlyRefresh"]["Default"] == "true"
    target = schedule["Properties"]["Target"]
    assert getatt_target(target["Arn"]) == function_resources()["ami-trigger"]
    assert json.loads(target["Input"]) == {"refresh": "all", "scheduled_time": "<aws.scheduler.scheduled-time>"}
    assert target["RetryPolicy"] and target["DeadLetterConfig"]["Arn"]
    assert schedule["Properties"]["ScheduleExpressionTimezone"] == {"Ref": "ScheduleTimezone"}


def test_release_rule():
    rule = resources()["ReleaseRule"]["Properties"]
    assert rule["EventPattern"]["detail-type"] == ["Release Published"]
    assert rule["EventPattern"]["source"] == {"Ref": "ReleaseSource"}
    (target,) = rule["Targets"]
    assert getatt_target(target["Arn"]) == function_resources()["ami-trigger"]
    assert target["RetryPolicy"] and target["DeadLetterConfig"]["Arn"]


def test_parameters_and_outputs():
    params = set(template()["Parameters"])
    for p in (
        "RecipePrefix",
        "EventBusName",
        "ReleaseSource",
        "NightlyRefresh",
        "ScheduleExpression",
        "ScheduleTimezone",
        "AlarmEmail",
        "KmsKeyArns",
        "BuilderInstanceProfileRoleArn",
        "PublishParameterPrefix",
        "NotifyOnSuccess",
    ):
        assert p in params, p
    rest = json.dumps({k: v for k, v in template().items() if k not in ("Parameters", "Metadata")})
    unused = [p for p in params if f'{{"Ref": "{p}"}}' not in rest and f"${{{p}}}" not in rest]
    assert not unused, f"parameters never used: {unused}"
    outputs = set(template()["Outputs"])
    assert {"StateMachineArn", "NotificationTopicArn", "EventBusName"} <= outputs


# --------------------------------------------------------------------------------------------------------------
# Self-tests: each rule fails on what it is meant to catch.
# --------------------------------------------------------------------------------------------------------------
BAD_STATEMENTS = {
    "wildcard action": {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    "star action": {"Effect": "Allow", "Action": "*", "Resource": "*"},
    "terminate untagged": {
        "Effect": "Allow",
        "Action": "ec2:TerminateInstances",
        "Resource": "arn:aws:ec2:*:1:instance/*",
    },
    "run untagged": {"Effect": "Allow", "Action": "ec2:RunInstances", "Resource": "arn:aws:ec2:*:1:instance/*"},
    "create tags anywhere": {
        "Effect": "Allow",
        "Action": "ec2:CreateTags",
        "Resource": "arn:aws:ec2:*::image/*",
        "Condition": {"Null": {"aws:ResourceTag/ami-pipeline:pipeline": "false"}},
    },
    "pass any role": {
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": "*",
        "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
    },
    "kms directly": {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:eu-west-1:1:key/x"},
    "describe any key": {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "arn:aws:kms:*:1:key/*"},
    "mutation on star": {"Effect": "Allow", "Action": "ssm:PutParameter", "Resource": "*"},
    "image attributes on star": {"Effect": "Allow", "Action": "ec2:DescribeImageAttribute", "Resource": "*"},
    "snapshot attributes on star": {"Effect": "Allow", "Action": "ec2:DescribeSnapshotAttribute", "Resource": "*"},
    "any launch template": {
        "Effect": "Allow",
        "Action": ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate"],
        "Resource": "arn:aws:ec2:*:1:launch-template/*",
    },
    "launch templates by another tag": {
        "Effect": "Allow",
        "Action": "ec2:ModifyLaunchTemplate",
        "Resource": "arn:aws:ec2:*:1:launch-template/*",
        "Condition": {"Null": {"aws:ResourceTag/ami-pipeline:pipeline": "false"}},
    },
    "copy any source image": {
        "Effect": "Allow",
        "Action": "ec2:CopyImage",
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}::image/*"},
    },
    "send commands to any instance": {
        "Effect": "Allow",
        "Action": "ssm:SendCommand",
        "Resource": "arn:aws:ec2:*:1:instance/*",
    },
    "send commands by a global tag key": {
        "Effect": "Allow",
        "Action": "ssm:SendCommand",
        "Resource": "arn:aws:ec2:*:1:instance/*",
        "Condition": {"StringEquals": {"aws:ResourceTag/ami-pipeline:role": "builder"}},
    },
    "copy own images into untagged images anywhere": {
        "Effect": "Allow",
        "Action": "ec2:CopyImage",
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:ec2:*::image/*"},
        "Condition": {"StringEquals": {"ec2:Owner": {"Ref": "AWS::AccountId"}}},
    },
}


@pytest.mark.parametrize("case", sorted(BAD_STATEMENTS))
def test_rules_catch_bad_statements(case):
    assert policy_problems(BAD_STATEMENTS[case]), f"{case} was not caught"


def test_contract_lists_actions_for_every_function():
    assert set(CONTRACT["functions"]) == set(crates()), "infra/contract.json and the crates' [[bin]] disagree"
    # The role checks above would pass vacuously on an empty list; every function calls AWS.
    for binary in crates():
        assert expected_actions(binary), binary


# --------------------------------------------------------------------------------------------------------------
# Issue 15 item 3: what the IAM review found.
# --------------------------------------------------------------------------------------------------------------
def test_eventbridge_may_use_the_topic_key_without_source_conditions():
    """The topic is encrypted with the stack's key, and EventBridge must be able to use it: the SNS developer guide
    (EventBridge to an encrypted topic) gives events.amazonaws.com kms:GenerateDataKey* and kms:Decrypt, and
    aws:SourceAccount / aws:SourceArn are not supported there (with them every notification failed)."""
    topic = resources("AWS::SNS::Topic")["NotificationTopic"]["Properties"]
    key_name = topic["KmsMasterKeyId"]["Ref"]
    policy = resources()[key_name]["Properties"]["KeyPolicy"]
    events = [st for st in statements(policy) if "events.amazonaws.com" in as_list(st["Principal"].get("Service", []))]
    assert len(events) == 1, events
    st = events[0]
    assert st["Effect"] == "Allow" and set(actions(st)) == {"kms:GenerateDataKey*", "kms:Decrypt"}, st
    keys = {k.split("|", 1)[1].lower() for k in condition_keys(st)}
    assert not keys & {"aws:sourceaccount", "aws:sourcearn"}, st
    # publishing itself stays limited to the notification rule, by the topic policy
    topic_policy = resources("AWS::SNS::TopicPolicy")["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]
    publish = [st for st in statements(topic_policy) if "events.amazonaws.com" in json.dumps(st.get("Principal"))]
    assert [condition_keys(st).get("ArnEquals|aws:SourceArn") for st in publish] == [
        {"Fn::GetAtt": ["NotificationRule", "Arn"]}
    ], publish


def test_commands_go_only_to_the_functions_own_instances_by_ssm_resource_tag():
    """Issue 22 item 11: the build may send commands to builders, test-launch to test instances, each by the
    instance's `ami-pipeline:role` tag under ssm:resourceTag (the reasoning: tests/stack/README.md)."""
    for role, value in (("BuildRole", "builder"), ("TestLaunchRole", "test-instance")):
        sts = [st for st in role_statements(role) if "ssm:SendCommand" in actions(st) and "instance" in resource_types(st)]
        assert len(sts) == 1, (role, sts)
        assert condition_keys(sts[0]) == {"StringEquals|ssm:resourceTag/ami-pipeline:role": value}, (role, sts[0])


def test_alarms_may_use_the_topic_key_and_publish_only_from_this_account():
    """Issue 22 item 16: AWS's key policy statement for CloudWatch alarms on an encrypted topic has no condition, and
    AWS does not document that alarm delivery gives KMS aws:SourceAccount; the topic policy keeps publishing to this
    account's alarms."""
    key = resources()["PipelineKey"]["Properties"]["KeyPolicy"]
    alarms = [st for st in statements(key) if "cloudwatch.amazonaws.com" in as_list(st["Principal"].get("Service", []))]
    assert len(alarms) == 1 and set(actions(alarms[0])) == {"kms:GenerateDataKey*", "kms:Decrypt"}, alarms
    assert "Condition" not in alarms[0], alarms[0]
    topic_policy = resources("AWS::SNS::TopicPolicy")["NotificationTopicPolicy"]["Properties"]["PolicyDocument"]
    publish = [st for st in statements(topic_policy) if "cloudwatch.amazonaws.com" in json.dumps(st.get("Principal"))]
    assert [condition_keys(st) for st in publish] == [{"StringEquals|aws:SourceAccount": {"Ref": "AWS::AccountId"}}]


def test_copy_authorizes_the_source_by_owner_and_the_new_image_by_request_tags():
    sts = [st for st in role_statements("CopyRole") if "ec2:CopyImage" in actions(st)]
    source = [st for st in sts if copies_from_own_home_images(st)]
    target = [st for st in sts if has_tag_condition(st, "RequestTag", PIPELINE_TAG)]
    assert len(source) == 1 and len(target) == 1 and len(sts) == 2, sts
    assert resource_types(target[0]) == {"image", "snapshot"}, target


def test_publish_changes_only_launch_templates_that_opted_in():
    sts = [st for st in role_statements("PublishRole") if set(actions(st)) & LAUNCH_TEMPLATE_ACTIONS]
    assert sts and all(set(actions(st)) <= LAUNCH_TEMPLATE_ACTIONS for st in sts), sts
    assert {a for st in sts for a in actions(st)} == LAUNCH_TEMPLATE_ACTIONS
    for st in sts:
        assert condition_keys(st).get(f"StringEquals|aws:ResourceTag/{PUBLISH_OPT_IN}") == "true", st
    # and the local stack's template opts in the way the README tells users to
    stack_py = (ROOT / "tests" / "local" / "stack.py").read_text()
    assert f'{{"Key": "{PUBLISH_OPT_IN}", "Value": "true"}}' in stack_py


def test_attribute_reads_are_on_image_and_snapshot_arns():
    sts = [st for st in role_statements("ShareRole") if {"ec2:DescribeImageAttribute", "ec2:DescribeSnapshotAttribute"}
           & set(actions(st))]
    assert sts and all("*" not in as_list(st["Resource"]) for st in sts), sts
    assert {t for st in sts for t in resource_types(st)} == {"image", "snapshot"}, sts


SM_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:ami-pipeline"


def _status_event(status: str, output: dict | None = None, arn: str = SM_ARN) -> dict:
    from local.notifications import status_change_event

    execution = {"executionArn": f"{arn.replace(':stateMachine:', ':execution:')}:x", "stateMachineArn": arn,
                 "name": "x", "status": status, "startDate": 1, "stopDate": 2, "input": {"run": {}},
                 "output": output}
    return status_change_event(execution, "us-east-1", "123456789012")


@pytest.mark.parametrize("notify_on_success", [False, True])
def test_notification_rule_matches_failures_and_warnings(notify_on_success):
    """The rule's pattern against status-change events, matched by moto's EventBridge pattern engine (its
    TestEventPattern API answers without a Result, so the engine is called directly)."""
    from moto.events.models import EventPattern
    from local.notifications import notification_pattern

    pattern = EventPattern.load(json.dumps(notification_pattern(SM_ARN, notify_on_success)))
    warned = {"images": [], "warnings": {"retire": {"Error": "AmiPipeline.AwsError", "Cause": "{}"},
                                         "notice": CONTRACT["warning_notice"]}}
    clean = {"images": [], "warnings": {}}
    cases = {
        "failed": (_status_event("FAILED"), True),
        "timed out": (_status_event("TIMED_OUT"), True),
        "aborted": (_status_event("ABORTED"), True),
        "succeeded with a warning": (_status_event("SUCCEEDED", warned), True),
        "succeeded": (_status_event("SUCCEEDED", clean), notify_on_success),
        "running": (_status_event("RUNNING"), False),
        "another state machine fails": (_status_event("FAILED", arn=SM_ARN + "-other"), False),
        "another state machine warns": (_status_event("SUCCEEDED", warned, arn=SM_ARN + "-other"), False),
    }
    got = {name: pattern.matches_event(event) for name, (event, _) in cases.items()}
    assert got == {name: want for name, (_, want) in cases.items()}


def test_every_checkov_skip_is_needed(tmp_path):
    """A skip whose check passes anyway hides nothing but a future failure: checkov runs on a copy of the template
    without skips, and every skipped (check, resource) must fail there."""
    checkov = ROOT / ".tools" / "checkov" / "bin" / "checkov"
    if not checkov.exists():
        pytest.skip("checkov is installed by scripts/install/infra.sh (make infra-test)")
    doc = json.loads(json.dumps(template()))
    skips = set()
    for name, res in doc["Resources"].items():
        meta = res.get("Metadata") or {}
        for s in (meta.pop("checkov", None) or {}).get("skip", []):
            skips.add((s["id"], name))
    assert skips, "no skips found: the test would prove nothing"
    copy = tmp_path / "template.json"
    copy.write_text(json.dumps(doc))
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")
    run = subprocess.run([str(checkov), "--file", str(copy), "--framework", "cloudformation", "--skip-download",
                          "--quiet", "-o", "json"], capture_output=True, text=True, env=env, cwd=tmp_path)
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = {(c["check_id"], c["resource"].split(".")[-1]) for c in report["results"]["failed_checks"]}
    assert failed, run.stderr[-2000:]
    dead = sorted(skips - failed)
    assert not dead, f"checkov skips whose check passes without them (remove them): {dead}"
