"""Step Functions refuses a state input or output over 256 KiB with `States.DataLimitExceeded`, which no Catch (not
even States.ALL) can catch, so Cleanup would not run. A recipe sharing with 450 accounts in 10 regions (every grant
of every snapshot recorded in the state once made that about 300 KB) runs to the end; the local runner enforces
the quota as AWS does (tests/local/runner.mjs). The bound for any recipe validation accepts is computed in
functions/core/src/definition/payload.rs."""

from __future__ import annotations

import local
from conftest import KEY_ONLY_REGIONS, explain, release

# the session stack's image keys (its KmsKeyArns, conftest.KEY_ONLY_REGIONS) are made in every one of them
COPY_REGIONS = [*local.TEST_REGIONS, *KEY_ONLY_REGIONS]
ACCOUNTS = [str(100_000_000_000 + i) for i in range(450)]


def test_a_release_shared_with_450_accounts_in_10_regions_fits_the_state(stack):
    pipeline = "web-wide"
    recipe = stack.recipe(pipeline)
    alias = recipe["image"]["kms_key_id"]
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
