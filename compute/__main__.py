"""`python -m compute`: the EditScope command line (compute/cli.py), with the process's signal handlers.

Ctrl-C and SIGTERM both stop a run as 'interrupted' (resumable): both raise KeyboardInterrupt, which the
runners record. They are installed here, for this process only: a shell starts background jobs with SIGINT
ignored (and Python keeps an ignored SIGINT ignored), and the dashboard stops its jobs with SIGINT or SIGTERM.
Nothing else installs them, so importing compute.cli or calling its `main` in a test changes no handler.
"""

import signal
import sys


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def run() -> int:
    """The command line with the handlers installed while it runs. Once it has returned (an interrupted run has
    recorded what it stored), further SIGINT/SIGTERM are ignored: a unit of a plan can get several (the driver's,
    its parent-death signal, a closing session's), and one arriving while the interpreter shut down raised a
    KeyboardInterrupt that printed a traceback into the unit's log."""
    from compute.cli import main

    interrupt_on_signals()
    try:
        return main()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(run())
