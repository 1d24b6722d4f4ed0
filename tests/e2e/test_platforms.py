"""Licensed platforms and boot modes on the local stack: the Windows example (a `TPM-Windows_Server-2022-*` base)
is imaged with CreateImage, keeping its billing, UEFI boot and NitroTPM; an image that loses its billing fails
with `AmiPipeline.PlatformMismatch` and leaves nothing behind; a boot mode the base cannot boot is refused before
anything is launched; a Linux image carries its builder's UEFI variable store."""

from __future__ import annotations

import local
from conftest import REGIONS, explain, leftovers, release, task_calls


def windows_recipe(stack, name: str) -> dict:
    """The shipped Windows example as a user fills it in (local.example_recipe), under its own pipeline name and
    parameter."""
    recipe = local.example_recipe(stack, local.WINDOWS_RECIPE)
    recipe["name"] = name
    recipe["publish"]["ssm_parameters"] = [f"/images/{name}/latest"]
    return recipe


def calls(stack, action: str) -> int:
    return sum(1 for c in stack.sim("GET", "calls")["calls"] if c["action"] == action)


def test_windows_example_is_imaged_with_create_image_and_keeps_its_licence(stack):
    stack.sim("POST", "reset")
    out, detail = release(stack, "win-example", "2026.11.0", windows_recipe(stack, "win-example"))
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert calls(stack, "CreateImage") == 1 and calls(stack, "RegisterImage") == 0
    assert calls(stack, "CreateSnapshots") == 0
    images = detail["output"]["images"]
    assert [i["region"] for i in images] == REGIONS
    for image in images:
        img = stack.boto3("ec2", image["region"]).describe_images(ImageIds=[image["image_id"]])["Images"][0]
        got = (img["PlatformDetails"], img["UsageOperation"], img.get("BootMode"), img.get("TpmSupport"))
        assert got == ("Windows", "RunInstances:0002", "uefi", "v2.0"), (image["region"], got)
    home = stack.boto3("ec2").describe_images(ImageIds=[images[0]["image_id"]])["Images"][0]
    assert home.get("ImdsSupport") == "v2.0", "CreateImage takes none: register sets it"
    assert not leftovers(stack, out["execution_name"]).get("instances")


def test_an_image_that_lost_its_billing_fails_and_leaves_nothing(stack):
    stack.sim("POST", "reset")
    stack.sim("POST", "faults", {"billing_lost": True})
    out, detail = release(stack, "win-billing", "2026.11.0", windows_recipe(stack, "win-billing"))
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == "AmiPipeline.PlatformMismatch", explain(detail)
    assert not task_calls(detail, "Test Start"), "never tested, copied or shared"
    assert leftovers(stack, out["execution_name"]) == {}


def test_a_boot_mode_the_base_cannot_boot_is_refused_before_any_launch(stack):
    recipe = windows_recipe(stack, "win-legacy")
    # The Windows example as it shipped: a legacy-BIOS base registered as uefi with NitroTPM.
    recipe["source"]["image"]["name_filter"] = "Windows_Server-2022-English-Full-Base-*"
    stack.sim("POST", "reset")
    out, detail = release(stack, "win-legacy", "2026.11.0", recipe)
    assert detail["status"] == "FAILED", explain(detail)
    assert detail["error"] == "AmiPipeline.InvalidInput", explain(detail)
    assert "recipe.image.boot_mode" in detail["cause"], detail["cause"]
    assert calls(stack, "RunInstances") == 0
    assert leftovers(stack, out["execution_name"]) == {}


def test_a_linux_image_carries_its_builders_uefi_variable_store(stack):
    stack.sim("POST", "reset")
    out, detail = release(stack, "web-uefi", "1.0.0", stack.recipe("web-uefi"))
    assert detail["status"] == "SUCCEEDED", explain(detail)
    assert calls(stack, "GetInstanceUefiData") == 1
    # The builder is terminated only after register read it.
    order = [t["state"] for t in detail["tasks"]]
    assert order.index("Build Finish") > max(i for i, s in enumerate(order) if s.startswith("Register"))
