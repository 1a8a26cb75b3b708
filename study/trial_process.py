"""Run a trial in a child process, so that its memory goes back to the system.

TensorFlow keeps memory for the graphs that `tf.function` traced in a process,
and `keras.backend.clear_session()` does not return it: a search that runs all
trials in one process grows by hundreds of MiB per trial with a ResNet50
(`benchmarks/memory.py`). A fresh process per trial ends with the trial, so
the search's own process stays flat.

The child is started with the `spawn` method (a forked TensorFlow is unsafe),
imports the study anew, receives the pickled call, and sends back its result
or its exception. It ignores Ctrl-C, which the terminal sends to both
processes: the search's process decides and stops the child. It dies with the
search's process, also when that one is killed with SIGKILL.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable

logger = logging.getLogger("study.trial_process")

# Seconds the child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1


class TrialProcessError(Exception):
    """The trial's process ended without a result, or its exception could not be passed back.

    Attributes:
        reason: the failure as the trial record states it.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def run_in_child(function: Callable, *args):
    """Call `function(*args)` in a new process and return its result.

    `function` and `args` must be picklable; a bound method of a module-level
    class is. An exception raised by the call is raised here again, with the
    child's traceback attached as a note. A child that dies without a result
    (killed, out of memory, crashed) raises `TrialProcessError`.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main,
        args=(sender, os.getpid(), _logging_setup(), function, args),
        name="study-trial",
        daemon=True,
    )
    process.start()
    # Only the child writes; closing this end lets recv() see the child's exit.
    sender.close()
    try:
        try:
            outcome = receiver.recv()
        except EOFError:
            outcome = None
        process.join()
    finally:
        _stop(process)
        receiver.close()
    if outcome is None:
        raise TrialProcessError(_describe_exit(process.exitcode))
    kind, payload, child_traceback = outcome
    if kind == "result":
        return payload
    if child_traceback:
        payload.add_note(f"In the trial process:\n{child_traceback}")
    raise payload


def _stop(process) -> None:
    """Make sure the child has ended: SIGTERM, then SIGKILL after a grace period."""
    if process.exitcode is not None or not process.is_alive():
        return
    process.terminate()
    process.join(TERMINATE_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = (
            "; SIGKILL often comes from the system's out-of-memory killer: lower "
            "batch_size or image_size, or free memory"
            if -exitcode == signal.SIGKILL
            else ""
        )
        return f"the trial process was ended by {name} before it reported a result{hint}"
    return f"the trial process exited with status {exitcode} before it reported a result"


def _logging_setup() -> dict:
    """Collect what the child needs to log like the search's process."""
    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers if h.formatter), None)
    return {
        "level": root.level,
        "format": formatter._fmt if formatter else None,
        "datefmt": formatter.datefmt if formatter else None,
        "study_level": logging.getLogger("study").level,
    }


def _child_main(sender, parent_pid: int, logging_setup: dict, function, args) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    if logging_setup["format"]:
        logging.basicConfig(
            level=logging_setup["level"],
            format=logging_setup["format"],
            datefmt=logging_setup["datefmt"],
            stream=sys.stderr,
        )
    else:
        logging.getLogger().setLevel(logging_setup["level"])
    logging.getLogger("study").setLevel(logging_setup["study_level"])
    try:
        outcome = ("result", function(*args), None)
    except BaseException as exc:  # noqa: BLE001 - every outcome goes back to the parent
        outcome = ("error", _picklable(exc), traceback.format_exc())
    sender.send(outcome)
    sender.close()


def _picklable(exc: BaseException) -> BaseException:
    """Return the exception if it survives pickling, else a `TrialProcessError` naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure means a stand-in
        return TrialProcessError(f"{type(exc).__name__}: {exc}")


def _die_with_parent(parent_pid: int) -> None:
    """End this process when the search's process ends, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    # The parent may have died before prctl took effect, and other systems
    # have no prctl: watch the parent's pid as well.
    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="study-parent-watch", daemon=True).start()
