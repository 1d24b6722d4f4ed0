"""EC2 query-protocol parameters, as the emulator logs a request (tests/stack: AMI_SIM_REQUEST_LOG) and the Rust SDK
serializes it: `TagSpecification.1.Tag.2.Key`, `BlockDeviceMapping.1.Ebs.Encrypted`. Read by the request audit
(tests/e2e/test_audit.py) and the IAM simulation (tests/e2e/iam_model.py)."""

from __future__ import annotations


def members(params: dict, member: str) -> list[str]:
    """The members of the list `member` names, `N` standing for the index (`BlockDeviceMapping.N.Ebs`), that the
    request sends: their parameter prefixes (`BlockDeviceMapping.1.Ebs`), in order."""
    pattern = member.split(".")
    found: dict[str, None] = {}
    for key in params:
        parts = key.split(".")
        if len(parts) > len(pattern) and all(
                want == got or (want == "N" and got.isdigit()) for want, got in zip(pattern, parts)):
            found[".".join(parts[:len(pattern)])] = None
    return sorted(found, key=lambda m: [int(p) if p.isdigit() else 0 for p in m.split(".")])


def tag_specs(params: dict) -> dict[str, dict[str, str]]:
    """TagSpecification.N.ResourceType / .Tag.M.Key / .Tag.M.Value -> {resource type: {key: value}}."""
    specs: dict[str, dict[str, str]] = {}
    for spec in members(params, "TagSpecification.N"):
        tags = specs.setdefault(params.get(f"{spec}.ResourceType", ""), {})
        for tag in members(params, f"{spec}.Tag.N"):
            if f"{tag}.Key" in params:
                tags[params[f"{tag}.Key"]] = params.get(f"{tag}.Value", "")
    return specs


def with_tags(params: dict, tags: dict[str, str], *resource_types: str) -> dict:
    """`params` plus one TagSpecification per resource type, each carrying `tags`."""
    out = dict(params)
    for i, rtype in enumerate(resource_types, 1):
        out[f"TagSpecification.{i}.ResourceType"] = rtype
        for j, (key, value) in enumerate(tags.items(), 1):
            out[f"TagSpecification.{i}.Tag.{j}.Key"] = key
            out[f"TagSpecification.{i}.Tag.{j}.Value"] = value
    return out


def failures(check: dict, params: dict) -> list[str]:
    """The problems one audit rule's check (infra/contract.json `audit.rules`) finds in a request: empty when it
    passes, else one "" (the rule's own message) or, for `tagged`, one message per missing tag key. The Rust
    evaluator of the same rules: functions/core/src/audit.rs."""
    kind = check["check"]
    if kind == "tagged":
        present = {k for k, v in tag_specs(params).get(check["resource"], {}).items() if v}
        return [f"no {k} tag on create for {check['resource']}" for k in check["keys"] if k not in present]
    param, value = check.get("param"), check.get("value")
    listed = members(params, check["member"]) if "member" in check else []
    fails = {
        "is": lambda: params.get(param) != value,
        "starts_with": lambda: not params.get(param, "").startswith(check["prefix"]),
        "unset": lambda: param in params,
        "any_member": lambda: not listed,
        "every_member": lambda: any(params.get(f"{m}.{param}") != value for m in listed),
        "no_member": lambda: any(params.get(f"{m}.{param}") == value for m in listed),
    }[kind]()
    return [""] if fails else []


def violations(rules: list[dict], action: str, params: dict, holds=lambda exception: False) -> list[str]:
    """The rules one request of `action` breaks, given which exceptions hold: each `<Action>: <what it did>`;
    requests of actions no rule names pass."""
    out = []
    for rule in rules:
        if rule["action"] != action or ("unless" in rule and holds(rule["unless"])):
            continue
        if "when" in rule and not holds(rule["when"]):
            continue
        out += [f"{action}: {detail or rule['violation']}" for detail in failures(rule, params)]
    return out
