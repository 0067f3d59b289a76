"""`python -m harness.bench`, the same as `python -m harness bench`."""
import sys

from harness.cli import main

sys.argv.insert(1, "bench")
main()
