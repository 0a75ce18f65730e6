import sys
from pathlib import Path

# reference.py (the independent NumPy implementation) is imported by name from the tests.
sys.path.insert(0, str(Path(__file__).parent))
