"""`python -m pipelines.synth_records`: the same verbs as `trajforge synth-records`."""

import sys

from pipelines.synth_records.cli import main

if __name__ == "__main__":
    sys.exit(main())
