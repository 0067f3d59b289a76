"""`python -m harness.report`, the same as `python -m harness report`."""
import sys

from harness.cli import main

sys.argv.insert(1, "report")
main()
