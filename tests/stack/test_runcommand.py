"""SSM Run Command and the agent in the emulator (moto_ext/runcommand.py), against a real server process."""

import pytest
from botocore.exceptions import ClientError

from test_moto_ext import base_image, client, launch, request_log, reset_sim, server, sim, use1  # noqa: F401

K = 2


@pytest.fixture(scope="session")
def ssm(client):
    return client("us-east-1", "ssm")


@pytest.fixture(scope="session")
def logs(client):
    return client("us-east-1", "logs")


def running(ec2, image, user_data="#!/bin/bash\necho hi\n"):
    iid = launch(ec2, image, user_data=user_data)
    for _ in range(K + 2):
        ec2.describe_instances(InstanceIds=[iid])
    return iid


def online(ssm, iid):
    flt = [{"Key": "InstanceIds", "Values": [iid]}]
    seen = [ssm.describe_instance_information(Filters=flt)["InstanceInformationList"] for _ in range(K + 2)]
    return seen


def send(ssm, iid, script, **kw):
    return ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript",
                            Parameters={"commands": [script]}, Comment="ami-pipeline test", **kw)["Command"]


def invocation(ssm, command_id, iid):
    return ssm.get_command_invocation(CommandId=command_id, InstanceId=iid)


def finish(ssm, command_id, iid):
    with pytest.raises(ClientError) as err:  # eventual consistency: not yet visible right after the send
        invocation(ssm, command_id, iid)
    assert err.value.response["Error"]["Code"] == "InvocationDoesNotExist"
    states = [invocation(ssm, command_id, iid)["Status"] for _ in range(K + 2)]
    return states, invocation(ssm, command_id, iid)


def test_the_agent_comes_online_after_a_while_and_sends_before_fail(use1, ssm, base_image):
    iid = running(use1, base_image)
    with pytest.raises(ClientError) as err:
        send(ssm, iid, "echo hi")
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"
    seen = online(ssm, iid)
    windows = use1.describe_images(ImageIds=[base_image])["Images"][0].get("Platform") == "windows"
    assert seen[0] == [] and seen[-1][0]["PingStatus"] == "Online"
    assert seen[-1][0]["PlatformType"] == ("Windows" if windows else "Linux")


def test_an_instance_without_the_agent_never_comes_online(use1, ssm, base_image):
    iid = running(use1, base_image, "#!/bin/bash\n# sim:no-agent\n")
    assert online(ssm, iid)[-1] == []


def test_agent_offline_fault(server, use1, ssm, base_image):
    sim(server, "/_sim/faults", {"agent_offline": "builder"})
    iid = running(use1, base_image, "#!/bin/bash\n# AMI-PIPELINE-BUILDER\n")
    assert online(ssm, iid)[-1] == []


def test_a_command_runs_pending_in_progress_then_success_only_on_its_instance(use1, ssm, logs, base_image):
    iid, other = running(use1, base_image), running(use1, base_image)
    online(ssm, iid), online(ssm, other)
    cmd = send(ssm, iid, "echo provisioned", CloudWatchOutputConfig={
        "CloudWatchLogGroupName": "/ami-pipeline/test", "CloudWatchOutputEnabled": True})
    assert cmd["Status"] == "Pending" and cmd["InstanceIds"] == [iid]
    states, done = finish(ssm, cmd["CommandId"], iid)
    assert states[0] == "InProgress" and done["Status"] == "Success" and done["ResponseCode"] == 0
    assert done["StandardOutputContent"] == "provisioned\n"
    with pytest.raises(ClientError):
        invocation(ssm, cmd["CommandId"], other)
    stream = f"{cmd['CommandId']}/{iid}/aws-runShellScript/stdout"
    events = logs.get_log_events(logGroupName="/ami-pipeline/test", logStreamName=stream)["events"]
    assert [e["message"] for e in events] == ["provisioned"]


def test_a_failing_script_has_its_exit_code_and_output_cut_at_24000_characters(use1, ssm, logs, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    cmd = send(ssm, iid, "# sim:fail-provision\nexit 3")
    _, done = finish(ssm, cmd["CommandId"], iid)
    assert (done["Status"], done["ResponseCode"]) == ("Failed", 3)
    assert "package nginx not found" in done["StandardErrorContent"]
    cmd = send(ssm, iid, "# sim:long-output")
    _, done = finish(ssm, cmd["CommandId"], iid)
    assert len(done["StandardOutputContent"]) == 24000


def test_timed_out_and_cancelled(use1, ssm, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    cmd = send(ssm, iid, "# sim:command-timeout")
    _, done = finish(ssm, cmd["CommandId"], iid)
    assert (done["Status"], done["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")
    cmd = send(ssm, iid, "# sim:never-ready")
    states, done = finish(ssm, cmd["CommandId"], iid)
    assert done["Status"] == "InProgress"
    # "There is no guarantee that the command will be terminated" (CancelCommand): Cancelling, then Cancelled
    ssm.cancel_command(CommandId=cmd["CommandId"], InstanceIds=[iid])
    assert invocation(ssm, cmd["CommandId"], iid)["Status"] == "Cancelling"
    assert invocation(ssm, cmd["CommandId"], iid)["Status"] == "Cancelled"


def test_output_is_cut_at_24000_characters_of_stdout_and_8000_of_stderr(use1, ssm, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    _, done = finish(ssm, send(ssm, iid, "# sim:long-output")["CommandId"], iid)
    assert (len(done["StandardOutputContent"]), len(done["StandardErrorContent"])) == (24000, 8000)


def test_without_a_group_name_output_goes_to_aws_ssm_document(use1, ssm, logs, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    cmd = send(ssm, iid, "echo provisioned", CloudWatchOutputConfig={"CloudWatchOutputEnabled": True})
    finish(ssm, cmd["CommandId"], iid)
    stream = f"{cmd['CommandId']}/{iid}/aws-runShellScript/stdout"
    events = logs.get_log_events(logGroupName="aws/ssm/AWS-RunShellScript", logStreamName=stream)["events"]
    assert [e["message"] for e in events] == ["provisioned"]


def test_list_commands_lags_a_send_and_filters(use1, ssm, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    cmd = send(ssm, iid, "echo hi")
    assert ssm.list_commands(InstanceId=iid)["Commands"] == []  # sent a moment ago
    listed = ssm.list_commands(InstanceId=iid)["Commands"]
    assert [c["CommandId"] for c in listed] == [cmd["CommandId"]] and listed[0]["Comment"] == "ami-pipeline test"
    assert ssm.list_commands(InstanceId=iid, Filters=[{"key": "DocumentName",
                                                        "value": "AWS-RunPowerShellScript"}])["Commands"] == []
    invs = ssm.list_command_invocations(CommandId=cmd["CommandId"])["CommandInvocations"]
    assert [i["InstanceId"] for i in invs] == [iid]


def test_a_run_once_guard_runs_the_body_once_per_instance(use1, ssm, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    script = "# AMI-PIPELINE-ONCE: exec-1\n# sim:fail-provision\n"
    _, first = finish(ssm, send(ssm, iid, script)["CommandId"], iid)
    _, second = finish(ssm, send(ssm, iid, script)["CommandId"], iid)
    assert first["Status"] == "Failed" and second["Status"] == "Success"
    assert "already ran" in second["StandardOutputContent"]


def test_ssm_and_logs_requests_get_action_faults_and_the_call_log(server, use1, ssm, logs, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    sim(server, "/_sim/faults", [{"lost_response": "SendCommand"}, {"action": "GetLogEvents", "throttle": 1}])
    with pytest.raises(ClientError) as err:  # performed, answer lost
        send(ssm, iid, "echo hi")
    assert err.value.response["Error"]["Code"] == "InternalServerError"
    ssm.list_commands(InstanceId=iid)  # the lag of a new command: the first listing hides it
    listed = ssm.list_commands(InstanceId=iid)["Commands"]
    assert len(listed) == 1, "the command was sent though its answer was lost"
    with pytest.raises(ClientError) as err:
        logs.get_log_events(logGroupName="/aws/ssm/AWS-RunShellScript", logStreamName="x")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    calls = sim(server, "/_sim/calls")
    sends = [c for c in calls["calls"] if c["action"] == "SendCommand"]
    assert [(c["status"], c["created"]) for c in sends] == [(500, [listed[0]["CommandId"]])]
    assert calls["counts"]["us-east-1"]["GetLogEvents"] == 1


def test_a_builder_on_the_run_command_channel_runs_nothing_from_user_data(use1, base_image):
    iid = launch(use1, base_image, user_data="#!/bin/bash\n# AMI-PIPELINE-BUILDER execution=x channel=run-command\n")
    for _ in range(3 * K + 2):
        state = use1.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running", "the step stops it, not its user data"
    console = use1.get_console_output(InstanceId=iid).get("Output", "")
    assert "AMI-PIPELINE-RESULT" not in console


def test_stop_during_command_fault_expires_to_delivery_timed_out_at_expires_after(server, use1, ssm, base_image):
    """"If a command expires, it changes status to DeliveryTimedOut for all invocations that have the status
    InProgress, Pending, or Delayed" (Command.ExpiresAfter): a script cut off by a stop stays InProgress until then."""
    sim(server, "/_sim/faults", {"stop_during_command": "builder"})
    iid = running(use1, base_image, "#!/bin/bash\n# AMI-PIPELINE-BUILDER execution=x channel=run-command\n")
    online(ssm, iid)
    cmd = ssm.send_command(InstanceIds=[iid], DocumentName="AWS-RunShellScript", TimeoutSeconds=600,
                           Parameters={"commands": ["echo hi"], "executionTimeout": ["3600"]})["Command"]
    states, done = finish(ssm, cmd["CommandId"], iid)
    inst = use1.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] in ("stopping", "stopped") and done["Status"] == "InProgress", (inst["State"], done)
    assert (cmd["ExpiresAfter"] - cmd["RequestedDateTime"]).total_seconds() == 600 + 3600
    sim(server, "/_sim/command_requested_time", {"region": "us-east-1", "command_id": cmd["CommandId"],
                                                 "requested_time": "2026-01-01T00:00:00Z"})
    done = invocation(ssm, cmd["CommandId"], iid)
    assert (done["Status"], done["StatusDetails"], done["ResponseCode"]) == ("TimedOut", "DeliveryTimedOut", -1), done
    assert "ExecutionStartDateTime" in done, "it had started: the expiry came while it ran"
    ssm.list_commands(CommandId=cmd["CommandId"])  # the lag of a new command: its first listing hides it
    listed = ssm.list_commands(CommandId=cmd["CommandId"])["Commands"]
    assert [(c["Status"], c["StatusDetails"]) for c in listed] == [("TimedOut", "DeliveryTimedOut")]


def test_a_command_to_a_stopped_instance_is_delayed_then_expires(server, use1, ssm, base_image):
    iid = running(use1, base_image)
    online(ssm, iid)
    use1.stop_instances(InstanceIds=[iid])
    cmd = send(ssm, iid, "echo hi")  # a stopped instance's agent is registered, ConnectionLost: accepted
    with pytest.raises(ClientError):
        invocation(ssm, cmd["CommandId"], iid)
    assert invocation(ssm, cmd["CommandId"], iid)["Status"] == "Delayed"
    sim(server, "/_sim/command_requested_time", {"region": "us-east-1", "command_id": cmd["CommandId"],
                                                 "requested_time": "2026-01-01T00:00:00Z"})
    done = invocation(ssm, cmd["CommandId"], iid)
    assert (done["Status"], done["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")
    assert "ExecutionStartDateTime" not in done or not done["ExecutionStartDateTime"]


def test_agent_connection_lost_fault_after_the_first_command_succeeded(server, use1, ssm, base_image):
    """The agent goes away for N DescribeInstanceInformation calls once the builder's first command succeeded (a reboot,
    a lost route): ConnectionLost with its last ping, and SendCommand refused meanwhile ("SSM Agent isn't running")."""
    sim(server, "/_sim/faults", {"agent_connection_lost": "builder", "calls": 2})
    iid = running(use1, base_image, "#!/bin/bash\n# AMI-PIPELINE-BUILDER execution=x channel=run-command\n")
    seen = online(ssm, iid)
    last_online = seen[-1][0]["LastPingDateTime"]
    _, done = finish(ssm, send(ssm, iid, "echo built")["CommandId"], iid)
    assert done["Status"] == "Success"
    flt = [{"Key": "InstanceIds", "Values": [iid]}]
    lost = ssm.describe_instance_information(Filters=flt)["InstanceInformationList"][0]
    assert lost["PingStatus"] == "ConnectionLost" and lost["LastPingDateTime"] == last_online, lost
    with pytest.raises(ClientError) as err:
        send(ssm, iid, "echo sysprep")
    assert err.value.response["Error"]["Code"] == "InvalidInstanceId"
    ssm.describe_instance_information(Filters=flt)
    back = ssm.describe_instance_information(Filters=flt)["InstanceInformationList"][0]
    assert back["PingStatus"] == "Online" and back["LastPingDateTime"] > last_online
    assert send(ssm, iid, "echo sysprep")["Status"] == "Pending"
