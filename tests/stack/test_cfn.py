"""infra/template.yaml created as a CloudFormation stack in the emulator (moto_ext/cfn.py), the way
tests/local/deploy.py deploys the local stack, against a real server process: once with the template's defaults and
once with every optional part set. Each test reads what the stack made through the services' APIs."""

from __future__ import annotations

import json
import re

import pytest
from botocore.exceptions import ClientError

from local.deploy import ROOT, Deployment, deploy
from test_moto_ext import client, request_log, reset_sim, server  # noqa: F401

CONTRACT = json.loads((ROOT / "infra" / "contract.json").read_text())
OWN_ROLE = "own-builder"


def resources(client, name: str) -> dict[str, dict]:
    cfn = client("us-east-1", "cloudformation")
    return {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]}


@pytest.fixture(scope="module")
def defaults(server) -> Deployment:
    return deploy(server, "ami-pipeline", {})


@pytest.fixture(scope="module")
def everything(server, client) -> Deployment:
    """Every optional part on, beside the defaults' stack in the same account: its own event bus name."""
    ec2, iam = client("us-east-1"), client("us-east-1", "iam")
    role = iam.create_role(RoleName=OWN_ROLE, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))["Role"]
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]]
    sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]["GroupId"]
    table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]
    keys = [client(r, "kms").create_key()["KeyMetadata"]["Arn"] for r in ("us-east-1", "eu-west-1")]
    return deploy(server, "full", {
        "EventBusName": "full-releases", "ReleaseSource": "com.example.ci,com.example.other",
        "ScheduleExpression": "cron(0 4 * * ? *)", "ScheduleTimezone": "Europe/Berlin",
        "AlarmEmail": "platform-team@example.com", "NotifyOnSuccess": "true", "BuilderInstanceProfileRoleArn":
        role["Arn"], "KmsKeyArns": ",".join(keys), "ArtifactLocationArn": "arn:aws:s3:::releases/*",
        "EndpointVpcId": vpc, "EndpointSubnetIds": ",".join(subnets[:2]), "EndpointSecurityGroupIds": sg,
        "EndpointRouteTableIds": table["RouteTableId"], "Ec2StepConcurrency": "5", "LogRetentionInDays": "30"})


def statements(deployment: Deployment, binary: str) -> list[dict]:
    return [st for doc in deployment.role_of(binary).policies.values() for st in doc["Statement"]]


def by_sid(deployment: Deployment, binary: str, sid: str) -> dict:
    found = [st for st in statements(deployment, binary) if st.get("Sid") == sid]
    assert len(found) == 1, (binary, sid, found)
    return found[0]


def test_every_resource_of_the_transformed_template_is_created_unless_its_condition_is_false(client, defaults):
    template = defaults.template
    made = resources(client, "ami-pipeline")
    conditional = {k for k, r in template["Resources"].items() if "Condition" in r}
    # with the defaults: no subscription, no endpoints; the bus and the nightly schedule (of every pipeline) are made
    created = {"ReleaseEventBus", "NightlySchedule"}
    assert conditional - set(made) == conditional - created, sorted(conditional - set(made))
    missing = set(template["Resources"]) - conditional - set(made)
    assert not missing, f"not created: {sorted(missing)}"
    incomplete = {k: r["ResourceStatus"] for k, r in made.items() if r["ResourceStatus"] != "CREATE_COMPLETE"}
    assert not incomplete, incomplete
    types = {r["ResourceType"] for r in made.values()}
    assert {"AWS::CloudWatch::Alarm", "AWS::Lambda::EventInvokeConfig", "AWS::SNS::TopicPolicy",
            "AWS::SQS::QueuePolicy"} <= types, types


def test_functions_get_the_templates_environment_and_roles(defaults):
    assert set(defaults.functions) == set(CONTRACT["functions"])
    trigger = defaults.functions["ami-trigger"]
    assert trigger.environment == {"STATE_MACHINE_ARN": defaults.state_machine_arn,
                                   "RECIPE_PREFIX": "/ami-pipeline/pipelines", "PUBLISH_PARAMETER_PREFIX": "/images"}
    group = defaults.outputs["RunCommandLogGroupName"]
    assert group == "/ami-pipeline/ami-pipeline/run-command"
    for binary in ("ami-build", "ami-test-launch"):
        assert defaults.functions[binary].environment == {"RUN_COMMAND_LOG_GROUP": group}
    assert len({f.role_arn for f in defaults.functions.values()}) == len(defaults.functions), "one role each"


def test_role_policies_are_json_documents_without_the_no_value_items(defaults):
    """Policies read back as JSON (moto kept a Python repr); `!If [HasKmsKeys, {...}, !Ref AWS::NoValue]` leaves no
    null statement when KmsKeyArns is empty."""
    for binary in defaults.functions:
        for st in statements(defaults, binary):
            assert isinstance(st, dict) and st.get("Effect") == "Allow", (binary, st)
    assert not [st for st in statements(defaults, "ami-build") if "kms:CreateGrant" in json.dumps(st)]


def test_one_pass_role_policy_is_in_the_build_and_trigger_roles(defaults, client):
    """PassBuilderRolePolicy (AWS::IAM::Policy) puts one inline policy into two roles; with the defaults it names
    the stack's builder role, the role of the profile <stack>-builder."""
    profile = client("us-east-1", "iam").get_instance_profile(InstanceProfileName="ami-pipeline-builder")
    builder = profile["InstanceProfile"]["Roles"][0]["Arn"]
    assert defaults.outputs["BuilderInstanceProfileName"] == "ami-pipeline-builder"
    for binary in ("ami-build", "ami-trigger"):
        assert by_sid(defaults, binary, "PassBuilderRoleOnly")["Resource"] == builder


def test_the_bus_and_a_list_parameters_default_reach_the_release_rule(defaults, client):
    """`Ref` of the created bus is its name, and ReleaseSource's default (a CommaDelimitedList) is a list."""
    events = client("us-east-1", "events")
    rules = {r["Name"]: r for r in events.list_rules(EventBusName="ami-pipeline")["Rules"]}
    release = next(r for n, r in rules.items() if "ReleaseRule" in n)
    assert json.loads(release["EventPattern"]) == {"source": ["com.example.ci"], "detail-type": ["Release Published"]}
    trigger = defaults.functions["ami-trigger"].arn
    assert [t["Arn"] for t in events.list_targets_by_rule(Rule=release["Name"], EventBusName="ami-pipeline")
            ["Targets"]] == [trigger]


def test_the_state_machine_runs_the_committed_definition_with_the_deployed_functions(defaults, client):
    """DefinitionUri becomes DefinitionS3Location (sam deploy), read from S3, with DefinitionSubstitutions."""
    sfn = client("us-east-1", "stepfunctions")
    definition = sfn.describe_state_machine(stateMachineArn=defaults.state_machine_arn)["definition"]
    committed = (ROOT / "statemachine" / "pipeline.asl.json").read_text()
    arns = {f["substitution"]: defaults.functions[b].arn for b, f in CONTRACT["functions"].items()
            if f.get("substitution")}
    assert definition == re.sub(r"\$\{(\w+)\}", lambda m: arns[m.group(1)], committed)


def test_topic_queue_alarms_and_retries_are_the_templates(defaults, client):
    topic = defaults.outputs["NotificationTopicArn"]
    policy = json.loads(client("us-east-1", "sns").get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["ExecutionStatusEvents", "Alarms"]
    sqs = client("us-east-1", "sqs")
    queue = json.loads(sqs.get_queue_attributes(QueueUrl=defaults.outputs["DeadLetterQueueUrl"],
                                                AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert queue["Statement"][0]["Resource"] == defaults.outputs["DeadLetterQueueArn"]
    alarms = client("us-east-1", "cloudwatch").describe_alarms()["MetricAlarms"]
    mine = [a for a in alarms if a["AlarmName"].startswith("ami-pipeline-")]
    assert sorted(a["MetricName"] for a in mine) == ["ApproximateNumberOfMessagesVisible", "ExecutionsFailed"]
    assert all(a["AlarmActions"] == [topic] for a in mine)
    config = client("us-east-1", "lambda").get_function_event_invoke_config(
        FunctionName=defaults.functions["ami-trigger"].name)
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (2, 21600)


def test_everything_set_adds_the_schedule_subscription_endpoints_and_grants(everything, client):
    made = resources(client, "full")
    assert {"NightlySchedule", "AlarmEmailSubscription", "SsmEndpoint", "SsmMessagesEndpoint",
            "Ec2MessagesEndpoint", "LogsEndpoint", "S3Endpoint"} <= set(made)
    scheduler = client("us-east-1", "scheduler")
    schedule = scheduler.get_schedule(Name=made["NightlySchedule"]["PhysicalResourceId"])
    assert schedule["Target"]["Arn"] == everything.outputs["TriggerFunctionArn"]
    assert schedule["Target"]["RoleArn"] == everything.outputs["SchedulerRoleArn"]
    assert json.loads(schedule["Target"]["Input"]) == {"refresh": "all",
                                                       "scheduled_time": "<aws.scheduler.scheduled-time>"}
    assert (schedule["ScheduleExpression"], schedule["ScheduleExpressionTimezone"]) == ("cron(0 4 * * ? *)",
                                                                                        "Europe/Berlin")
    subs = client("us-east-1", "sns").list_subscriptions_by_topic(TopicArn=everything.outputs["NotificationTopicArn"])
    assert [(s["Protocol"], s["Endpoint"]) for s in subs["Subscriptions"]] == [("email", "platform-team@example.com")]
    endpoints = client("us-east-1").describe_vpc_endpoints(
        VpcEndpointIds=[made[k]["PhysicalResourceId"] for k in ("SsmEndpoint", "S3Endpoint")])["VpcEndpoints"]
    assert sorted((e["ServiceName"], e["VpcEndpointType"]) for e in endpoints) == [
        ("com.amazonaws.us-east-1.s3", "Gateway"), ("com.amazonaws.us-east-1.ssm", "Interface")]
    own = everything.parameters["BuilderInstanceProfileRoleArn"]
    assert own in by_sid(everything, "ami-build", "PassBuilderRoleOnly")["Resource"]
    assert own in by_sid(everything, "ami-trigger", "PassBuilderRoleOnly")["Resource"]
    keys = everything.parameters["KmsKeyArns"].split(",")
    assert by_sid(everything, "ami-trigger", "CheckRecipeKeys")["Resource"] == keys
    rule = next(r for r in client("us-east-1", "events").list_rules()["Rules"]
                if "NotificationRule" in r["Name"] and r["Name"].startswith("full-"))
    assert "SUCCEEDED" in json.loads(rule["EventPattern"])["detail"]["$or"][0]["status"]
    assert json.loads(client("us-east-1", "events").list_rules(EventBusName="full-releases")["Rules"][0]
                      ["EventPattern"])["source"] == ["com.example.ci", "com.example.other"]


def test_the_stacks_rules_deliver_to_the_topic_and_accept_the_trigger_as_target(defaults, client):
    """A FAILED execution's status change reaches the notification topic as the rule's InputTransformer writes it
    (read through an SQS subscription, raw); a release event on the stack's bus is accepted (its target, the trigger,
    is not invoked by the emulator)."""
    sns, sqs, events = client("us-east-1", "sns"), client("us-east-1", "sqs"), client("us-east-1", "events")
    queue = sqs.create_queue(QueueName="notified")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=defaults.outputs["NotificationTopicArn"], Protocol="sqs", Endpoint=queue_arn,
                  Attributes={"RawMessageDelivery": "true"})
    execution = f"{defaults.state_machine_arn.replace(':stateMachine:', ':execution:')}:web-r-1-0-0"
    detail = {"executionArn": execution, "stateMachineArn": defaults.state_machine_arn, "name": "web-r-1-0-0",
              "status": "FAILED"}
    out = events.put_events(Entries=[
        {"Source": "aws.states", "DetailType": "Step Functions Execution Status Change", "Detail": json.dumps(detail)},
        {"Source": "com.example.ci", "DetailType": "Release Published", "EventBusName": "ami-pipeline",
         "Detail": json.dumps({"pipeline": "web", "version": "1.0.0"})}])
    assert out["FailedEntryCount"] == 0, out
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]]
    assert len(bodies) == 1 and bodies[0].startswith("ami-pipeline execution web-r-1-0-0 ended FAILED"), bodies
    assert execution in bodies[0], bodies


def test_a_parameter_the_template_does_not_declare_is_refused(server, client):
    with pytest.raises(ClientError) as err:
        deploy(server, "stale", {"NightlyPipeline": "web"})
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"] == "Parameters: [NightlyPipeline] do not exist in the template"
    assert "stale" not in {s["StackName"] for s in client("us-east-1", "cloudformation").list_stacks()["StackSummaries"]}
