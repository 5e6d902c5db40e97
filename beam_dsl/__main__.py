"""``python -m beam_dsl``: the command line, and a quick exit once it is done.

When the command has returned, its files are closed and its run finished; the
interpreter's own teardown (freeing every module and object of Beam, pandas
and scikit-learn: 0.3 s after importing Beam alone, 0.5-0.7 s after a
``run``) does nothing more for the user. So the exit handlers run (logging's
flush, multiprocessing's children), the output is flushed and the process
ends with ``os._exit``.
"""

import atexit
import os
import sys

from beam_dsl.cli import main

code = main()
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
