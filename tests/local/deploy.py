"""Deploys infra/template.yaml into the local stack's moto as `sam deploy` deploys it to AWS, and reads back what the
stack made.

`sam deploy` uploads each function's `CodeUri` (`../dist/<binary>/bootstrap.zip`) and the state machine's
`DefinitionUri` to S3, rewrites them to those objects, uploads the template (over CloudFormation's 51,200-byte
TemplateBody limit) and creates the stack, whose `AWS::Serverless-2016-10-31` transform CloudFormation expands. Here
aws-sam-translator (pinned in tests/stack/requirements.txt) expands it, since moto has no transform, and moto's
CloudFormation (with tests/stack/moto_ext/cfn.py) creates the stack: the roles, policies, functions, log groups and
the rest are the template's, resolved by CloudFormation, not written again here. The functions' code is a small
dummy zip: the handlers run as local processes (tests/local/stack.py) with the environment the deployed functions
have.

    deployment = deploy(moto_url, "ami-pipeline", {"KmsKeyArns": "arn:aws:kms:..."})
    deployment.functions["ami-trigger"].environment   # {"STATE_MACHINE_ARN": ..., "RECIPE_PREFIX": ...}
    deployment.role_of("ami-build").policies   # {"build": {...}, "pass-builder-role": {...}}
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass

import boto3

from .cfn import TEMPLATE, load_template

ROOT = TEMPLATE.parents[1]
REGION = "us-east-1"
# sam deploy's managed bucket (resolve_s3) holds the packaged code and the template
BUCKET = "aws-sam-cli-managed-default-samclisourcebucket"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
CODE = re.compile(r"dist/([a-z0-9-]+)/bootstrap\.zip$")


@dataclass(frozen=True)
class Function:
    """A deployed function as Lambda reports it (GetFunctionConfiguration)."""

    name: str
    arn: str
    role_arn: str
    environment: dict[str, str]


@dataclass(frozen=True)
class Role:
    """A deployed role and its inline policies as IAM reports them (ListRolePolicies, GetRolePolicy), whether the
    role's own `Policies` or an AWS::IAM::Policy that names it."""

    name: str
    arn: str
    policies: dict[str, dict]


@dataclass(frozen=True)
class Deployment:
    stack_name: str
    parameters: dict[str, str]
    outputs: dict[str, str]
    functions: dict[str, Function]  # by binary (the CodeUri's dist/<binary>/)
    roles: dict[str, Role]  # by ARN: every role of the stack
    template: dict  # as created: packaged and transformed
    seconds: float  # packaging, transform and CreateStack

    @property
    def state_machine_arn(self) -> str:
        return self.outputs["StateMachineArn"]

    def role_of(self, binary: str) -> Role:
        return self.roles[self.functions[binary].role_arn]


def contract_binaries() -> set[str]:
    return set(json.loads((ROOT / "infra" / "contract.json").read_text())["functions"])


def dummy_zip(binary: str) -> bytes:
    """A deployment package with a `bootstrap` that is not the handler: Lambda's code is never run here."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", f"#!/bin/sh\necho '{binary} runs as a local process (tests/local/stack.py)'\n")
    return buf.getvalue()


def package(template: dict, s3, stack_name: str) -> dict[str, str]:
    """What `sam deploy` does before the transform: each CodeUri and DefinitionUri uploaded to S3 (keys by content,
    as sam does) and replaced by the object's `s3://` URI. Returns {logical id: binary} of the functions."""
    binaries = {}
    known = contract_binaries()
    for logical, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            m = CODE.search(props["CodeUri"])
            assert m and m.group(1) in known, f"{logical}: CodeUri {props['CodeUri']} names no binary of contract.json"
            body = dummy_zip(m.group(1))
            props["CodeUri"] = upload(s3, f"{stack_name}/{hashlib.md5(body).hexdigest()}", body)
            binaries[logical] = m.group(1)
        elif resource["Type"] == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
            body = (TEMPLATE.parent / props["DefinitionUri"]).read_bytes()
            props["DefinitionUri"] = upload(s3, f"{stack_name}/{hashlib.md5(body).hexdigest()}.json", body)
    return binaries


def upload(s3, key: str, body: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def object_url(key: str) -> str:
    """The HTTPS URL of an object in the bucket, as CreateStack's TemplateURL takes it."""
    return f"https://{BUCKET}.s3.{REGION}.amazonaws.com/{key}"


def transform(template: dict) -> dict:
    """The `AWS::Serverless-2016-10-31` transform, as CloudFormation runs it. The template names no managed policy
    by name (`Policies` of a SAM function), so the translator's policy map is empty."""
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    session = boto3.session.Session(region_name=REGION)
    return Translator(None, Parser(), boto_session=session).translate(template, {}, get_managed_policy_map=dict)


def deploy(moto_url: str, stack_name: str, params: dict[str, str]) -> Deployment:
    """Creates `stack_name` from infra/template.yaml with `params` (the others take the template's defaults) and
    returns what it made; a stack that does not reach CREATE_COMPLETE raises."""
    t0 = time.time()

    def client(service: str):
        return boto3.client(service, region_name=REGION, endpoint_url=moto_url, aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    s3, cfn = client("s3"), client("cloudformation")
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    template = load_template()
    binaries = package(template, s3, stack_name)
    key = f"{stack_name}/template.json"
    created = transform(template)
    upload(s3, key, json.dumps(created).encode())
    cfn.create_stack(StackName=stack_name, TemplateURL=object_url(key), Capabilities=CAPABILITIES,
                     Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    resources = cfn.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    physical = {r["LogicalResourceId"]: r["PhysicalResourceId"] for r in resources}

    lam, iam = client("lambda"), client("iam")
    functions = {}
    for logical, binary in binaries.items():
        conf = lam.get_function_configuration(FunctionName=physical[logical])
        functions[binary] = Function(conf["FunctionName"], conf["FunctionArn"], conf["Role"],
                                     conf.get("Environment", {}).get("Variables", {}))
    roles = {}
    for r in resources:
        if r["ResourceType"] != "AWS::IAM::Role":
            continue
        name = r["PhysicalResourceId"]
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
        policies = {p: as_document(iam.get_role_policy(RoleName=name, PolicyName=p)["PolicyDocument"])
                    for p in iam.list_role_policies(RoleName=name)["PolicyNames"]}
        roles[arn] = Role(name, arn, policies)
    return Deployment(stack_name, dict(params), outputs, functions, roles, created, time.time() - t0)


def as_document(doc) -> dict:
    """GetRolePolicy's PolicyDocument: URL-encoded JSON on the wire, which boto3 decodes to a dict."""
    return json.loads(doc) if isinstance(doc, str) else doc
