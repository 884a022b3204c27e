"""``python -m lightfer`` is the ``lightfer`` command."""
import sys

from lightfer.cli import main

sys.exit(main())
