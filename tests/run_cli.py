"""``ftervit`` with the test models registered: ``python tests/run_cli.py teacher ...`` (or under torchrun)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models  # noqa: E402,F401  (registers ftervit_test_tiny)
from ftervit.cli import main  # noqa: E402

sys.exit(main())
