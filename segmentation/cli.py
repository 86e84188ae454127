"""What every command-line script shares: logging setup and the handling of user errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from segmentation.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def setup_logging() -> None:
    """INFO lines on stderr from the main process; other DDP ranks only warn."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def user_message(error: BaseException) -> str:
    """The one-line message of a UserError, also when a DataLoader worker re-raised it
    wrapped in its own traceback text."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    last = lines[-1]
    for prefix in ("segmentation.errors.UserError: ", "UserError: "):
        if last.startswith(prefix):
            return last[len(prefix) :]
    if len(lines) > 1 and "Traceback" in str(error):
        return last.split(": ", 1)[-1]
    return " ".join(lines)


def run_guarded(function: Callable[[], object], *, debug: bool = False) -> int:
    """Call `function`; a UserError prints `error: <message>` on one line and returns exit
    code 2 (with --debug it propagates with its traceback). Ctrl-C returns 130."""
    try:
        function()
    except UserError as error:
        if debug:
            raise
        if not getattr(error, "silent", False):
            print(f"error: {user_message(error)}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output left (`| head`, `less` quit): nothing more to say to it.
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
