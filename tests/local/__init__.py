"""The local AWS stack as a package that the tests and the benchmark import (`import local`): `stack` (moto with
tests/stack/moto_ext, the handlers under `cargo lambda watch`, the Step Functions runner), `cfn` (the template
loader), `notifications`, `ec2query` (EC2 query parameters, the request audit's evaluator) and `demo`. Its parent,
tests/, is on the path through tests/pytest.ini for pytest, and bench/bench.py for the benchmark."""

from .stack import (ACCOUNT, BUILDER_ROLE, FUNCTIONS, MUTATING_PREFIXES, REGION, ROOT, RUN_COMMAND_LOG_GROUP,
                    STATE_MACHINE_ARN, TEST_REGIONS, Stack, StackError, http, release_event, stop_process)

__all__ = ["ACCOUNT", "BUILDER_ROLE", "FUNCTIONS", "MUTATING_PREFIXES", "REGION", "ROOT", "RUN_COMMAND_LOG_GROUP",
           "STATE_MACHINE_ARN", "TEST_REGIONS", "Stack", "StackError", "http", "release_event",
           "stop_process"]
