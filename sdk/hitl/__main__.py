import sys

from hitl.cli import main

sys.exit(main())
