"""The local AWS stack as a package that the tests and the benchmark import (`import local`): `stack` (moto with
tests/stack/moto_ext, infra/template.yaml deployed into it by `deploy`, the handlers under `cargo lambda watch`, the
Step Functions runner), `cfn` (the template loader), `notifications`, `ec2query` (EC2 query parameters, the request
audit's evaluator) and `demo`. Its parent, tests/, is on the path through tests/pytest.ini for pytest, and
bench/bench.py for the benchmark."""

from .deploy import Deployment, deploy
from .stack import (ACCOUNT, FUNCTIONS, IMAGE_KEY_ALIAS, MUTATING_PREFIXES, OWN_BUILDER, RECIPE, REGION, ROOT,
                    STACK_NAME, TEST_REGIONS, WINDOWS_RECIPE, Stack, StackError, everything_set, example_recipe, http,
                    release_event, stop_process)

__all__ = ["ACCOUNT", "FUNCTIONS", "IMAGE_KEY_ALIAS", "MUTATING_PREFIXES", "OWN_BUILDER", "RECIPE", "REGION", "ROOT",
           "STACK_NAME", "TEST_REGIONS", "WINDOWS_RECIPE", "Deployment", "Stack", "StackError", "deploy",
           "everything_set", "example_recipe", "http", "release_event", "stop_process"]
