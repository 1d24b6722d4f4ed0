"""Instance-store images end to end: the bundle's manifest is an object in the local S3 (as ec2-upload-bundle leaves
it; the emulated builder uploads nothing), register gives RegisterImage `bucket/key` (not the recipe's `s3://`
URL), the test instance runs on a type that can boot an instance-store root (checked with DescribeInstanceTypes
before launching), and the copies are not asked to be encrypted. A manifest that is not there fails register with
EC2's InvalidManifest, and cleanup leaves nothing."""

from __future__ import annotations

import json

import local
from conftest import REGIONS, explain, images_of, launched, leftovers, release, tags, task_calls

BUCKET = "web-store-bundles"
KEY = "web-store/image.manifest.xml"


def put_manifest(stack) -> None:
    s3 = stack.boto3("s3")
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=b'<?xml version="1.0"?><manifest><version>2007-10-10</version>'
                                                  b"</manifest>")


def store_recipe(stack, pipeline: str, key: str = KEY) -> dict:
    """The seeded recipe as an instance-store image, private: it has no snapshot, so no KMS key plays a part."""
    return stack.recipe(pipeline, **{"image.root_device_type": "instance-store",
                                     "image.s3_manifest": f"s3://{BUCKET}/{key}",
                                     # the base's own (uefi-preferred): an instance-store image boots legacy BIOS
                                     "image.boot_mode": None,
                                     "image.kms_key_id": None, "distribution.kms_key_ids": {},
                                     "distribution.accounts": [],
                                     "test.instance_type": "m3.medium"})


def handler_requests(stack, action: str) -> list[dict]:
    logged = [json.loads(line) for line in stack.request_log.read_text().splitlines() if line.strip()]
    return [r for r in logged if r["action"] == action and "aws-sdk-rust" in r.get("agent", "")]


def test_an_instance_store_image_is_registered_from_its_manifest_tested_and_copied(stack):
    put_manifest(stack)
    out, detail = release(stack, "web-store", "1.0.0", store_recipe(stack, "web-store"))
    assert detail["status"] == "SUCCEEDED", explain(detail)
    execution = out["execution_name"]
    images = {i["region"]: i["image_id"] for i in detail["output"]["images"]}
    assert list(images) == REGIONS

    home = stack.boto3("ec2").describe_images(ImageIds=[images[local.REGION]])["Images"][0]
    assert home["RootDeviceType"] == "instance-store", home
    assert home["ImageLocation"] == f"{BUCKET}/{KEY}"
    assert not home.get("BlockDeviceMappings"), home
    registered = [r for r in handler_requests(stack, "RegisterImage") if images[local.REGION] in r["created"]]
    assert registered and registered[0]["params"]["ImageLocation"] == f"{BUCKET}/{KEY}", registered
    # only Xen types boot an instance-store root, and they boot legacy BIOS: not the builder's UEFI boot, variable
    # store or NitroTPM
    params = registered[0]["params"]
    assert params.get("BootMode") == "legacy-bios" and "UefiData" not in params and "TpmSupport" not in params, params
    assert home["BootMode"] == "legacy-bios", home

    # the copies are instance-store images too, and were not asked to be encrypted
    for region in REGIONS[1:]:
        copy = stack.boto3("ec2", region).describe_images(ImageIds=[images[region]])["Images"][0]
        assert copy["RootDeviceType"] == "instance-store", (region, copy)
        assert tags(copy).get("ami-pipeline:state") == "released", (region, copy)
    copies = [r for r in handler_requests(stack, "CopyImage")
              if r["params"].get("SourceImageId") == images[local.REGION]]
    assert len(copies) == len(REGIONS) - 1, copies
    assert all("Encrypted" not in r["params"] and "KmsKeyId" not in r["params"] for r in copies), copies

    # tested on an instance-store capable type; no snapshot was made
    assert launched(stack, execution) == {"builder": 1, "test-instance": 1}
    tester = [i for r in stack.boto3("ec2").describe_instances(Filters=[
        {"Name": "tag:ami-pipeline:execution", "Values": [execution]},
        {"Name": "tag:ami-pipeline:role", "Values": ["test-instance"]}])["Reservations"] for i in r["Instances"]]
    assert [i["InstanceType"] for i in tester] == ["m3.medium"]
    assert not leftovers(stack, execution).get("snapshots")


def test_a_missing_manifest_fails_register_and_leaves_nothing(stack):
    put_manifest(stack)
    recipe = store_recipe(stack, "web-store-missing", key="web-store/not-uploaded.manifest.xml")
    out, detail = release(stack, "web-store-missing", "1.0.0", recipe)
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == "AmiPipeline.AwsError", explain(detail)
    assert "InvalidManifest" in (detail.get("cause") or ""), explain(detail)
    assert task_calls(detail, "Cleanup"), explain(detail)
    assert not leftovers(stack, out["execution_name"]), leftovers(stack, out["execution_name"])
    assert not images_of(stack, "web-store-missing", local.REGION)
