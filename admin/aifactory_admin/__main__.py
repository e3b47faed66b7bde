import sys

from aifactory_admin.cli import main

sys.exit(main())
