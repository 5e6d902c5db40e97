"""Importing this module makes this process end with ``os._exit`` when its interpreter
would exit: without the teardown that frees every module it loaded.

The first module the workers' fork server imports
(:func:`~beam_dsl.transforms.common.workers.start_server`). multiprocessing's
fork server exits when the run's process is gone, through the interpreter's
teardown, which frees every module it preloaded (pandas, scikit-learn,
skops: about 0.3 s); until then it holds the run's stdout and stderr open,
so whoever reads them (a pipe, ``subprocess.run``, CI) waits for it after
the run has ended. The server has nothing to flush or clean up; the workers
it forks end with ``os._exit`` themselves.
"""

import atexit
import os

atexit.register(os._exit, 0)
