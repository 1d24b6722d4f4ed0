"""infra/DEPLOY.md, run: its `sh` blocks in order (tests/local/guide.py) on a local stack that starts empty, so the
deployment is the one the guide makes: the image keys its commands create, `sam deploy` with its parameters and
nothing else (the template's defaults), the example recipes with only the subnet and security group filled in,
preflight through the Makefile, a release event through the deployed rule's pattern. Then the release is followed
to publish, and the schedules (the stack's and the guide's own) fired as EventBridge Scheduler would. A block edited to something wrong fails
(test_a_wrong_block_fails)."""

from __future__ import annotations

import json
import re

import pytest

import local
from conftest import explain
from local.guide import DEPLOY_MD, Guide, blocks
from local.stack import default_network

KEY_REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "us-west-2"]


def guide_on_new_stack(tmp_path, text: str | None = None):
    """(stack, guide, bash result) of the guide run on a stack with nothing deployed; the caller stops the stack."""
    stack = local.Stack(deployed=False, quiet=False)
    stack.start()
    try:
        _, subnet, sg = default_network(stack)
        guide = Guide(stack, tmp_path, {"SUBNET": subnet, "SECURITY_GROUP": sg})
        return stack, guide, guide.run(text)
    except BaseException:
        stack.stop()
        raise


def last_block(stderr: str) -> str:
    found = re.findall(r"::block (DEPLOY\.md:\d+)", stderr)
    return found[-1] if found else "(none)"


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    stack, guide, result = guide_on_new_stack(tmp_path_factory.mktemp("guide"))
    try:
        yield stack, guide, result
    finally:
        guide.close()
        stack.stop()


def test_every_block_runs(guided):
    _, guide, result = guided
    assert result.returncode == 0, (f"failed in {last_block(result.stderr)}:\n{result.stdout[-3000:]}\n"
                                    f"{result.stderr[-3000:]}")
    runnable = [b for b in blocks(DEPLOY_MD.read_text()) if not b.skip]
    assert re.findall(r"::block (DEPLOY\.md:\d+)", result.stderr) == [f"DEPLOY.md:{b.line}" for b in runnable]
    assert all("delete" in line for line in guide.log), guide.log  # only the tear-down is not run


def test_the_stack_has_only_what_the_guide_sets(guided):
    stack, guide, _ = guided
    assert [d["stack"] for d in guide.deployments] == ["ami-pipeline"]
    params = guide.deployments[0]["params"]
    assert set(params) == {"KmsKeyArns"}, "the defaults deploy; the example recipes need only the image keys"
    arns = params["KmsKeyArns"].split(",")
    assert [a.split(":")[3] for a in arns] == KEY_REGIONS
    for region, arn in zip(KEY_REGIONS, arns):
        aliases = stack.boto3("kms", region).list_aliases(KeyId=arn.rsplit("/", 1)[1])["Aliases"]
        assert [a["AliasName"] for a in aliases] == ["alias/ami-pipeline-images"], region
    # the stack's own key has its own alias, which no recipe names
    home = stack.boto3("kms").list_aliases()["Aliases"]
    assert {"alias/ami-pipeline-stack", "alias/ami-pipeline-images"} <= {a["AliasName"] for a in home}


def test_preflight_passes_for_both_example_recipes(guided):
    _, _, result = guided
    # `make preflight` prints the trigger's answer: its report, or the error listing every problem
    outputs = [json.loads(line) for line in result.stdout.splitlines()
               if line.startswith("{") and ("preflight-passed" in line or "errorType" in line)]
    assert [(o.get("status"), o.get("pipeline")) for o in outputs] == [
        ("preflight-passed", "web"), ("preflight-passed", "windows-2022-base")], outputs


def test_the_release_event_is_built_and_published(guided):
    stack, guide, _ = guided
    assert [d["status"] for d in guide.delivered] == ["started"], guide.delivered
    detail = stack.wait_for(guide.delivered[0]["execution_name"], timeout=300)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    image = stack.boto3("ssm").get_parameter(Name="/images/web/latest")["Parameter"]
    assert image["DataType"] == "aws:ec2:image" and image["Value"].startswith("ami-")
    regions = [i["region"] for i in detail["output"]["images"]]
    assert regions == ["us-east-1", "eu-west-1", "ap-southeast-2"]


def test_the_schedules_refresh_every_pipeline_and_the_day_runs_once(guided):
    """The stack's nightly schedule refreshes every stored recipe: web was just built from the current base
    (unchanged), windows-2022-base never was (`refresh: always`: built from its default version). The schedule of the
    guide's step 6 fires the same day (moto lists schedules in no set order): whichever comes first starts that
    day's windows run, the other finds it."""
    stack, guide, _ = guided
    fired = guide.fire_schedules("2026-12-09T03:00:00Z")
    nightly = next(a for a in fired.values() if "day" in a)
    assert [o["pipeline"] for o in nightly["unchanged"]] == ["web"], nightly
    assert nightly["refused"] == [] and nightly["opted_out"] == [], nightly
    windows = nightly["started"] + nightly["duplicate"]
    assert [o["pipeline"] for o in windows] == ["windows-2022-base"], nightly
    own = fired["ami-pipeline-windows-2022-base"]
    assert sorted([windows[0]["status"], own["status"]]) == ["duplicate", "started"], (nightly, own)
    assert own["execution_name"] == windows[0]["execution_name"]
    detail = stack.wait_for(own["execution_name"], timeout=300)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    image = stack.boto3("ssm").get_parameter(Name="/images/windows/2022/base")["Parameter"]
    assert image["Value"].startswith("ami-")


def test_a_wrong_block_fails(tmp_path):
    """The image keys' alias mistyped in step 2: the recipes name a key that does not exist, and the guide stops at
    the preflight of step 4, the way a user would be stopped."""
    text = DEPLOY_MD.read_text()
    wrong = text.replace("--alias-name alias/ami-pipeline-images", "--alias-name alias/ami-pipeline-image", 1)
    assert wrong != text
    stack, guide, result = guide_on_new_stack(tmp_path, wrong)
    try:
        assert result.returncode != 0
        preflight = next(b for b in blocks(text) if "make preflight" in b.text)
        assert last_block(result.stderr) == f"DEPLOY.md:{preflight.line}", result.stderr[-2000:]
        assert "kms_key_id" in result.stdout, result.stdout[-2000:]
    finally:
        guide.close()
        stack.stop()
