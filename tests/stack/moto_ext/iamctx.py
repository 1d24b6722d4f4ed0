"""What IAM would see of the resources a request names, read from moto's state at call time: their tags and the
attributes condition keys test (image owner and publicity, snapshot and volume encryption, an instance's volumes,
the roles in an instance profile, the key an alias points to). The e2e's IAM simulation (tests/e2e/test_iam.py)
evaluates each logged request against the caller's role with these as aws:ResourceTag/*, ec2:Owner, ... .
Read-only: never changes moto's state."""

from __future__ import annotations

import re

from moto.core import DEFAULT_ACCOUNT_ID

ID = re.compile(r"^(ami|snap|i|vol|lt|subnet|sg)-[0-9a-f]+$")
NOT_A_REFERENCE = re.compile(r"(^|\.)(Tag\.\d+\.(Key|Value)|Value|Description|Name|Comment)$")


def _tags(backend, rid: str) -> dict[str, str]:
    return dict(backend.tags.get(rid, {}))


def ec2_resources(region: str, params: dict, account: str = DEFAULT_ACCOUNT_ID) -> dict[str, dict]:
    """{id: {"tags", ...attributes}} for every EC2 resource id (or launch template name, instance profile) the
    request's parameters name."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account][region]
    values: list[str] = []
    for k, v in params.items():
        if NOT_A_REFERENCE.search(k):
            continue  # a tag value or a name may hold an id (ami-pipeline:source-image) without naming a resource
        values += v if isinstance(v, list) else [v]
    out: dict[str, dict] = {}
    home = backend
    for v in values:
        if not isinstance(v, str) or not ID.match(v) or v in out:
            continue
        # CopyImage is called in the destination region; its source image lives in SourceRegion
        source = params.get("SourceRegion") if v == params.get("SourceImageId") else None
        backend = ec2_backends[account][source] if isinstance(source, str) else home
        info: dict = {"tags": _tags(backend, v)}
        if v.startswith("ami-") and v in backend.amis:
            ami = backend.amis[v]
            info.update(owner=ami.owner_alias or ami.owner_id, public=ami.is_public)
        elif v.startswith("snap-") and v in backend.snapshots:
            snap = backend.snapshots[v]
            info.update(owner=snap.owner_id, encrypted=bool(snap.encrypted))
        elif v.startswith("i-"):
            try:
                inst = backend.get_instance(v)
            except Exception:  # noqa: BLE001 (unknown id: EC2 answers NotFound, IAM sees the ARN only)
                inst = None
            if inst is not None:
                info["volumes"] = {vol.volume_id: {"tags": _tags(backend, vol.volume_id),
                                                   "encrypted": bool(getattr(vol, "encrypted", False))}
                                   for vol in inst.block_device_mapping.values()}
        elif v.startswith("lt-") and v in backend.launch_templates:
            info["tags"] = _tags(backend, v) or dict(getattr(backend.launch_templates[v], "tags", {}) or {})
        out[v] = info
    backend = home
    name = params.get("LaunchTemplateName")
    if isinstance(name, str):
        for lt in backend.launch_templates.values():
            if lt.name == name:
                out[lt.id] = {"tags": _tags(backend, lt.id), "name": name}
    profile = params.get("IamInstanceProfile.Name") or params.get("IamInstanceProfile.Arn")
    if isinstance(profile, str):
        out["instance-profile"] = {"roles": _profile_roles(profile.rsplit("/", 1)[-1], account)}
    return out


def _profile_roles(name: str, account: str) -> list[str]:
    from moto.iam.models import iam_backends

    iam = iam_backends[account]["global"]
    profile = next((p for p in iam.instance_profiles.values() if p.name == name), None)
    return [r.arn for r in profile.roles] if profile else []


def kms_key(region: str, key_id: str, account: str = DEFAULT_ACCOUNT_ID) -> dict:
    """The key an id, ARN or alias names (IAM authorizes DescribeKey by alias on the key itself): its ARN and key
    policy (KMS needs the key policy to allow a request as well as the caller's policy)."""
    from moto.kms.models import kms_backends

    try:
        key = kms_backends[account][region].describe_key(key_id)
    except Exception:  # noqa: BLE001 (unknown key: the call fails NotFound)
        return {"arn": None}
    return {"arn": key.arn, "policy": key.policy}


def json_request(environ, region: str, service: str, agent: str) -> tuple[dict, dict]:
    """A handler's JSON-protocol request (SSM, KMS ...): its short top-level string parameters, and for KMS the key
    it is authorized on. Reads the body and hands the app a fresh copy of it."""
    import io
    import json

    if "app/ami-" not in agent:
        return {}, {}
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    environ["CONTENT_LENGTH"] = str(len(raw))
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {}, {}
    params = {}
    for k, v in (body.items() if isinstance(body, dict) else []):
        if isinstance(v, str) and len(v) <= 2048:
            params[k] = v
        elif isinstance(v, list) and all(isinstance(x, str) and len(x) <= 256 for x in v) and len(v) <= 50:
            params[k] = v  # e.g. SendCommand's InstanceIds
    resources: dict = {}
    if service == "kms" and params.get("KeyId"):
        resources["key"] = kms_key(region, params["KeyId"])
    if service == "ssm":  # Run Command on instances: IAM sees the instances' tags
        ids = [i for i in params.get("InstanceIds", []) + [params.get("InstanceId", "")] if ID.match(i or "")]
        if ids:
            resources.update(ec2_resources(region, {f"InstanceId.{n}": i for n, i in enumerate(ids, 1)}))
    return params, resources
