"""`python -m harness.watch`, the same as `python -m harness watch`."""
import sys

from harness.cli import main

if __name__ == "__main__":
    sys.argv.insert(1, "watch")
    main()
