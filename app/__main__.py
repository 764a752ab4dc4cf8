"""`python -m app` is the same as the `rlhf-chat` command."""

import sys

from app.cli import main

sys.exit(main())
