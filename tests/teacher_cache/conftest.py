"""The cache tests reuse the method tests' tiny student and fake batch (tests/methods/method_fixtures.py)."""
import sys
from pathlib import Path

METHODS_TESTS = str(Path(__file__).resolve().parents[1] / "methods")
if METHODS_TESTS not in sys.path:
    sys.path.append(METHODS_TESTS)
