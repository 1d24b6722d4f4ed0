"""Issue 13: the build and the smoke test through SSM Run Command on the local stack (moto_ext/runcommand.py plays
the agent): a release builds and tests through it, a failing script's error shows its exit code, the end of its
output and its log stream (which exists in the local CloudWatch Logs), a lost SendCommand answer still runs the
script once, and the console channel still works for base images without the agent."""

from __future__ import annotations

import base64
import re
from datetime import datetime

import local
from conftest import explain, leftovers, release, task_calls, wait_until



def group(stack: local.Stack) -> str:
    """The stack's Run Command log group (the template's RunCommandLogGroup)."""
    return stack.deployment.outputs["RunCommandLogGroupName"]


def instance_of(stack: local.Stack, execution: str, role: str) -> dict:
    flt = [{"Name": "tag:ami-pipeline:execution", "Values": [execution]},
           {"Name": "tag:ami-pipeline:role", "Values": [role]}]
    found = [i for r in stack.boto3("ec2").describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]]
    assert len(found) == 1, found
    return found[0]


def commands(stack: local.Stack, instance_id: str) -> list[dict]:
    """The instance's commands, oldest first (listed twice: the emulator hides a new command from its first listing,
    as SSM may)."""
    ssm = stack.boto3("ssm")
    ssm.list_commands(InstanceId=instance_id)
    return sorted(ssm.list_commands(InstanceId=instance_id)["Commands"], key=lambda c: c["RequestedDateTime"])


def ran_once(stack: local.Stack, instance_id: str, execution: str, purpose: str) -> list[dict]:
    """The commands of `purpose` on the instance, oldest first, after checking that their body ran once, in the first:
    a poll may send again when ListCommands does not show a command sent a moment ago (the emulator's never does on
    its first listing), and the copies find the run-once guard (the emulator records which command ran a guarded
    body; the guard itself is unit-tested, `userdata::tests::the_run_once_guard_runs_the_body_once_and_keeps_its_exit_code`)."""
    sent = [c for c in commands(stack, instance_id) if c["Comment"] == f"ami-pipeline {purpose} {execution}"]
    assert sent, commands(stack, instance_id)
    ran = stack.sim("GET", "state")["run_once"].get(instance_id, {})
    assert ran == {f"{execution}.{purpose}": sent[0]["CommandId"]}, (ran, sent)
    inv = stack.boto3("ssm").get_command_invocation(CommandId=sent[0]["CommandId"], InstanceId=instance_id)
    assert inv["Status"] == "Success" and "already ran" not in inv["StandardOutputContent"], inv
    return sent


def user_data(stack: local.Stack, instance_id: str) -> str:
    raw = stack.boto3("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(raw.get("UserData", {}).get("Value", "")).decode()


def test_a_release_builds_and_tests_through_run_command(stack):
    stack.sim("POST", "reset")
    out, detail = release(stack, "rc-web", "1.0.0", stack.recipe("rc-web"))
    assert detail["status"] == "SUCCEEDED", explain(detail)
    execution = out["execution_name"]
    ssm, logs = stack.boto3("ssm"), stack.boto3("logs")

    builder = instance_of(stack, execution, "builder")
    # the user data only marks the channel: the script came by Run Command, and the builder did not stop itself
    data = user_data(stack, builder["InstanceId"])
    assert "channel=run-command" in data and "/etc/web-release" not in data, data
    built = ran_once(stack, builder["InstanceId"], execution, "build")
    assert {c["Comment"] for c in commands(stack, builder["InstanceId"])} == {f"ami-pipeline build {execution}"}
    assert built[0]["DocumentName"] == "AWS-RunShellScript", built
    assert built[0]["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": group(stack), "CloudWatchOutputEnabled": True}
    inv = ssm.get_command_invocation(CommandId=built[0]["CommandId"], InstanceId=builder["InstanceId"])
    assert inv["ResponseCode"] == 0 and "provisioned" in inv["StandardOutputContent"], inv
    # the step stopped it (StopInstances) before the snapshot, and the console has no marker
    console = stack.boto3("ec2").get_console_output(InstanceId=builder["InstanceId"]).get("Output", "")
    assert "AMI-PIPELINE-RESULT" not in console
    stream = f"{built[0]['CommandId']}/{builder['InstanceId']}/aws-runShellScript/stdout"
    assert logs.get_log_events(logGroupName=group(stack), logStreamName=stream)["events"], stream

    tester = instance_of(stack, execution, "test-instance")
    ran_once(stack, tester["InstanceId"], execution, "smoke")
    assert {c["Comment"] for c in commands(stack, tester["InstanceId"])} == {f"ami-pipeline smoke {execution}"}
    # the status checks came first: the smoke test was sent by a status call after them
    assert task_calls(detail, "Test Status"), explain(detail)


def test_a_failing_script_shows_its_exit_code_output_and_log_stream(stack):
    stack.sim("POST", "reset")
    recipe = stack.recipe("rc-fail")
    recipe["build"]["script"] += "# sim:fail-provision\n"
    out, detail = release(stack, "rc-fail", "1.0.0", recipe)
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == "AmiPipeline.ProvisionFailed", explain(detail)
    cause = detail["cause"]
    assert "exit code 3" in cause, cause
    # the end of the output (stdout then stderr), not its start
    assert "error: package nginx not found" in cause and "exit status 3" in cause, cause
    assert "step 1: ok" not in cause, cause
    stream = re.search(r"streams (\S+/stdout)", cause)
    assert stream and group(stack) in cause, cause
    events = stack.boto3("logs").get_log_events(logGroupName=group(stack), logStreamName=stream.group(1))["events"]
    assert any("error: package nginx not found" in e["message"] for e in events), events
    # nothing built, nothing left
    assert not task_calls(detail, "Snapshot Start"), explain(detail)
    wait_until(lambda: not leftovers(stack, out["execution_name"]), 3)
    assert not leftovers(stack, out["execution_name"])


def test_a_lost_send_command_answer_still_runs_the_script_once(stack):
    stack.sim("POST", "reset")
    # the SDK's three attempts of the first SendCommand are all performed and all lose their answer
    stack.sim("POST", "faults", {"lost_response": "SendCommand", "count": 3})
    try:
        out, detail = release(stack, "rc-lost", "1.0.0", stack.recipe("rc-lost"))
        calls = stack.sim("GET", "calls")["calls"]
    finally:
        stack.sim("POST", "reset")
    assert detail["status"] == "SUCCEEDED", explain(detail)
    execution = out["execution_name"]
    lost = [c for c in calls if c["action"] == "SendCommand" and c["status"] == 500]
    assert len(lost) == 3, calls
    builder = instance_of(stack, execution, "builder")["InstanceId"]
    built = ran_once(stack, builder, execution, "build")
    # the three lost copies, then at least one more send (ListCommands did not show them yet)
    assert len(built) >= 4, built
    assert {c["CommandId"] for c in built} >= {i for c in lost for i in c["created"]}, (built, lost)


def test_the_console_channel_builds_and_tests_without_the_agent(stack):
    stack.sim("POST", "reset")
    recipe = stack.recipe("rc-console", **{"build.channel": "console"})
    out, detail = release(stack, "rc-console", "1.0.0", recipe)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    execution = out["execution_name"]
    for role in ("builder", "test-instance"):
        instance = instance_of(stack, execution, role)
        assert commands(stack, instance["InstanceId"]) == [], role
        assert "channel=run-command" not in user_data(stack, instance["InstanceId"])
    # the builder's user data ran the script and printed its marker; the test instance's printed the smoke result
    builder = instance_of(stack, execution, "builder")["InstanceId"]
    console = stack.boto3("ec2").get_console_output(InstanceId=builder).get("Output", "")
    assert "AMI-PIPELINE-RESULT: SUCCESS" in console, console


def test_an_agent_lost_after_a_long_build_is_waited_for_before_sysprep(stack):
    """Issue 22 item 3: the Windows example's build command runs longer than the agent's deadline (the local stack's
    10 s), and its agent is ConnectionLost for a few calls right after (a reboot, a lost route): sysprep, which needs
    the agent only from the end of the build, waits for it instead of failing the build on the deadline from launch."""
    from test_platforms import windows_recipe

    stack.sim("POST", "reset")
    recipe = windows_recipe(stack, "rc-lost-agent")
    recipe["build"]["script"] += "# sim:runs-for=12\n"
    stack.sim("POST", "faults", {"agent_connection_lost": "builder", "calls": 3})
    try:
        out, detail = release(stack, "rc-lost-agent", "2026.11.0", recipe)
    finally:
        stack.sim("POST", "reset")
    assert detail["status"] == "SUCCEEDED", explain(detail)
    execution = out["execution_name"]
    builder = instance_of(stack, execution, "builder")
    sent = commands(stack, builder["InstanceId"])
    assert [c["Comment"] for c in sent][:1] == [f"ami-pipeline build {execution}"], sent
    sysprep = [c for c in sent if c["Comment"] == f"ami-pipeline sysprep {execution}"]
    build_ended = stack.boto3("ssm").get_command_invocation(
        CommandId=sent[0]["CommandId"], InstanceId=builder["InstanceId"])["ExecutionEndDateTime"]
    ended_at = datetime.fromisoformat(build_ended.replace("Z", "+00:00")).timestamp()
    assert ended_at - builder["LaunchTime"].timestamp() > 10, "the build ended past the deadline from launch"
    assert sysprep and sysprep[0]["RequestedDateTime"].timestamp() > ended_at, sent
