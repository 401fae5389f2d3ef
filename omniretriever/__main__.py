"""`python -m omniretriever ...` runs the console script."""

from omniretriever.cli import main

main()
