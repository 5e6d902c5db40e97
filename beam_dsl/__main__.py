import sys

from beam_dsl.cli import main

sys.exit(main())
