"""Capacity, limits and eventual consistency: EC2 behaviours moto 5.2.5 lacks, as faults (see ../README.md).

moto always has capacity, never refuses a snapshot for a limit, and shows every new id at once. Here, while a fault
is set (state.add_fault; /_sim/reset clears them all):
- `{"no_capacity": {"instance_type", "subnet_id", "availability_zone"}, "code": ...}` (keys optional, all given
  must match): RunInstances in that subnet / Availability Zone with that type fails with
  InsufficientInstanceCapacity (HTTP 500: a server error code, "Error codes for the Amazon EC2 API") or, with
  `"code": "Unsupported"`, the type is not offered there (HTTP 400), until `{"clear": "no_capacity"}`. The message
  is EC2's wording as reported (aws-parallelcluster-node#673, the EC2 User Guide's "Insufficient instance
  capacity" troubleshooting).
- `{"invisible": "instance" | "snapshot" | "image", "calls": N, "count": M, "skip": S}`: after S, the next M
  resources of that kind created (RunInstances; CreateSnapshots; RegisterImage, CopyImage, CreateImage) are unknown to the describe calls
  of their region for the first N such calls: asked for by id, the call fails with the NotFound code
  (InvalidInstanceID.NotFound, InvalidSnapshot.NotFound, InvalidAMIID.NotFound), and listings leave them out
  ("Eventual consistency in the Amazon EC2 API": "its ID might not have propagated throughout the system, and you
  will get an error responding that the resource does not exist"). DescribeInstanceStatus and GetConsoleOutput by
  id count as describes of an instance.
- `{"snapshot_limit": L, "count": C}`: CreateSnapshots fails with ConcurrentSnapshotLimitExceeded (HTTP 400) while
  the region's pending snapshots plus the new ones would be more than L ("A single gp2, io1, io2, or Magnetic volume
  can have up to five concurrent pending snapshots", AWS re:Post knowledge center, ebs-snapshot-stuck); with C, the
  limit lifts after C refusals (other snapshots completing), else at `{"clear": "snapshot_limit"}`.
The rules read this emulator's state; none copies the pipeline's logic.
"""

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response

from . import patches, state

ORIG: dict = {}
# Ids created while an `invisible` fault was set, and every id seen created (a ClientToken replay answers the
# first reservation again: it is not new). Kept across /_sim/reset like state.RESOURCES: an id in flight stays so.
SEEN: set[str] = set()

NOT_FOUND = {
    "instance": ("InvalidInstanceID.NotFound", "The instance ID '{}' does not exist"),
    "snapshot": ("InvalidSnapshot.NotFound", "The snapshot '{}' does not exist."),
    "image": ("InvalidAMIID.NotFound", "The image id '[{}]' does not exist"),
}


def _err(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)  # serialised by moto as an EC2 XML error, HTTP 400


class ServerError(Exception):
    """An EC2 error answered with HTTP 500 (moto serialises its own errors as 400)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def response(self):
        from .middleware import ec2_error
        status, headers, body = ec2_error(500, self.code, self.message)
        return body.decode(), dict(headers, status=status)


# ---------------------------------------------------------------- capacity

def _placement(self) -> tuple[str, str | None, str]:
    """(instance type, subnet id, Availability Zone) of this RunInstances."""
    backend = self.ec2_backend
    itype = self._get_param("InstanceType") or "m1.small"
    nics = self._get_param("NetworkInterfaces", []) or []
    subnet_id = self._get_param("SubnetId") or next((n.get("SubnetId") for n in nics if n.get("SubnetId")), None)
    az = self._get_param("Placement.AvailabilityZone")
    if subnet_id:
        try:
            az = backend.get_subnet(subnet_id).availability_zone
        except Exception:  # an unknown subnet: moto answers it itself
            pass
    return itype, subnet_id, az or f"{self.region}a"


def _check_capacity(self) -> None:
    itype, subnet_id, az = _placement(self)
    for fault in state.FLAGS.get("no_capacity", []):
        where = fault["where"]
        if fault.get("region") not in (None, self.region):
            continue
        if any(where.get(k) not in (None, v) for k, v in
               (("instance_type", itype), ("subnet_id", subnet_id), ("availability_zone", az))):
            continue
        others = ", ".join(sorted(z.name for z in self.ec2_backend.describe_availability_zones() if z.name != az))
        if fault["code"] == "Unsupported":
            raise _err("Unsupported", f"Your requested instance type ({itype}) is not supported in your requested "
                                      f"Availability Zone ({az}). Please retry your request by not specifying an "
                                      f"Availability Zone or choosing {others}.")
        raise ServerError("InsufficientInstanceCapacity",
                          f"We currently do not have sufficient {itype} capacity in the Availability Zone you requested "
                          f"({az}). Our system will be working on provisioning additional capacity. You can currently "
                          f"get {itype} capacity by not specifying an Availability Zone in your request or choosing "
                          f"{others}.")


# ---------------------------------------------------------------- eventual consistency

def _created(kind: str, ids: list[str]) -> None:
    """Marks new ids invisible while an `invisible` fault of that kind has a count left."""
    fault = state.FLAGS.get("invisible", {}).get(kind)
    for rid in ids:
        if rid in SEEN:
            continue
        SEEN.add(rid)
        if fault and fault["skip"] > 0:
            fault["skip"] -= 1  # let this many creations through first (e.g. the builder before the test instance)
        elif fault and fault["left"] > 0:
            fault["left"] -= 1
            state.FLAGS["hidden"][rid] = {"kind": kind, "calls": fault["calls"]}


def _hidden_in(kind: str, items: dict) -> list[str]:
    return [rid for rid, h in state.FLAGS.get("hidden", {}).items() if h["kind"] == kind and rid in items]


def _observed(rid: str) -> None:
    """One describe call met the id: one call fewer to stay unknown."""
    h = state.FLAGS["hidden"][rid]
    h["calls"] -= 1
    if h["calls"] <= 0:
        del state.FLAGS["hidden"][rid]


def _describe(self, kind: str, action: str, items: dict, ids_param: str, by_id_only: bool = False):
    """Runs `action` with this kind's invisible ids out of `items` (a backend dict) for the call: asked for by id
    they are NotFound, listings leave them out."""
    hidden = _hidden_in(kind, items)
    if not hidden:
        return ORIG[action](self)
    asked = self._get_param(ids_param, []) or []
    if asked:
        met = [rid for rid in hidden if rid in asked]
        for rid in met:
            _observed(rid)
        if met:
            code, message = NOT_FOUND[kind]
            raise _err(code, message.format(met[0]))
        return ORIG[action](self)
    if by_id_only:
        return ORIG[action](self)
    for rid in hidden:
        _observed(rid)
    popped = {rid: items.pop(rid) for rid in hidden}
    try:
        return ORIG[action](self)
    finally:
        items.update(popped)


def _reservations_of_hidden(backend) -> dict:
    """The reservations view of hidden instances: {instance id: reservation}, for hiding them from listings."""
    return {i.id: r for r in backend.reservations.values() for i in r.instances}


def describe_instances(self):
    backend = self.ec2_backend
    hidden = _hidden_in("instance", _reservations_of_hidden(backend))
    if not hidden:
        return ORIG["describe_instances"](self)
    asked = self._get_param("InstanceIds", []) or []
    if asked:
        return _describe(self, "instance", "describe_instances", _reservations_of_hidden(backend), "InstanceIds")
    for rid in hidden:
        _observed(rid)
    popped = {}
    for rid, r in list(backend.reservations.items()):
        if any(i.id in hidden for i in r.instances):
            popped[rid] = backend.reservations.pop(rid)
    try:
        return ORIG["describe_instances"](self)
    finally:
        backend.reservations.update(popped)


def describe_instance_status(self):
    return _describe(self, "instance", "describe_instance_status", _reservations_of_hidden(self.ec2_backend),
                     "InstanceIds", by_id_only=True)


def get_console_output(self):
    iid = self._get_param("InstanceId")
    if iid in _hidden_in("instance", _reservations_of_hidden(self.ec2_backend)):
        _observed(iid)
        code, message = NOT_FOUND["instance"]
        raise _err(code, message.format(iid))
    return ORIG["get_console_output"](self)


def describe_snapshots(self):
    return _describe(self, "snapshot", "describe_snapshots", self.ec2_backend.snapshots, "SnapshotIds")


def describe_images(self):
    return _describe(self, "image", "describe_images", self.ec2_backend.amis, "ImageIds")


# ---------------------------------------------------------------- creates

def run_instances(self):
    try:
        _check_capacity(self)
    except ServerError as e:
        return e.response()
    result = ORIG["run_instances"](self)
    _created("instance", [i.id for i in result.result.instances])
    return result


def _pending_snapshots(backend) -> int:
    return sum(1 for s in backend.snapshots.values() if s.status == "pending")


def create_snapshots(self):
    limit = state.FLAGS.get("snapshot_limit")
    if limit is not None:
        spec = self._get_param("InstanceSpecification", {}) or {}
        inst = self.ec2_backend.get_instance(spec.get("InstanceId"))
        new = len(inst.block_device_mapping)
        if _pending_snapshots(self.ec2_backend) + new > limit["limit"]:
            if limit["left"] is not None:
                limit["left"] -= 1
                if limit["left"] <= 0:
                    state.FLAGS["snapshot_limit"] = None
            raise _err("ConcurrentSnapshotLimitExceeded",
                       "You have reached the limit of concurrent pending snapshots. Wait for pending snapshots to "
                       "complete, then try again.")
    result = ORIG["create_snapshots"](self)
    _created("snapshot", [s.id for s in result.result["Snapshots"]])
    return result


def _image_made(action: str):
    def handler(self):
        result = ORIG[action](self)
        image_id = result.result.get("ImageId") if isinstance(result.result, dict) else None
        if image_id:
            _created("image", [image_id])
        return result
    handler.__name__ = action
    return handler


HANDLERS = {
    "run_instances": run_instances,
    "create_snapshots": create_snapshots,
    "describe_instances": describe_instances,
    "describe_instance_status": describe_instance_status,
    "get_console_output": get_console_output,
    "describe_snapshots": describe_snapshots,
    "describe_images": describe_images,
    "register_image": _image_made("register_image"),
    "copy_image": _image_made("copy_image"),
    "create_image": _image_made("create_image"),
}


def add_fault(spec: dict) -> bool:
    """Parses this module's fault specs into state.FLAGS; False when `spec` is not one of them."""
    flags = state.FLAGS
    if "no_capacity" in spec:
        where = spec["no_capacity"] or {}
        unknown = set(where) - {"instance_type", "subnet_id", "availability_zone"}
        code = spec.get("code", "InsufficientInstanceCapacity")
        if unknown or code not in ("InsufficientInstanceCapacity", "Unsupported"):
            raise ValueError(f"no_capacity: keys instance_type, subnet_id, availability_zone; code "
                             f"InsufficientInstanceCapacity or Unsupported: {spec}")
        flags["no_capacity"].append({"where": where, "code": code, "region": spec.get("region")})
    elif "invisible" in spec:
        kind = spec["invisible"]
        if kind not in NOT_FOUND:
            raise ValueError(f"invisible: one of {sorted(NOT_FOUND)}, not {kind!r}")
        flags["invisible"][kind] = {"calls": int(spec.get("calls", 2)), "left": int(spec.get("count", 1)),
                                    "skip": int(spec.get("skip", 0))}
    elif "snapshot_limit" in spec:
        count = spec.get("count")
        flags["snapshot_limit"] = {"limit": int(spec["snapshot_limit"]),
                                   "left": int(count) if count is not None else None}
    elif "clear" in spec:
        what = spec["clear"]
        if what == "no_capacity":
            flags["no_capacity"] = []
        elif what == "snapshot_limit":
            flags["snapshot_limit"] = None
        elif what == "invisible":
            flags["invisible"], flags["hidden"] = {}, {}
        else:
            raise ValueError(f"clear: no_capacity, snapshot_limit or invisible, not {what!r}")
    else:
        return False
    return True


def reset() -> None:
    state.FLAGS.update(no_capacity=[], invisible={}, hidden={}, snapshot_limit=None)


def install() -> None:
    """After patches.apply() and platform.install(): wraps the handlers they left, once."""
    if ORIG:
        return
    assert patches.ORIG, "patches.apply() must run first"
    for name, fn in HANDLERS.items():
        ORIG[name] = getattr(EC2Response, name)
        setattr(EC2Response, name, fn)
    reset()
