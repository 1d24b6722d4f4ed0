"""The baseline: the build step's `status` call written the way AWS samples write a Python Lambda handler
(boto3 client created once at module load, a plain dict in and out). It makes the same EC2 calls as
`ami-build status` (DescribeInstances for the builder, then GetConsoleOutput for its result line) so
bench/bench.py can compare cold start, warm latency and memory call for call. Not used by the pipeline.
"""

import base64
import os

import boto3

ec2 = boto3.client("ec2", region_name=os.environ.get("AWS_REGION", "us-east-1"))

MARKER = "AMI-PIPELINE-RESULT:"


def handler(event, context):
    try:
        instance_id = event["steps"]["build"]["instance_id"]
    except (KeyError, TypeError):
        raise ValueError("input.steps.build.instance_id: missing; pass the build step's output")
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    if not reservations:
        raise RuntimeError(f"builder {instance_id} no longer exists")
    instance = reservations[0]["Instances"][0]
    state = instance["State"]["Name"]
    result = None
    if state != "pending":
        output = ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""
        for line in output.splitlines():
            if line.startswith(MARKER):
                result = line[len(MARKER):].strip()
    return {"instance_id": instance_id, "state": state, "result": result,
            "status": "ready" if result == "SUCCESS" and state == "stopped" else "pending"}
