"""``python -m ftervit`` (and ``torchrun -m ftervit``): the ftervit command line."""
import sys

from ftervit.cli import main

sys.exit(main())
