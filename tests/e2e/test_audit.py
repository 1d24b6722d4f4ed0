"""The request audit: every mutating EC2 request the handlers sent during this e2e run (all tests before this one,
faulted attempts included), as the emulator received it (tests/stack: AMI_SIM_REQUEST_LOG), against the security
rules: IMDSv2 required and no public IP on every instance, encrypted volumes and copies, tags on create, ImdsSupport
v2.0 on every registered image, ClientToken where EC2 takes one, never a public (Group=all) launch or volume
permission. The unit tests apply the same rules to every request of every handler unit test
(functions/core/src/audit.rs). Runs last (conftest.py orders it)."""

from __future__ import annotations

import json
import re
from collections import Counter

from conftest import summary

OUR_TAGS = ("ami-pipeline:pipeline", "ami-pipeline:execution", "ami-pipeline:role")
AUDIT: dict = {}


def tag_specs(params: dict) -> dict[str, dict[str, str]]:
    """TagSpecification.N.ResourceType / .Tag.M.Key / .Tag.M.Value -> {resource type: {key: value}}."""
    specs: dict[str, dict] = {}
    for key, value in params.items():
        m = re.fullmatch(r"TagSpecification\.(\d+)\.ResourceType", key)
        if m:
            n = m.group(1)
            keys = {k.split(".")[3]: v for k, v in params.items()
                    if re.fullmatch(rf"TagSpecification\.{n}\.Tag\.\d+\.Key", k)}
            specs[value] = {v: params.get(f"TagSpecification.{n}.Tag.{m2}.Value", "") for m2, v in keys.items()}
    return specs


def indexed(params: dict, pattern: str) -> list[str]:
    return [v for k, v in params.items() if re.fullmatch(pattern, k)]


def tagged_on_create(params: dict, *types: str) -> list[str]:
    specs = tag_specs(params)
    problems = []
    for t in types:
        missing = [k for k in OUR_TAGS if not specs.get(t, {}).get(k)]
        if missing:
            problems.append(f"no {', '.join(missing)} tag on create for {t}")
    return problems


def violations(action: str, p: dict, instance_store: frozenset[str] = frozenset()) -> list[str]:
    """The rules broken by one request (an empty list: compliant). `instance_store`: the instance-store images made
    so far; launching one maps no EBS root volume, and copying one encrypts nothing (it has no snapshot)."""
    bad: list[str] = []
    if action == "RunInstances":
        if p.get("MetadataOptions.HttpTokens") != "required":
            bad.append("MetadataOptions.HttpTokens is not required (IMDSv2)")
        public = indexed(p, r"NetworkInterface\.\d+\.AssociatePublicIpAddress")
        if public != ["false"]:
            bad.append(f"AssociatePublicIpAddress is {public or 'unset'} (must be false)")
        ebs = [k for k in p if re.fullmatch(r"BlockDeviceMapping\.\d+\.Ebs\.VolumeSize", k)]
        encrypted = indexed(p, r"BlockDeviceMapping\.\d+\.Ebs\.Encrypted")
        no_ebs_ok = not ebs and p.get("ImageId") in instance_store
        if (not ebs and not no_ebs_ok) or len(encrypted) != len(ebs) or (ebs and set(encrypted) != {"true"}):
            bad.append(f"volumes not all encrypted: {len(ebs)} EBS mappings, Encrypted={encrypted}")
        if not p.get("ClientToken"):
            bad.append("no ClientToken")
        bad += tagged_on_create(p, "instance", "volume")
    elif action == "RegisterImage":
        if p.get("ImdsSupport") != "v2.0":
            bad.append(f"ImdsSupport is {p.get('ImdsSupport')!r} (must be v2.0)")
        bad += tagged_on_create(p, "image")
    elif action == "CopyImage":
        if p.get("SourceImageId") in instance_store:
            if "Encrypted" in p or "KmsKeyId" in p:
                bad.append("copy of an instance-store image asked to be encrypted (it has no snapshot)")
        elif p.get("Encrypted") != "true":
            bad.append("copy not Encrypted")
        if not p.get("ClientToken"):
            bad.append("no ClientToken")
        bad += tagged_on_create(p, "image", "snapshot")
    elif action == "CreateSnapshots":
        bad += tagged_on_create(p, "snapshot")
    elif action == "CreateLaunchTemplateVersion":
        if not p.get("ClientToken"):
            bad.append("no ClientToken")
    elif action == "ModifyImageAttribute":
        if "all" in indexed(p, r"LaunchPermission\.Add\.\d+\.Group"):
            bad.append("made public (LaunchPermission Group=all) without the recipe's distribution.public")
    elif action == "ModifySnapshotAttribute":
        if "all" in indexed(p, r"CreateVolumePermission\.Add\.\d+\.Group"):
            bad.append("snapshot made public (CreateVolumePermission Group=all)")
    return bad


# The actions a full run makes and whose rules must have been applied at least once (an empty log proves nothing).
MUST_SEE = ["RunInstances", "CreateSnapshots", "RegisterImage", "CopyImage", "ModifyImageAttribute",
            "ModifySnapshotAttribute", "CreateLaunchTemplateVersion"]


def test_every_request_of_the_run_follows_the_security_rules(stack):
    assert stack.request_log and stack.request_log.exists(), "the emulator kept no request log"
    logged = [json.loads(line) for line in stack.request_log.read_text().splitlines() if line.strip()]
    # the handlers' requests (the Rust SDK's user agent); the tests' own set-up calls (boto3) are not audited
    requests = [r for r in logged if "aws-sdk-rust" in r.get("agent", "")]
    AUDIT["not_ours"] = len(logged) - len(requests)
    seen: Counter = Counter()
    broken: list[str] = []
    instance_store: set[str] = set()  # images registered from a manifest, and their copies
    for r in requests:
        seen[r["action"]] += 1
        if (r["action"] == "RegisterImage" and r["params"].get("ImageLocation")) or (
                r["action"] == "CopyImage" and r["params"].get("SourceImageId") in instance_store):
            instance_store.update(r["created"])
        for problem in violations(r["action"], r["params"], frozenset(instance_store)):
            broken.append(f"{r['region']} {r['action']}: {problem}")
    AUDIT.update(seen=dict(seen), broken=broken, total=len(requests))
    assert not [a for a in MUST_SEE if not seen[a]], f"never seen: {[a for a in MUST_SEE if not seen[a]]}"
    assert not broken, "\n".join(broken[:50])


def test_the_audit_rules_catch_each_violation():
    """The rules are not vacuous: each broken variant of a compliant request is caught."""
    good = {"MetadataOptions.HttpTokens": "required", "NetworkInterface.1.AssociatePublicIpAddress": "false",
            "BlockDeviceMapping.1.Ebs.VolumeSize": "16", "BlockDeviceMapping.1.Ebs.Encrypted": "true",
            "ClientToken": "t"}
    for i, rtype in enumerate(["instance", "volume"], 1):
        good[f"TagSpecification.{i}.ResourceType"] = rtype
        for j, key in enumerate(OUR_TAGS, 1):
            good[f"TagSpecification.{i}.Tag.{j}.Key"] = key
            good[f"TagSpecification.{i}.Tag.{j}.Value"] = "x"
    assert violations("RunInstances", good) == []
    for change in [{"MetadataOptions.HttpTokens": "optional"}, {"NetworkInterface.1.AssociatePublicIpAddress": "true"},
                   {"BlockDeviceMapping.1.Ebs.Encrypted": "false"}, {"ClientToken": ""},
                   {"TagSpecification.2.Tag.2.Value": ""}]:
        assert violations("RunInstances", dict(good, **change)), change
    assert violations("RegisterImage", {"ImdsSupport": "v1.0"})
    assert violations("ModifyImageAttribute", {"LaunchPermission.Add.1.Group": "all"})
    assert violations("CopyImage", {"ClientToken": "t"})
    # an instance-store image: launched without EBS volumes, copied without encryption; nothing else is lifted
    store = frozenset({"ami-0store"})
    no_volumes = {k: v for k, v in good.items() if not k.startswith("BlockDeviceMapping.")}
    assert violations("RunInstances", dict(no_volumes, ImageId="ami-0store"), store) == []
    assert violations("RunInstances", dict(no_volumes, ImageId="ami-0other"), store)
    unencrypted = dict(good, ImageId="ami-0store", **{"BlockDeviceMapping.1.Ebs.Encrypted": "false"})
    assert violations("RunInstances", unencrypted, store)
    copy = {"ClientToken": "t", "SourceImageId": "ami-0store"}
    for i, rtype in enumerate(["image", "snapshot"], 1):
        copy[f"TagSpecification.{i}.ResourceType"] = rtype
        for j, key in enumerate(OUR_TAGS, 1):
            copy[f"TagSpecification.{i}.Tag.{j}.Key"] = key
            copy[f"TagSpecification.{i}.Tag.{j}.Value"] = "x"
    assert violations("CopyImage", copy, store) == []
    assert violations("CopyImage", dict(copy, Encrypted="true"), store)
    assert violations("CopyImage", copy)  # not known as instance-store: must be encrypted


@summary
def print_audit(tr):
    if not AUDIT:
        return
    tr.section("request audit (every mutating EC2 request of this e2e run)")
    for action, n in sorted(AUDIT["seen"].items()):
        tr.write_line(f"{action:<40} {n:>5}")
    tr.write_line(f"{AUDIT['total']} handler requests audited, {len(AUDIT['broken'])} violations "
                  f"({AUDIT.get('not_ours', 0)} requests of the tests' own set-up not audited)")
