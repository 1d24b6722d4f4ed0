"""Step Functions refuses a state input or output over 256 KiB with `States.DataLimitExceeded`, which no Catch (not
even States.ALL) can catch, so Cleanup would not run. A recipe sharing with 450 accounts in 10 regions (every grant
of every snapshot recorded in the state once made that about 300 KB) runs to the end; the local runner enforces
the quota as AWS does (tests/local/runner.mjs). The bound for any recipe validation accepts is computed in
functions/core/src/definition/payload.rs."""

from __future__ import annotations

import local
from conftest import explain, release

COPY_REGIONS = ["eu-west-1", "ap-southeast-2", "eu-central-1", "us-west-2", "ap-northeast-1", "ca-central-1",
                "sa-east-1", "eu-north-1", "ap-south-1"]
ACCOUNTS = [str(100_000_000_000 + i) for i in range(450)]


def test_a_release_shared_with_450_accounts_in_10_regions_fits_the_state(stack):
    pipeline = "web-wide"
    recipe = stack.recipe(pipeline)
    alias = recipe["image"]["kms_key_id"]
    # a customer-managed key in every copy region, behind the recipe's alias (the seed makes those of its regions)
    for region in COPY_REGIONS:
        kms = stack.boto3("kms", region)
        if not any(a["AliasName"] == alias for a in kms.list_aliases()["Aliases"]):
            kms.create_alias(AliasName=alias, TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    recipe["distribution"].update(regions=COPY_REGIONS, accounts=ACCOUNTS,
                                  kms_key_ids={r: alias for r in COPY_REGIONS})
    out, detail = release(stack, pipeline, "1.0.0", recipe, timeout=300)
    assert detail["status"] == "SUCCEEDED", explain(detail)
    images = {i["region"]: i["image_id"] for i in detail["output"]["images"]}
    assert list(images) == [local.REGION, *COPY_REGIONS]
    for region in (local.REGION, COPY_REGIONS[-1]):
        granted = stack.boto3("ec2", region).describe_image_attribute(ImageId=images[region],
                                                                      Attribute="launchPermission")
        assert len(granted["LaunchPermissions"]) == len(ACCOUNTS), region
