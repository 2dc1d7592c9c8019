import sys

from tastypy.cli import main

sys.exit(main())
