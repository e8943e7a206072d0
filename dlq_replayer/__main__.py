"""`python -m dlq_replayer`."""

import sys

from dlq_replayer.cli import main

sys.exit(main())
