"""The notification path, as far as the local stack goes: the template's NotificationRule pattern, resolved for a
state machine ARN, and the EventBridge event Step Functions emits when an execution's status changes.

AWS sends "Step Functions Execution Status Change" events (source aws.states) whose detail carries the execution's
ARN, name, status, start and stop times, and its input and output as JSON strings (Step Functions developer guide,
"Automating Step Functions event delivery with EventBridge"). moto's TestEventPattern answers without a Result
(tests/stack/README.md), so the tests match with moto's EventBridge rules instead: a rule with this pattern and an
SQS target (moto cannot deliver to SNS), events sent with PutEvents, and what reached the queue is what AWS would
have delivered to the topic.
"""

from __future__ import annotations

import json
from pathlib import Path

from .cfn import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"


def _resolve(node, state_machine_arn: str, conditions: dict[str, bool]):
    if isinstance(node, dict):
        if set(node) == {"Ref"} and node["Ref"] == "PipelineStateMachine":
            return state_machine_arn
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return _resolve(yes if conditions[name] else no, state_machine_arn, conditions)
        if len(node) == 1 and next(iter(node)).startswith(("Fn::", "Ref")):
            raise ValueError(f"cannot resolve {node} in the notification pattern")
        return {k: _resolve(v, state_machine_arn, conditions) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, state_machine_arn, conditions) for v in node]
    return node


def notification_pattern(state_machine_arn: str, notify_on_success: bool = False, template: Path = TEMPLATE) -> dict:
    """The NotificationRule's EventPattern with the state machine's ARN and the NotifySuccess condition filled in."""
    doc = load_template(template)
    pattern = doc["Resources"]["NotificationRule"]["Properties"]["EventPattern"]
    return _resolve(pattern, state_machine_arn, {"NotifySuccess": notify_on_success})


def status_change_event(execution: dict, region: str, account: str) -> dict:
    """The EventBridge event for an execution as DescribeExecution (or the runner's detail) describes it."""

    def ms(t):
        return None if t is None else int(float(t) * 1000)

    def text(v):
        return v if v is None or isinstance(v, str) else json.dumps(v, separators=(",", ":"))

    detail = {
        "executionArn": execution["executionArn"],
        "stateMachineArn": execution["stateMachineArn"],
        "name": execution["name"],
        "status": execution["status"],
        "startDate": ms(execution.get("startDate")),
        "stopDate": ms(execution.get("stopDate")),
        "input": text(execution.get("input")),
        "output": text(execution.get("output")),
        "inputDetails": {"included": True},
        "outputDetails": {"included": True},
        "error": execution.get("error"),
        "cause": execution.get("cause"),
    }
    return {
        "version": "0",
        "id": f"status-{execution['name']}",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": account,
        "time": "2026-11-26T10:00:00Z",
        "region": region,
        "resources": [execution["executionArn"]],
        "detail": detail,
    }
