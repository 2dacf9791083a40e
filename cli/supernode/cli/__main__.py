import sys

from supernode.cli.main import main

sys.exit(main())
