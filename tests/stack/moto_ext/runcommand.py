"""SSM Run Command and the SSM agent, on top of the simulated guest (see ../README.md, the rule book).

moto 5.2.5's Run Command is a stub: every command is `Success` at once with empty output, a send to one instance
targets every instance of the region, ListCommands ignores Filters, CloudWatchOutputConfig is ignored, and
DescribeInstanceInformation, ListCommandInvocations and CancelCommand are missing. Here, per account and region:
- the agent of a running instance comes online after K DescribeInstanceInformation calls (`PingStatus Online`),
  never when its user data says `sim:no-agent` or the `agent_offline` fault took it; a stopped instance's agent is
  `ConnectionLost`, with the `LastPingDateTime` of its last `Online` answer; the `agent_connection_lost` fault makes
  it `ConnectionLost` for N calls once the instance's first command succeeded;
- SendCommand (AWS-RunShellScript / AWS-RunPowerShellScript) to an instance whose agent is not registered or not
  running (`ConnectionLost` by the fault), or that is shutting down or terminated, fails `InvalidInstanceId` (SSM API
  reference); the command targets only the instances it names;
- each invocation is `Pending`, then `InProgress` for K GetCommandInvocation calls, then `Success`, `Failed` (exit
  code and output from the script's `sim:` markers), or `TimedOut` (StatusDetails `ExecutionTimedOut`); one whose
  instance is not running is `Delayed` until it runs; `ExpiresAfter` is RequestedDateTime + TimeoutSeconds (delivery)
  + the document's `executionTimeout` ("calculated based on the total timeout for the overall command"), and past it
  every `Pending`, `Delayed` or `InProgress` invocation is `TimedOut` / `DeliveryTimedOut` (`Command.ExpiresAfter`);
  CancelCommand makes an `InProgress` invocation `Cancelling`, then `Cancelled`; just after the send
  GetCommandInvocation answers `InvocationDoesNotExist` once, and ListCommands does not show the command to its first
  call ("The Run Command API follows an eventual consistency model", GetCommandInvocation API reference);
- StandardOutputContent holds "the first 24,000 characters written by the plugin to stdout", StandardErrorContent
  "the first 8,000 characters written by the plugin to stderr"; with CloudWatchOutputConfig the whole output goes to
  CloudWatch Logs, group `CloudWatchLogGroupName` (default `aws/ssm/<document>`, as the API reference writes it),
  streams `<command-id>/<instance-id>/<plugin with ':' as '-'>/stdout|stderr`;
- a script that carries a run-once guard line `AMI-PIPELINE-ONCE: <key>` runs its body once per instance: a second
  command with the same key succeeds at once with the guard's message (what the guard in the rendered script does).
Script markers: `sim:fail-provision` (exit 3, output on stdout and stderr), `sim:fail-smoke` (exit 7),
`sim:command-timeout` (TimedOut), `sim:long-output` (30,000 characters of stdout, 9,000 of stderr),
`sim:never-ready` (stays InProgress), `sim:runs-for=<seconds>` (InProgress until that long after it started).
"""

import re
import uuid
from datetime import timedelta

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.models import ec2_backends
from moto.ssm.responses import SimpleSystemManagerResponse

from . import state

K = state.POLLS
OUTPUT_LIMIT = 24_000
ERROR_LIMIT = 8_000
PLUGINS = {"AWS-RunShellScript": "aws:runShellScript", "AWS-RunPowerShellScript": "aws:runPowerShellScript"}
ONCE = re.compile(r"AMI-PIPELINE-ONCE: (\S+)")
RUNS_FOR = re.compile(r"sim:runs-for=(\d+)")
FINAL = ("Success", "Failed", "TimedOut", "Cancelled")

# (account, region) -> command id -> command
COMMANDS: dict[tuple[str, str], dict[str, dict]] = {}
# instance id -> {"seen": DescribeInstanceInformation calls while running, "never": bool, "last_ping": datetime of
# the last Online answer, "lost": ConnectionLost answers still to give, "lose_after_success": the fault's N}
AGENTS: dict[str, dict] = {}
# instance id -> run-once keys whose body ran there
RAN: dict[str, set[str]] = {}
ORIG: dict = {}


def _error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def _instance(account: str, region: str, instance_id: str):
    try:
        return ec2_backends[account][region].get_instance(instance_id)
    except Exception:  # noqa: BLE001 - unknown instance
        return None


def _agent(inst) -> dict:
    rec = AGENTS.get(inst.id)
    if rec is None:
        guest = state.RESOURCES.get(inst.id, {})
        never = "sim:no-agent" in guest.get("text", "")
        role = guest.get("role")
        if state.FLAGS["agent_offline"].get(role, 0) > 0:
            state.FLAGS["agent_offline"][role] -= 1
            never = True
        lose = 0
        if state.FLAGS.setdefault("agent_connection_lost", {}).get(role):
            specs = state.FLAGS["agent_connection_lost"][role]
            lose = specs.pop(0)
        rec = AGENTS[inst.id] = {"seen": 0, "never": never, "last_ping": None, "lost": 0,
                                 "lose_after_success": lose}
    return rec


def _ping_status(inst) -> str | None:
    """Online, ConnectionLost, or None (never registered)."""
    rec = _agent(inst)
    if rec["never"] or rec["seen"] <= K:
        return None
    return "Online" if inst.state == "running" and rec["lost"] == 0 else "ConnectionLost"


def _platform(inst) -> str:
    return "Windows" if getattr(inst, "platform", None) == "windows" else "Linux"


def describe_instance_information(self):
    """DescribeInstanceInformation with `InstanceInformationFilterList` (instanceIds) or `Filters` (InstanceIds)."""
    ids: list[str] = []
    for f in self._get_param("InstanceInformationFilterList", []) or []:
        if f.get("key") == "InstanceIds":
            ids += f.get("valueSet", [])
    for f in self._get_param("Filters", []) or []:
        if f.get("Key") == "InstanceIds":
            ids += f.get("Values", [])
    backend = ec2_backends[self.current_account][self.region]
    instances = [i for i in backend.all_instances() if not ids or i.id in ids]
    found = []
    for inst in instances:
        rec = _agent(inst)
        if inst.state == "running":
            rec["seen"] += 1
        status = _ping_status(inst)
        if status == "Online":
            rec["last_ping"] = utcnow()
        elif status == "ConnectionLost" and rec["lost"] > 0:
            rec["lost"] -= 1
        if status:
            found.append({"InstanceId": inst.id, "PingStatus": status, "LastPingDateTime": rec["last_ping"] or utcnow(),
                          "AgentVersion": "3.3.1957.0", "IsLatestVersion": True, "PlatformType": _platform(inst),
                          "PlatformName": "Microsoft Windows Server 2022 Datacenter" if _platform(inst) == "Windows"
                          else "Amazon Linux", "ResourceType": "EC2Instance"})
    return ActionResult({"InstanceInformationList": found})


def _script(params: dict) -> str:
    return "\n".join(params.get("commands", []))


def _outcome(script: str, instance_id: str, command_id: str = "") -> dict:
    """What the script does on this guest (a guarded body's first run is recorded in state.RUN_ONCE)."""
    guard = ONCE.search(script)
    if guard and guard.group(1) in RAN.get(instance_id, set()):
        return {"status": "Success", "code": 0, "stdout": f"AMI-PIPELINE-ONCE: {guard.group(1)} already ran\n",
                "stderr": ""}
    if guard:
        RAN.setdefault(instance_id, set()).add(guard.group(1))
        state.RUN_ONCE.setdefault(instance_id, {})[guard.group(1)] = command_id
    if "sim:never-ready" in script:
        return {"status": "InProgress", "code": -1, "stdout": "", "stderr": ""}
    if "sim:command-timeout" in script:
        return {"status": "TimedOut", "code": -1, "stdout": "still working\n", "stderr": ""}
    if "sim:fail-provision" in script:
        lines = "".join(f"step {n}: ok\n" for n in range(1, 200))
        return {"status": "Failed", "code": 3, "stdout": lines + "installing nginx\nerror: package nginx not found\n",
                "stderr": "error: package nginx not found\nfailed to run commands: exit status 3\n"}
    if "sim:fail-smoke" in script:
        return {"status": "Failed", "code": 7, "stdout": "checking http://127.0.0.1/\n",
                "stderr": "curl: (7) Failed to connect to 127.0.0.1 port 80\n"}
    if "sim:long-output" in script:
        return {"status": "Success", "code": 0, "stdout": ("x" * 99 + "\n") * 300, "stderr": ("e" * 89 + "\n") * 100}
    return {"status": "Success", "code": 0, "stdout": "provisioned\n", "stderr": ""}


def send_command(self):
    document = self._get_param("DocumentName")
    if document not in PLUGINS:
        raise _error("InvalidDocument", f"Document {document} does not exist in your account")
    ids = self._get_param("InstanceIds", []) or []
    if not ids:
        raise _error("InvalidInstanceId", "Instances [[]] not in a valid state for account")
    for iid in ids:
        inst = _instance(self.current_account, self.region, iid)
        lost = inst is not None and _agent(inst)["lost"] > 0  # the agent is not running ("SSM Agent isn't running")
        if inst is None or inst.state in ("shutting-down", "terminated") or _ping_status(inst) is None or lost:
            raise _error("InvalidInstanceId", f"Instances [[{iid}]] not in a valid state for account "
                                              f"{self.current_account}")
    params = self._get_param("Parameters", {}) or {}
    cw = self._get_param("CloudWatchOutputConfig") or {}
    now = utcnow()
    command = {
        "CommandId": str(uuid.uuid4()), "DocumentName": document, "DocumentVersion": "$DEFAULT",
        "Comment": self._get_param("Comment", ""), "Parameters": params, "InstanceIds": ids,
        "RequestedDateTime": now,
        "TimeoutSeconds": self._get_int_param("TimeoutSeconds") or 3600,
        "CloudWatchOutputConfig": {"CloudWatchLogGroupName": cw.get("CloudWatchLogGroupName", ""),
                                   "CloudWatchOutputEnabled": bool(cw.get("CloudWatchOutputEnabled"))},
        "MaxConcurrency": "50", "MaxErrors": "0", "TargetCount": len(ids),
        "sim": {"list_hidden": 1, "invocations": {}},
    }
    command["ExpiresAfter"] = _expires_after(command)
    for iid in ids:
        command["sim"]["invocations"][iid] = {"polls": 0, "missing": 1, "status": "Pending", "details": "Pending",
                                              "start": None, "end": None, "outcome": None}
    COMMANDS.setdefault((self.current_account, self.region), {})[command["CommandId"]] = command
    return ActionResult({"Command": _public(command)})


def _expires_after(command: dict) -> object:
    """RequestedDateTime + the delivery timeout + the document's execution timeout (default 3600 s)."""
    execution = int((command["Parameters"].get("executionTimeout") or ["3600"])[0])
    return command["RequestedDateTime"] + timedelta(seconds=command["TimeoutSeconds"] + execution)


def _set(inv: dict, status: str, details: str | None = None) -> None:
    inv["status"], inv["details"] = status, details or status
    if status in FINAL:
        inv["end"] = utcnow()


def _expire(command: dict) -> None:
    """"If a command expires, it changes status to DeliveryTimedOut for all invocations that have the status
    InProgress, Pending, or Delayed" (SSM API reference, Command.ExpiresAfter)."""
    if utcnow() < command["ExpiresAfter"]:
        return
    for inv in command["sim"]["invocations"].values():
        if inv["status"] in ("Pending", "Delayed", "InProgress"):
            _set(inv, "TimedOut", "DeliveryTimedOut")


def _advance(command: dict, iid: str, account: str, region: str) -> dict:
    inv = command["sim"]["invocations"][iid]
    _expire(command)
    if inv["status"] in FINAL:
        return inv
    if inv["status"] == "Cancelling":  # seen once as Cancelling, then Cancelled
        if not inv.pop("cancel_seen", False):
            inv["cancel_seen"] = True
            return inv
        _set(inv, "Cancelled")
        return inv
    inst = _instance(account, region, iid)
    if inst is None or inst.state != "running":
        if inv["status"] == "Pending":  # "the target wasn't available ... The system will try to send the command again"
            _set(inv, "Delayed")
        return inv  # not delivered, and an InProgress one gets no result, while the instance is not running
    inv["polls"] += 1
    if inv["status"] in ("Pending", "Delayed"):
        _set(inv, "InProgress")
        inv["start"] = utcnow()
        inv["outcome"] = _outcome(_script(command["Parameters"]), iid, command["CommandId"])
        role = state.RESOURCES.get(iid, {}).get("role")
        stops = state.FLAGS.setdefault("stop_during_command", {})
        if stops.get(role, 0) > 0:  # fault: someone stops the instance while the script runs
            stops[role] -= 1
            inst.stop()
        return inv
    runs_for = RUNS_FOR.search(_script(command["Parameters"]))
    if runs_for and utcnow() < inv["start"] + timedelta(seconds=int(runs_for.group(1))):
        return inv
    if inv["polls"] > K and inv["outcome"]["status"] != "InProgress":
        outcome = inv["outcome"]["status"]
        _set(inv, outcome, "ExecutionTimedOut" if outcome == "TimedOut" else outcome)
        _write_logs(command, iid, inv["outcome"], account, region)
        agent = AGENTS.get(iid)
        if outcome == "Success" and agent and agent["lose_after_success"]:  # fault: the agent goes away for a while
            agent["lost"], agent["lose_after_success"] = agent["lose_after_success"], 0
    return inv


def _streams(command: dict, iid: str) -> tuple[str, str]:
    group = command["CloudWatchOutputConfig"]["CloudWatchLogGroupName"] or f"aws/ssm/{command['DocumentName']}"
    plugin = PLUGINS[command["DocumentName"]].replace(":", "-")
    return group, f"{command['CommandId']}/{iid}/{plugin}"


def _write_logs(command: dict, iid: str, outcome: dict, account: str, region: str) -> None:
    if not command["CloudWatchOutputConfig"]["CloudWatchOutputEnabled"]:
        return
    from moto.logs.models import logs_backends
    logs = logs_backends[account][region]
    group, prefix = _streams(command, iid)
    if group not in logs.groups:
        logs.create_log_group(group, {})  # SSM creates the group when it does not exist
    now = int(utcnow().timestamp() * 1000)
    for which in ("stdout", "stderr"):
        text = outcome[which]
        if not text:
            continue
        stream = f"{prefix}/{which}"
        logs.create_log_stream(group, stream)
        logs.put_log_events(group, stream, [{"timestamp": now, "message": line}
                                            for line in text.splitlines() if line] or [{"timestamp": now,
                                                                                       "message": text}])


def _public(command: dict) -> dict:
    _expire(command)
    public = {k: v for k, v in command.items() if k != "sim"}
    statuses = [inv["status"] for inv in command["sim"]["invocations"].values()]
    done = [s for s in statuses if s in FINAL]
    public["Status"] = statuses[0] if len(set(statuses)) == 1 else "InProgress"
    if public["Status"] == "Delayed":  # not a command status (CommandStatus)
        public["Status"] = "Pending"
    details = [inv["details"] for inv in command["sim"]["invocations"].values()]
    public["StatusDetails"] = details[0] if len(set(details)) == 1 else "InProgress"
    public["CompletedCount"] = len(done)
    public["ErrorCount"] = sum(1 for s in done if s != "Success")
    return public


def _command(self, command_id: str) -> dict:
    command = COMMANDS.get((self.current_account, self.region), {}).get(command_id)
    if command is None:
        raise _error("InvalidCommandId", "Invalid command id.")
    return command


def get_command_invocation(self):
    command = _command(self, self._get_param("CommandId"))
    iid = self._get_param("InstanceId")
    if iid not in command["sim"]["invocations"]:
        raise _error("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist)")
    inv = command["sim"]["invocations"][iid]
    if inv["missing"] > 0:  # not yet visible just after the send
        inv["missing"] -= 1
        raise _error("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist)")
    inv = _advance(command, iid, self.current_account, self.region)
    outcome = inv["outcome"] or {}
    # the script's own result: not for an invocation that expired or was cancelled
    final = inv["status"] in FINAL and inv["details"] in ("Success", "Failed", "ExecutionTimedOut")
    result = {"CommandId": command["CommandId"], "InstanceId": iid, "Comment": command["Comment"],
              "DocumentName": command["DocumentName"], "DocumentVersion": "$DEFAULT",
              "PluginName": PLUGINS[command["DocumentName"]], "Status": inv["status"],
              "StatusDetails": inv["details"],
              "ResponseCode": outcome.get("code", -1) if final else -1,
              "StandardOutputContent": outcome.get("stdout", "")[:OUTPUT_LIMIT] if final else "",
              "StandardErrorContent": outcome.get("stderr", "")[:ERROR_LIMIT] if final else "",
              "StandardOutputUrl": "", "StandardErrorUrl": "",
              "CloudWatchOutputConfig": command["CloudWatchOutputConfig"]}
    if inv["start"]:
        result["ExecutionStartDateTime"] = inv["start"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if inv["end"]:
        result["ExecutionEndDateTime"] = inv["end"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return ActionResult(result)


def _matches(command: dict, filters: list[dict]) -> bool:
    for f in filters or []:
        key, value = f.get("key"), f.get("value")
        if key == "DocumentName" and command["DocumentName"] != value:
            return False
        if key == "Status" and _public(command)["Status"] != value:
            return False
        if key == "InvokedAfter" and command["RequestedDateTime"].isoformat() < value.replace("Z", "+00:00"):
            return False
        if key == "InvokedBefore" and command["RequestedDateTime"].isoformat() > value.replace("Z", "+00:00"):
            return False
    return True


def _listed(self) -> tuple[list[dict], str | None]:
    """The region's commands a list request names (all, or its CommandId's), and its InstanceId."""
    command_id = self._get_param("CommandId")
    commands = COMMANDS.get((self.current_account, self.region), {}).values()
    return [c for c in commands if not command_id or c["CommandId"] == command_id], self._get_param("InstanceId")


def list_commands(self):
    """ListCommands by CommandId or InstanceId, with Filters; a command sent a moment ago is not listed yet."""
    commands, iid = _listed(self)
    found = []
    for command in commands:
        if iid and iid not in command["InstanceIds"]:
            continue
        if command["sim"]["list_hidden"] > 0:
            command["sim"]["list_hidden"] -= 1
            continue
        if _matches(command, self._get_param("Filters", [])):
            found.append(_public(command))
    return ActionResult({"Commands": found})


def list_command_invocations(self):
    commands, iid = _listed(self)
    found = []
    for command in commands:
        for inv_id, inv in command["sim"]["invocations"].items():
            if iid and inv_id != iid:
                continue
            found.append({"CommandId": command["CommandId"], "InstanceId": inv_id, "Comment": command["Comment"],
                          "DocumentName": command["DocumentName"], "RequestedDateTime": command["RequestedDateTime"],
                          "Status": inv["status"], "StatusDetails": inv["details"],
                          "CloudWatchOutputConfig": command["CloudWatchOutputConfig"]})
    return ActionResult({"CommandInvocations": found})


def cancel_command(self):
    """A running invocation is `Cancelling` until the next look at it, one not started is `Cancelled` at once ("There
    is no guarantee that the command will be terminated", CancelCommand API reference)."""
    command = _command(self, self._get_param("CommandId"))
    for iid in self._get_param("InstanceIds", []) or list(command["sim"]["invocations"]):
        inv = command["sim"]["invocations"].get(iid)
        if inv and inv["status"] == "InProgress":
            _set(inv, "Cancelling")
        elif inv and inv["status"] in ("Pending", "Delayed"):
            _set(inv, "Cancelled")
    return ActionResult({})


def set_requested_time(region: str, command_id: str, requested_time: str, account: str | None = None) -> None:
    """/_sim/command_requested_time: the command as if sent then (ExpiresAfter follows). KeyError when unknown."""
    from datetime import datetime, timezone

    from moto.core import DEFAULT_ACCOUNT_ID

    command = COMMANDS[(account or DEFAULT_ACCOUNT_ID, region)][command_id]
    when = datetime.fromisoformat(requested_time.replace("Z", "+00:00"))
    command["RequestedDateTime"] = when.astimezone(timezone.utc).replace(tzinfo=None)  # moto's naive UTC
    command["ExpiresAfter"] = _expires_after(command)


HANDLERS = {
    "describe_instance_information": describe_instance_information,
    "send_command": send_command,
    "get_command_invocation": get_command_invocation,
    "list_commands": list_commands,
    "list_command_invocations": list_command_invocations,
    "cancel_command": cancel_command,
}


def _locked(fn):
    """SSM requests read the EC2 backend and the guest's state: served one at a time with the EC2 requests."""
    def handler(self):
        with state.LOCK:
            return fn(self)
    handler.__name__ = fn.__name__
    return handler


def install() -> None:
    if not state.patch(SimpleSystemManagerResponse, HANDLERS, ORIG, _locked):
        return
    state.FLAGS.setdefault("agent_offline", {})
    state.FLAGS.setdefault("agent_connection_lost", {})
