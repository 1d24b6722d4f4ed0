"""moto 5.2.5 plus the EC2 behaviours the AMI pipeline relies on (see ../README.md)."""

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from . import cfn, dryrun, ec2_faults, patches, platform, runcommand, state
from .middleware import SimMiddleware

__all__ = ["make_app", "state"]


def make_app():
    """The moto server WSGI app with the EC2 and CloudFormation patches applied and /_sim in front."""
    patches.apply()
    platform.install()
    ec2_faults.install()  # before dryrun: a DryRun is answered before capacity is looked at
    runcommand.install()
    dryrun.install()
    cfn.install()
    return SimMiddleware(DomainDispatcherApplication(create_backend_app))
