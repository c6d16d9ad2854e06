import sys

from groupdetr.cli import main

sys.exit(main())
