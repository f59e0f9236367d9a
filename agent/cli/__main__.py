"""`python -m edgebench.agent.cli`: the same as the `edgebench` command."""

import sys

from edgebench.agent.cli.main import main

sys.exit(main())
