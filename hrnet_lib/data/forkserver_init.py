"""Run once, as multiprocessing's fork server starts for `loader.start_forkserver`: its process group.

The server moves into a process group of its own, so the SIGTERM or SIGINT that a scheduler or Ctrl-C
sends to the training's group reaches neither it nor the data workers it forks, and it keeps ignoring
SIGTERM, which it was started with, for a signal sent to every process of a job. The processes it forks
start with Python's usual SIGINT and SIGTERM (`Process.terminate` works on them). The module does this only
in the server that `start_forkserver` launched (it names its parent in an environment variable); imported
anywhere else it does nothing.
"""

from __future__ import annotations

import os
import signal

SERVER_ENV = "HRNET_LIB_FORKSERVER_OF"

if os.environ.pop(SERVER_ENV, None) == str(os.getppid()):
    os.setpgid(0, 0)
    # What the server hands back to each child (the server itself ignores SIGINT while it serves).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Each child is forked with SIGTERM at its default, so none is ever deaf to Process.terminate.
    os.register_at_fork(
        before=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL),
        after_in_parent=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
