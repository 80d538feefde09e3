import sys

from trajforge.cli.main import main

sys.exit(main())
