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


if __name__ == "__main__":
    from compute.cli import main

    interrupt_on_signals()
    sys.exit(main())
