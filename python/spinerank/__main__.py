import sys

from .cli import main

# The guard matters: `spinerank synth` starts worker processes with "spawn",
# which re-imports the main module.
if __name__ == "__main__":
    sys.exit(main())
