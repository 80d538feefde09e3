"""`python -m pipelines.datasets`: the datasets job as a Ray job entry point (same options as `trajforge datasets`)."""

import sys

from pipelines.datasets.cli import main

if __name__ == "__main__":
    sys.exit(main())
