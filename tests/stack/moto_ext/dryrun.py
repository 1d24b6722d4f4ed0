"""DryRun RunInstances answered the way EC2 answers it (moto 5.2.5 answers every DryRun with DryRunOperation).

EC2: "Checks whether you have the required permissions for the action, without actually making the request ...
If you have the required permissions, the error response is DryRunOperation. Otherwise, it is
UnauthorizedOperation" (RunInstances API reference, DryRun). Here a DryRun RunInstances is refused:
- with UnauthorizedOperation (HTTP 403) while a permission fault is injected (POST /_sim/faults
  {"dry_run_denied": "RunInstances", "count": N, "region": optional}: the caller's role lacks the permission);
- with the error the real launch would get for what does not exist: InvalidAMIID.NotFound (image),
  InvalidSubnetID.NotFound (subnet), InvalidGroup.NotFound (security group), InvalidParameterValue (instance type or
  instance profile) (EC2 API reference, "Error codes for the Amazon EC2 API");
- otherwise DryRunOperation, and nothing is launched.
Authorization is answered first: an injected fault hides the other problems, as a role without the permission
learns nothing about the resources. Used by the trigger's preflight (functions/trigger/src/preflight.rs)."""

from __future__ import annotations

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response

from . import state

ORIG: dict = {}


def _error(code: str, message: str) -> EC2ClientError:
    # Serialised by moto as an EC2 XML error with HTTP 400 (EC2 sends 412 for DryRunOperation and 403 for
    # UnauthorizedOperation; the SDKs act on the code, and neither status is retried).
    return EC2ClientError(code, message)


def _values(params: dict, *prefixes: str) -> list[str]:
    return [v for k, v in sorted(params.items()) if any(k.startswith(p) for p in prefixes) and isinstance(v, str)]


def take_denial(region: str, action: str) -> bool:
    """Consume one injected dry-run permission fault for this call, if any."""
    for fault in state.FLAGS.setdefault("dry_run_denied", []):
        if fault["action"] == action and fault["region"] in (None, region) and fault["left"] > 0:
            fault["left"] -= 1
            return True
    return False


def refuse(backend, region: str, params: dict) -> EC2ClientError:
    """The answer to a DryRun RunInstances with these (flattened query) parameters."""
    if take_denial(region, "RunInstances"):
        return _error("UnauthorizedOperation", "You are not authorized to perform this operation. (simulated: the "
                      "caller's role lacks ec2:RunInstances on one of the request's resources)")
    image = params.get("ImageId", "")
    if not image.startswith("ami-"):
        return _error("InvalidAMIID.Malformed", f'Invalid id: "{image}" (expecting "ami-...")')
    if image not in backend.amis:
        return _error("InvalidAMIID.NotFound", f"The image id '[{image}]' does not exist")
    for subnet in _values(params, "SubnetId", "NetworkInterface.1.SubnetId"):
        if not _subnet_exists(backend, subnet):
            return _error("InvalidSubnetID.NotFound", f"The subnet ID '{subnet}' does not exist")
    known_groups = {g.id for g in backend.describe_security_groups()}
    for group in _values(params, "SecurityGroupId.", "NetworkInterface.1.SecurityGroupId."):
        if group not in known_groups:
            return _error("InvalidGroup.NotFound", f"The security group '{group}' does not exist")
    itype = params.get("InstanceType")
    if itype and not _known_type(itype):
        return _error("InvalidParameterValue", f"Invalid value '{itype}' for InstanceType.")
    profile = params.get("IamInstanceProfile.Name") or params.get("IamInstanceProfile.Arn")
    if profile and not _profile_exists(backend.account_id, profile.rsplit("/", 1)[-1]):
        return _error("InvalidParameterValue", f"Value ({profile}) for parameter iamInstanceProfile.name is "
                      "invalid. Invalid IAM Instance Profile name")
    return _error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")


def _subnet_exists(backend, subnet_id: str) -> bool:
    try:
        backend.get_subnet(subnet_id)
        return True
    except Exception:  # noqa: BLE001 (moto raises InvalidSubnetIdError)
        return False


def _known_type(itype: str) -> bool:
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    return itype in INSTANCE_TYPES


def _profile_exists(account: str, name: str) -> bool:
    from moto.iam.models import iam_backends

    return any(p.name == name for p in iam_backends[account]["global"].instance_profiles.values())


def run_instances(self):
    if str(self._get_param("DryRun", "false")).lower() != "true":
        return ORIG["run_instances"](self)
    params = {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in self.querystring.items()}
    raise refuse(self.ec2_backend, self.region, params)


def install() -> None:
    """After patches.apply() and platform.install(): wraps whatever RunInstances handler is in place, once."""
    if ORIG:
        return
    ORIG["run_instances"] = EC2Response.run_instances
    EC2Response.run_instances = run_instances
    state.FLAGS.setdefault("dry_run_denied", [])
