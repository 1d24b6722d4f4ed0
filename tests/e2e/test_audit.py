"""The request audit: every mutating EC2 request the handlers sent during this e2e run (all tests before this one,
faulted attempts included), as the emulator received it (tests/stack: AMI_SIM_REQUEST_LOG), against the security
rules of infra/contract.json (`audit.rules`, written once in functions/core/src/contract.rs; the unit tests apply
them to every request of every handler unit test, functions/core/src/audit.rs): IMDSv2 required and no public IP
on every instance, encrypted volumes and copies, tags on create, ImdsSupport v2.0 on every registered image, our
ClientToken where EC2 takes one, never a public (Group=all) launch or volume permission. Runs last (conftest.py
orders it)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from conftest import summary
from local.ec2query import violations, with_tags

CONTRACT = json.loads((Path(__file__).resolve().parents[2] / "infra" / "contract.json").read_text())
RULES = CONTRACT["audit"]["rules"]
OUR_TAGS = tuple(CONTRACT["tags"][k] for k in ("pipeline", "execution", "role"))
# The actions a full run makes and whose rules must have been applied at least once (an empty log proves nothing).
MUST_SEE = sorted({r["action"] for r in RULES})
AUDIT: dict = {}


def exceptions_of(instance_store: set[str]):
    """Which exceptions hold for a request in this run: `instance_store` when the image it launches or copies was
    registered from a manifest (or copied from one); no e2e recipe makes an image public or IMDS-optional."""
    def holds(params: dict):
        image = params.get("ImageId") or params.get("SourceImageId")
        return lambda exception: exception == "instance_store" and image in instance_store
    return holds


def audit(requests: list[dict]) -> tuple[Counter, list[str]]:
    """Counts per action and the violations of the logged requests, in order."""
    seen: Counter = Counter()
    broken: list[str] = []
    instance_store: set[str] = set()  # images registered from a manifest, and their copies
    holds = exceptions_of(instance_store)
    for r in requests:
        p = r["params"]
        seen[r["action"]] += 1
        if (r["action"] == "RegisterImage" and p.get("ImageLocation")) or (
                r["action"] == "CopyImage" and p.get("SourceImageId") in instance_store):
            instance_store.update(r.get("created", []))
        # the preflight's DryRun launch (logged apart) is held to the launch rules too, as in the unit tests
        action = r["action"].removesuffix("(DryRun)")
        broken += [f"{r['region']} {v}" for v in violations(RULES, action, p, holds(p))]
    return seen, broken


def test_every_request_of_the_run_follows_the_security_rules(stack):
    assert stack.request_log and stack.request_log.exists(), "the emulator kept no request log"
    logged = [json.loads(line) for line in stack.request_log.read_text().splitlines() if line.strip()]
    # the handlers' requests (the Rust SDK's user agent); the tests' own set-up calls (boto3) are not audited
    requests = [r for r in logged if "aws-sdk-rust" in r.get("agent", "")]
    AUDIT["not_ours"] = len(logged) - len(requests)
    seen, broken = audit(requests)
    AUDIT.update(seen=dict(seen), broken=broken, total=len(requests))
    assert not [a for a in MUST_SEE if not seen[a]], f"never seen: {[a for a in MUST_SEE if not seen[a]]}"
    assert not broken, "\n".join(broken[:50])


def tagged(params: dict, *types: str) -> dict:
    return with_tags(params, dict.fromkeys(OUR_TAGS, "x"), *types)


def logged(action: str, params: dict, created=()) -> dict:
    return {"action": action, "params": params, "region": "us-east-1", "created": list(created)}


def test_the_audit_rules_catch_each_violation():
    """The rules are not vacuous: each broken variant of a compliant request is caught."""
    good = tagged({"ImageId": "ami-0base", "MetadataOptions.HttpTokens": "required",
                   "NetworkInterface.1.AssociatePublicIpAddress": "false", "BlockDeviceMapping.1.Ebs.VolumeSize": "16",
                   "BlockDeviceMapping.1.Ebs.Encrypted": "true", "ClientToken": "amip-build-0123"},
                  "instance", "volume")
    assert violations(RULES, "RunInstances", good) == []
    for change in [{"MetadataOptions.HttpTokens": "optional"}, {"NetworkInterface.1.AssociatePublicIpAddress": "true"},
                   {"BlockDeviceMapping.1.Ebs.Encrypted": "false"}, {"BlockDeviceMapping.2.Ebs.VolumeSize": "8"},
                   {"ClientToken": ""}, {"ClientToken": "5e1b0a52-0e4e-4f3c-9d2b-0c1f8b7c6a11"},
                   {"TagSpecification.2.Tag.2.Value": ""}]:
        assert violations(RULES, "RunInstances", dict(good, **change)), change
    assert len(violations(RULES, "RunInstances", {k: v for k, v in good.items() if "Tag" not in k})) == 6
    assert violations(RULES, "RunInstances", {k: v for k, v in good.items() if not k.startswith("Network")})
    assert violations(RULES, "RegisterImage", {"ImdsSupport": "v1.0"})
    assert violations(RULES, "ModifyImageAttribute", {"LaunchPermission.Add.1.Group": "all"})
    assert violations(RULES, "ModifySnapshotAttribute", {"CreateVolumePermission.Add.1.Group": "all"})
    assert violations(RULES, "CopyImage", {"ClientToken": "amip-copy-0123"})
    assert violations(RULES, "DescribeImages", {"Owner.1": "self"}) == []
    # an instance-store image: launched without EBS volumes, copied without encryption; nothing else is lifted
    store = exceptions_of({"ami-0store"})
    no_volumes = {k: v for k, v in good.items() if not k.startswith("BlockDeviceMapping.")}
    stored = dict(no_volumes, ImageId="ami-0store")
    assert violations(RULES, "RunInstances", stored, store(stored)) == []
    other = dict(no_volumes, ImageId="ami-0other")
    assert violations(RULES, "RunInstances", other, store(other))
    unencrypted = dict(good, ImageId="ami-0store", **{"BlockDeviceMapping.1.Ebs.Encrypted": "false"})
    assert violations(RULES, "RunInstances", unencrypted, store(unencrypted))
    copy = tagged({"ClientToken": "amip-copy-0123", "SourceImageId": "ami-0store"}, "image", "snapshot")
    assert violations(RULES, "CopyImage", copy, store(copy)) == []
    for asked in [{"Encrypted": "true"}, {"KmsKeyId": "alias/k"}]:
        assert violations(RULES, "CopyImage", dict(copy, **asked), store(copy)), asked
    assert violations(RULES, "CopyImage", copy)  # not known as instance-store: must be encrypted


def test_a_broken_request_in_a_log_fails_the_audit():
    """The audit over a log: the instance-store image is learned from its registration, and a broken request of
    the log is reported with its region."""
    register = logged("RegisterImage", tagged({"ImdsSupport": "v2.0", "ImageLocation": "b/m.xml"}, "image"),
                      created=["ami-0store"])
    copy = tagged({"ClientToken": "amip-copy-0123", "SourceImageId": "ami-0store"}, "image", "snapshot")
    seen, broken = audit([register, logged("CopyImage", copy)])
    assert (seen, broken) == (Counter({"RegisterImage": 1, "CopyImage": 1}), [])
    _, broken = audit([register, logged("CopyImage", dict(copy, SourceImageId="ami-0ebs"))])
    assert broken == ["us-east-1 CopyImage: not Encrypted"]
    _, broken = audit([logged("RunInstances(DryRun)", {"DryRun": "true", "ClientToken": "amip-preflight-0123"})])
    assert "us-east-1 RunInstances: MetadataOptions.HttpTokens is not required (IMDSv2)" in broken, broken


@summary
def print_audit(tr):
    if not AUDIT:
        return
    tr.section("request audit (every mutating EC2 request of this e2e run)")
    for action, n in sorted(AUDIT["seen"].items()):
        tr.write_line(f"{action:<40} {n:>5}")
    tr.write_line(f"{AUDIT['total']} handler requests audited, {len(AUDIT['broken'])} violations "
                  f"({AUDIT.get('not_ours', 0)} requests of the tests' own set-up not audited)")
