"""Module-level functions for `study.trial_process` tests: a spawned child imports them."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

from study.hypermodel import TransferHyperModel


class Unpicklable(Exception):
    """An exception whose constructor needs two arguments, so unpickling it fails."""

    def __init__(self, first, second):
        super().__init__(f"{first} {second}")


def add(a, b):
    return a + b


def raise_value_error(message):
    raise ValueError(message)


def raise_unpicklable():
    raise Unpicklable("needs", "two")


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def exit_quietly():
    os._exit(3)


def write_pid_and_sleep(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)



class SelfKillingHyperModel(TransferHyperModel):
    """A hypermodel whose first build in a trial process kills that process.

    This is what the out-of-memory killer does. The first such build creates
    `marker`; the builds of later trials work.
    """

    def __init__(self, marker, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker = str(marker)

    def build(self, hp):
        # Keras Tuner also builds once in the search's own process, to learn
        # the search space; only a trial process may die.
        in_trial_process = multiprocessing.parent_process() is not None
        if in_trial_process and not os.path.exists(self.marker):
            Path(self.marker).touch()
            kill_self()
        return super().build(hp)
