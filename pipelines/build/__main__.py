"""`python -m pipelines.build`: the build as a Ray job entry point (same options as `trajforge build`)."""

import sys

from pipelines.build import main

if __name__ == "__main__":
    sys.exit(main())
