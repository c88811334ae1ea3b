import sys

from dsrecon.cli import main

sys.exit(main())
