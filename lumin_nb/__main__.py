"""`python -m lumin_nb` runs the `lumin` command."""

import sys

from lumin_nb.cli import main

sys.exit(main())
