"""The two deployments a user makes, each running both shipped example recipes through publish, then every request
of those runs simulated against the stack's deployed roles (iam_model): none denied.

(a) The template's defaults plus only what infra/DEPLOY.md says a user must set (KmsKeyArns, since both examples
    share their images): a Stack of its own, started here beside the session's, on its own moto, stopped after.
    With these defaults the trigger's preflight (iam:PassRole of the stack's builder role in its RunInstances
    DryRun) and the build's launch are authorized by the same PassBuilderRolePolicy.
(b) Everything set (tests/local/stack.py everything_set): the session's stack. The Windows example names the
    user's own builder profile there (BuilderInstanceProfileRoleArn), as DEPLOY.md tells a user with one to do.

Each example runs under its shipped name (`web`, `windows-2022-base`); on (b), `web` is released at a version below
test_release.py's, so whichever runs first, this one's execution succeeds through publish (publish never goes
backwards: an older release is handed over and its parameter left to the newer one)."""

from __future__ import annotations

import pytest

import iam_model as m
import local
from conftest import REGIONS, explain, needs_every_function, release, tags, task_calls


@pytest.fixture(scope="module")
def defaults_stack(stack):
    """Deployment (a), logged beside the session's stack."""
    log_dir = stack.log_dir.with_name(stack.log_dir.name + "-defaults")
    with local.Stack(quiet=False, concurrency=2, log_dir=log_dir) as s:
        needs_every_function(s)
        yield s


def examples(s: local.Stack, own_profile: str | None = None) -> list[dict]:
    """Both shipped examples as DEPLOY.md has a user fill them in; the Windows one with `own_profile`, if given."""
    web = local.example_recipe(s, local.RECIPE)
    windows = local.example_recipe(s, local.WINDOWS_RECIPE)
    if own_profile:
        windows["build"]["instance_profile"] = own_profile
    return [web, windows]


def run_through_publish(s: local.Stack, recipes: list[dict], version: str) -> None:
    for recipe in recipes:
        out, detail = release(s, recipe["name"], version, recipe)
        assert detail["status"] == "SUCCEEDED", explain(detail)
        assert [t for t in task_calls(detail, "Publish") if not t["error"]], explain(detail)
        images = detail["output"]["images"]
        assert [i["region"] for i in images] == REGIONS, images
        for image in images:
            found = s.boto3("ec2", image["region"]).describe_images(ImageIds=[image["image_id"]])["Images"][0]
            assert tags(found)["ami-pipeline:state"] == "released", (recipe["name"], image)


def simulated(s: local.Stack, start: int = 0) -> list[dict]:
    """Every request of the stack's action log from line `start` against its deployed role (iam_model.evaluate)."""
    lines, _ = m.handler_requests(s.action_log, start)
    assert lines, "no handler request logged"
    return m.evaluate(lines, m.role_policies(s.deployment), local.ACCOUNT)


def passing_the_builder_role(results: list[dict]) -> set[str]:
    """The functions whose requests passed the builder profile's role (iam:PassRole, simulated)."""
    return {r["binary"] for r in results for c in r["cases"] if c["action"] == "iam:PassRole"}


def test_the_defaults_deployment_runs_both_examples_through_publish_and_iam_allows_every_request(defaults_stack):
    s = defaults_stack
    assert s.deployment.parameters.keys() == {"KmsKeyArns"}, s.deployment.parameters
    profile = s.deployment.outputs["BuilderInstanceProfileName"]
    assert [r["build"]["instance_profile"] for r in examples(s)] == [profile, profile], "the examples name it"
    run_through_publish(s, examples(s), "1.0.0")
    results = simulated(s)
    bad = m.denials(results)
    assert not bad, "\n".join(bad[:40])
    # the preflight's DryRun and the build's launch both passed the stack's builder role, and were allowed
    assert {"ami-trigger", "ami-build"} <= passing_the_builder_role(results)


def test_the_everything_set_deployment_runs_both_examples_through_publish_and_iam_allows_every_request(stack):
    start = len(stack.action_log.read_text().splitlines())
    recipes = examples(stack, own_profile=local.OWN_BUILDER)
    run_through_publish(stack, recipes, "0.1.0")
    results = simulated(stack, start)
    bad = m.denials(results)
    assert not bad, "\n".join(bad[:40])
    assert {"ami-trigger", "ami-build", "ami-test-launch"} <= passing_the_builder_role(results)
