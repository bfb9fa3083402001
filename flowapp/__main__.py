"""`python -m flowapp`: the same as the `flowapp` command."""

import sys

from flowapp.cli import main

sys.exit(main())
