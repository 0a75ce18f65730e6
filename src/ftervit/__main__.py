"""``python -m ftervit``: the same as the ``ftervit`` command."""
import sys

from ftervit.cli import main

sys.exit(main())
