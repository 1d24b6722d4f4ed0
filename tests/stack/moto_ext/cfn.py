"""CloudFormation as the pipeline's stack needs it: what moto 5.2.5 lacks or gets wrong when it creates
infra/template.yaml (transformed by aws-sam-translator, tests/local/deploy.py) with CreateStack. Each patch is a row
of ../README.md, "CloudFormation (moto 5.2.5)"; tests/stack/test_cfn.py creates the stack against a server.

The added resource types create the object of moto's own backend for them (alarms, subscriptions, topic and queue
policies, schedules, a function's event invoke config), so a test reads what the stack made through the service's
API, as it would in AWS. The stack's EventBridge rules deliver to their SNS target and accept their Lambda target, for
which moto's PutEvents failed."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import urlparse

from moto.awslambda.models import lambda_backends
from moto.cloudformation import models as cloudformation, parsing
from moto.cloudformation.exceptions import ValidationError
from moto.cloudwatch.models import cloudwatch_backends
from moto.core.common_models import CloudFormationModel
from moto.events import models as events
from moto.iam import models as iam
from moto.s3.models import s3_backends
from moto.scheduler.models import scheduler_backends
from moto.sns.models import sns_backends
from moto.sqs.models import sqs_backends
from moto.stepfunctions import models as sfn
from moto.utilities.arns import parse_arn

PARTITION = "aws"


# -- intrinsics and parameters -----------------------------------------------------------------------------------
def _bus_ref(self: events.EventBus) -> str:
    """`Ref` of an AWS::Events::EventBus is its name (template reference, AWS::Events::EventBus, "Return values");
    moto returned the object, and the rule naming the bus failed ("'EventBus' object has no attribute 'split'")."""
    return self.name


def _load_parameters(original):
    """A CommaDelimitedList (or List<...>) parameter is a list also when it takes its Default ("Parameters" in the
    CloudFormation user guide): moto split only the values passed to CreateStack, so `source: !Ref ReleaseSource`
    became a string and the rule failed ("'source' must be an object or an array"). A parameter the template does
    not declare is refused, as CloudFormation refuses it ("Parameters: [X] do not exist in the template"): moto
    ignored it, so a renamed parameter passed under its old name went unnoticed."""

    def load_parameters(self: parsing.ResourceMap) -> None:
        unknown = sorted(set(self.input_parameters) - set(self._template.get("Parameters", {})))
        if unknown:
            raise ValidationError(message=f"Parameters: [{', '.join(unknown)}] do not exist in the template")
        original(self)
        for name, slot in self._template.get("Parameters", {}).items():
            kind = slot.get("Type", "String")
            value = self.resolved_parameters.get(name)
            if (kind == "CommaDelimitedList" or kind.startswith("List<")) and isinstance(value, str):
                self.resolved_parameters[name] = value.split(",")
                self._parsed_resources[name] = self.resolved_parameters[name]

    return load_parameters


def _clean_json(original):
    """`!Ref AWS::NoValue` removes the list item it stands for ("Condition functions", Fn::If): moto kept a None in
    the list, e.g. a `null` statement in a role's policy when HasKmsKeys is false."""

    def clean_json(resource_json: Any, resources_map: parsing.ResourceMap) -> Any:
        out = original(resource_json, resources_map)
        if isinstance(resource_json, list) and isinstance(out, list):
            return [x for x in out if x is not None]
        return out

    return clean_json


def _stack_resources(self: cloudformation.Stack) -> list[Any]:
    """ListStackResources / DescribeStackResources list what the stack made: moto also listed a blank entry for
    each resource whose Condition is false."""
    return [r for r in self.resource_map.values() if r is not None]


# -- existing types moto handles partly --------------------------------------------------------------------------
def _role_create(original):
    """A role's inline `Policies` are JSON documents to GetRolePolicy: moto stored the resolved dict's Python repr
    (single quotes), which no IAM evaluator reads."""

    def create(cls, resource_name: str, cloudformation_json: dict, account_id: str, region_name: str, **kwargs):
        for policy in cloudformation_json["Properties"].get("Policies", []):
            if not isinstance(policy["PolicyDocument"], str):
                policy["PolicyDocument"] = json.dumps(policy["PolicyDocument"])
        return original.__func__(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)

    return classmethod(create)


def _state_machine_create(original):
    """AWS::StepFunctions::StateMachine takes its definition from `DefinitionString`, `Definition` (an object) or
    `DefinitionS3Location` (what `sam deploy` makes of `DefinitionUri`), with `${name}` replaced from
    `DefinitionSubstitutions`: moto read only DefinitionString and ignored the substitutions."""

    def create(cls, resource_name: str, cloudformation_json: dict, account_id: str, region_name: str, **kwargs):
        props = cloudformation_json["Properties"]
        if "DefinitionS3Location" in props:
            where = props.pop("DefinitionS3Location")
            obj = s3_backends[account_id][PARTITION].get_object(where["Bucket"], where["Key"])
            props["DefinitionString"] = obj.value.decode()
        elif "Definition" in props:
            props["DefinitionString"] = json.dumps(props.pop("Definition"))
        for key, value in props.pop("DefinitionSubstitutions", {}).items():
            props["DefinitionString"] = props["DefinitionString"].replace("${" + key + "}", str(value))
        return original.__func__(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)

    return classmethod(create)


# -- types moto's CloudFormation lacks ---------------------------------------------------------------------------
class _Added:
    """A resource of a type moto's CloudFormation has no model for, made through moto's backend for it.
    `physical_resource_id` is what `Ref` returns, `attributes` what `Fn::GetAtt` can read. Stacks here are created
    once per server and never updated or deleted. (moto's type map takes the direct subclasses of
    CloudFormationModel: each type names it besides this mixin.)"""

    TYPE = ""

    def __init__(self, physical_resource_id: str, attributes: dict[str, str] | None = None):
        self.physical_resource_id = physical_resource_id
        self.attributes = attributes or {}

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def cloudformation_type(cls) -> str:
        return cls.TYPE

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.attributes[attribute_name]

    @classmethod
    def update_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{cls.TYPE}: stack updates are not emulated")

    @classmethod
    def delete_from_cloudformation_json(cls, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"{cls.TYPE}: stack deletion is not emulated")

    def is_created(self) -> bool:
        return True


class Alarm(_Added, CloudFormationModel):
    """AWS::CloudWatch::Alarm: a metric alarm (DescribeAlarms). Ref: the alarm name."""

    TYPE = "AWS::CloudWatch::Alarm"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict, account_id: str,
                                        region_name: str, **kwargs: Any) -> Alarm:
        p = cloudformation_json["Properties"]
        name = p.get("AlarmName", resource_name)
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=name, namespace=p.get("Namespace"), metric_name=p.get("MetricName"),
            comparison_operator=p["ComparisonOperator"], evaluation_periods=p["EvaluationPeriods"],
            period=p.get("Period"), threshold=p.get("Threshold"), statistic=p.get("Statistic"),
            description=p.get("AlarmDescription"), dimensions=p.get("Dimensions", []),
            alarm_actions=p.get("AlarmActions", []), ok_actions=p.get("OKActions", []),
            insufficient_data_actions=p.get("InsufficientDataActions", []),
            actions_enabled=p.get("ActionsEnabled", True), treat_missing_data=p.get("TreatMissingData"),
            datapoints_to_alarm=p.get("DatapointsToAlarm"), unit=p.get("Unit"))
        return cls(name, {"Arn": alarm.alarm_arn})


class EventInvokeConfig(_Added, CloudFormationModel):
    """AWS::Lambda::EventInvokeConfig: the function's asynchronous retries and event age
    (GetFunctionEventInvokeConfig). Ref: an id made of the function name and qualifier."""

    TYPE = "AWS::Lambda::EventInvokeConfig"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict, account_id: str,
                                        region_name: str, **kwargs: Any) -> EventInvokeConfig:
        p = cloudformation_json["Properties"]
        config = {k: p[k] for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")
                  if k in p}
        lambda_backends[account_id][region_name].put_function_event_invoke_config(p["FunctionName"], config)
        return cls(f"{p['FunctionName']}:{p.get('Qualifier', '$LATEST')}")


class Subscription(_Added, CloudFormationModel):
    """AWS::SNS::Subscription: a subscription of the topic (ListSubscriptionsByTopic). Ref: its ARN."""

    TYPE = "AWS::SNS::Subscription"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict, account_id: str,
                                        region_name: str, **kwargs: Any) -> Subscription:
        p = cloudformation_json["Properties"]
        sub = sns_backends[account_id][region_name].subscribe(p["TopicArn"], p["Endpoint"], p["Protocol"])
        return cls(sub.arn, {"Arn": sub.arn})


class TopicPolicy(_Added, CloudFormationModel):
    """AWS::SNS::TopicPolicy: the `Policy` attribute of every topic in `Topics` (GetTopicAttributes). Ref: an id."""

    TYPE = "AWS::SNS::TopicPolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict, account_id: str,
                                        region_name: str, **kwargs: Any) -> TopicPolicy:
        p = cloudformation_json["Properties"]
        for topic in p["Topics"]:
            sns_backends[account_id][region_name].set_topic_attribute(topic, "policy", json.dumps(p["PolicyDocument"]))
        return cls(resource_name)


class QueuePolicy(_Added, CloudFormationModel):
    """AWS::SQS::QueuePolicy: the `Policy` attribute of every queue in `Queues` (queue URLs; GetQueueAttributes).
    Ref: an id."""

    TYPE = "AWS::SQS::QueuePolicy"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict, account_id: str,
                                        region_name: str, **kwargs: Any) -> QueuePolicy:
        p = cloudformation_json["Properties"]
        for url in p["Queues"]:
            name = urlparse(url).path.rsplit("/", 1)[-1]
            sqs_backends[account_id][region_name].set_queue_attributes(
                name, {"Policy": json.dumps(p["PolicyDocument"])})
        return cls(resource_name)


class Schedule(_Added, CloudFormationModel):
    """AWS::Scheduler::Schedule: a schedule with its target and input (GetSchedule). Ref: its name."""

    TYPE = "AWS::Scheduler::Schedule"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: dict, account_id: str,
                                        region_name: str, **kwargs: Any) -> Schedule:
        p = cloudformation_json["Properties"]
        schedule = scheduler_backends[account_id][region_name].create_schedule(
            description=p.get("Description"), end_date=p.get("EndDate"),
            flexible_time_window=p["FlexibleTimeWindow"], group_name=p.get("GroupName"),
            kms_key_arn=p.get("KmsKeyArn"), name=p.get("Name", resource_name),
            schedule_expression=p["ScheduleExpression"],
            schedule_expression_timezone=p.get("ScheduleExpressionTimezone"), start_date=p.get("StartDate"),
            state=p.get("State"), target=p["Target"], action_after_completion=None)
        return cls(schedule.name, {"Arn": schedule.arn})


ADDED = (Alarm, EventInvokeConfig, Subscription, TopicPolicy, QueuePolicy, Schedule)


# -- what the stack's rules deliver to ---------------------------------------------------------------------------
def _send_to_targets(original):
    """The stack's rules have an SNS topic (NotificationRule) and a Lambda function (ReleaseRule) as targets, for
    which moto's PutEvents raised NotImplementedError (HTTP 500) once a matching event arrived. An SNS target gets
    the event, after the target's InputTransformer, published to the topic ("Amazon EventBridge targets"; a string
    input is the message as is). A Lambda target is accepted and not invoked: the handlers are local processes, not
    moto functions (tests invoke the trigger directly; tests/local/guide.py delivers a matching release event
    itself)."""

    def send_to_targets(self: events.Rule, original_event: dict, transform_input: bool = True) -> None:
        ours = [t for t in self.targets if parse_arn(t["Arn"]).service in ("sns", "lambda")]
        rest = copy.copy(self)
        rest.targets = [t for t in self.targets if t not in ours]
        original(rest, original_event, transform_input)
        if not ours or not self.event_pattern.matches_event(original_event):
            return
        for target in ours:
            arn = parse_arn(target["Arn"])
            if arn.service != "sns":
                continue
            transformer = target.get("InputTransformer", {}) if transform_input else {}
            event = events.EventTemplateParser.parse(input_template=transformer.get("InputTemplate"),
                                                     input_paths_map=transformer.get("InputPathsMap", {}),
                                                     event=original_event)
            message = event if isinstance(event, str) else json.dumps(event)
            sns_backends[arn.account][arn.region].get_topic(target["Arn"]).publish(message)

    return send_to_targets


def install() -> None:
    events.EventBus.physical_resource_id = property(_bus_ref)
    parsing.ResourceMap.load_parameters = _load_parameters(parsing.ResourceMap.load_parameters)
    parsing.clean_json = _clean_json(parsing.clean_json)
    cloudformation.Stack.stack_resources = property(_stack_resources)
    events.Rule.send_to_targets = _send_to_targets(events.Rule.send_to_targets)
    iam.Role.create_from_cloudformation_json = _role_create(iam.Role.create_from_cloudformation_json)
    sfn.StateMachine.create_from_cloudformation_json = _state_machine_create(
        sfn.StateMachine.create_from_cloudformation_json)
    # moto builds its type map once from CloudFormationModel's subclasses: the ones above join it
    for cached in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cached.cache_clear()
    missing = [m.TYPE for m in ADDED if parsing.get_model_map().get(m.TYPE) is not m]
    assert not missing, f"not in moto's CloudFormation type map: {missing}"
