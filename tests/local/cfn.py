"""The SAM template as data: CloudFormation's short-form tags (`!Ref`, `!Sub`, `!GetAtt`, ...) become their long
form (`{"Ref": ...}`, `{"Fn::Sub": ...}`, `{"Fn::GetAtt": [resource, attribute]}`, `{"Condition": ...}`). One
loader for the template tests, the IAM simulation and the notification check."""

from __future__ import annotations

from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "template.yaml"


class CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: CfnLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 (SafeLoader subclass)
