"""`python -m harness.zoo`, the same as `python -m harness zoo`."""
import sys

from harness.cli import main

sys.argv.insert(1, "zoo")
main()
