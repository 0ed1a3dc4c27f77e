"""`python -m tensorsmith`: the same as the `tensorsmith` command."""
import sys

from .cli import main

sys.exit(main())
