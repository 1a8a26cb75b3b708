"""Start a sleeping trial process and wait for it; a test kills this parent.

    python tests/parent_of_child.py PID_FILE
"""

import sys

from child_targets import write_pid_and_sleep
from study.trial_process import run_in_child

if __name__ == "__main__":
    run_in_child(write_pid_and_sleep, sys.argv[1])
