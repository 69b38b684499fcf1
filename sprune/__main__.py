"""`python -m sprune` is the same as the `sprune` command."""
import sys

from sprune.cli import main

sys.exit(main())
