"""Issue 14 item 7 and issue 15 item 3: nothing after publish fails a published release, and the notification
rule sees it. A retire that EC2 refuses for good leaves the run SUCCEEDED with the error under `warnings` in its
output; the notification rule of infra/template.yaml matches that run and a failed one, not a clean success.

Delivery is proven as far as the local stack goes (tests/local/notifications.py): moto's EventBridge holds a rule
with the template's pattern and an SQS target (moto cannot deliver to SNS; its TestEventPattern answers without a
Result), the runner's executions are sent as the status-change events Step Functions emits, and what reaches the
queue is what the topic would get. The KMS key policy that lets EventBridge use the topic's key is checked
statically (tests/infra/test_template.py); no local service evaluates key policies."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import local
from conftest import explain, release, tags, task_calls
from local.notifications import notification_pattern, status_change_event

CONTRACT = json.loads((Path(__file__).resolve().parents[2] / "infra" / "contract.json").read_text())
PIPELINE = "notify"
DENIED = {"error": "UnauthorizedOperation", "status": 403, "count": 50}


@pytest.fixture(scope="module")
def runs(stack):
    """0.1.0 and 0.2.0 succeed; 0.3.0 cannot deregister 0.1.0 (retire refused); 0.4.0 cannot launch its builder."""
    recipe = stack.recipe(PIPELINE, **{"retention.keep": 1})
    stack.sim("POST", "reset")
    out = {}
    for version, fault in (("0.1.0", None), ("0.2.0", None), ("0.3.0", dict(DENIED, action="DeregisterImage")),
                           ("0.4.0", dict(DENIED, action="RunInstances"))):
        if fault:
            stack.sim("POST", "faults", fault)
        try:
            _, out[version] = release(stack, PIPELINE, version, recipe, timeout=240)
        finally:
            stack.sim("POST", "reset")
    return out


def test_a_refused_retire_leaves_the_release_published_with_a_warning(stack, runs):
    warned = runs["0.3.0"]
    assert warned["status"] == "SUCCEEDED", explain(warned)
    warnings = warned["output"]["warnings"]
    assert warnings["retire"]["Error"] == "AmiPipeline.AwsError", warnings
    assert "UnauthorizedOperation" in warnings["retire"]["Cause"], warnings
    assert warnings["notice"] == CONTRACT["warning_notice"]
    assert not task_calls(warned, "Cleanup"), explain(warned)
    # published everywhere: the images are released and the parameter points at them
    for image in warned["output"]["images"]:
        ec2 = stack.boto3("ec2", image["region"])
        assert tags(ec2.describe_images(ImageIds=[image["image_id"]])["Images"][0])["ami-pipeline:state"] == "released"
    # the image retire could not deregister is still there, and the next run retires it
    first = runs["0.1.0"]["output"]["images"][0]
    assert stack.boto3("ec2").describe_images(ImageIds=[first["image_id"]])["Images"], first
    for name in ("0.1.0", "0.2.0"):
        assert runs[name]["output"]["warnings"] == {}, runs[name]["output"]


def test_the_notification_rule_delivers_failures_and_warnings_only(stack, runs):
    events = stack.boto3("events")
    sqs = stack.boto3("sqs")
    queue = sqs.create_queue(QueueName="ami-pipeline-notifications")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sm_arn = runs["0.1.0"]["stateMachineArn"]
    pattern = notification_pattern(sm_arn)
    events.put_rule(Name="ami-pipeline-notifications", EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(Rule="ami-pipeline-notifications", Targets=[{"Id": "queue", "Arn": queue_arn}])
    try:
        sent = [status_change_event(d, local.REGION, local.ACCOUNT) for d in runs.values()]
        # the delivery check itself must be able to fail: a status change of another state machine is not delivered
        other = status_change_event(dict(runs["0.4.0"], stateMachineArn=sm_arn + "-other"), local.REGION,
                                    local.ACCOUNT)
        for ev in [*sent, other]:
            out = events.put_events(Entries=[{"Source": ev["source"], "DetailType": ev["detail-type"],
                                              "Detail": json.dumps(ev["detail"]), "Resources": ev["resources"]}])
            assert out["FailedEntryCount"] == 0, out
        got: list[dict] = []
        deadline = time.time() + 5
        while time.time() < deadline and len(got) < 2:
            msgs = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            got += [json.loads(m["Body"]) for m in msgs]
        time.sleep(0.5)
        got += [json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
                .get("Messages", [])]
    finally:
        events.remove_targets(Rule="ami-pipeline-notifications", Ids=["queue"])
        events.delete_rule(Name="ami-pipeline-notifications")
        sqs.delete_queue(QueueUrl=queue)
    delivered = sorted((m["detail"]["name"], m["detail"]["status"], m["detail"]["stateMachineArn"]) for m in got)
    want = [(runs["0.3.0"]["name"], "SUCCEEDED", sm_arn), (runs["0.4.0"]["name"], "FAILED", sm_arn)]
    assert delivered == sorted(want), delivered
