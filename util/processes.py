"""Child processes that never outlive their parent: the inference workers and the training ranks that
`torchrun` starts die when the process that started them dies, even by SIGKILL."""
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Optional

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: Optional[int] = None, poll_seconds: float = 1.0) -> None:
    """Make this process die with its parent (pid `parent` when the caller knows it, else the current one): on
    Linux the kernel sends it SIGKILL when the parent dies (`prctl(PR_SET_PDEATHSIG)`); everywhere, a daemon
    thread also watches the parent's pid and exits this process when it changes (the parent died and the
    process was re-parented, possibly before the prctl)."""
    parent = os.getppid() if parent is None else parent
    if sys.platform.startswith('linux'):
        libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), 'prctl(PR_SET_PDEATHSIG) failed')
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name='parent-watchdog', daemon=True).start()
