"""`python -m app` is the same as the `rlhf-chat` command."""

import sys

from app.cli import main

if __name__ == "__main__":  # guarded: training child processes re-import the main module
    sys.exit(main())
