"""`cd tests && ../.tools/venv/bin/python -m local`: starts the local stack (deployed and seeded), prints the endpoints
and keeps it up until Ctrl-C (stack.py main)."""

import sys

from .stack import main

sys.exit(main())
