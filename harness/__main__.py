"""`python -m harness [<command>] [overrides...]`: see harness.cli."""
from harness.cli import main

main()
