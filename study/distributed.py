"""Distributed tuning with Keras Tuner's chief/worker mode.

One chief process serves the oracle over gRPC. Every worker requests
hyperparameters from it, runs the trial, and writes the trial directory on a file
system that all processes share. Keras Tuner reads three environment
variables, which `configure` sets from `--chief` and `--worker`:

    KERASTUNER_TUNER_ID     "chief", or the worker's id
    KERASTUNER_ORACLE_IP    address the chief binds to and workers connect to
    KERASTUNER_ORACLE_PORT  its port

A worker that dies mid-trial keeps that trial assigned to its id. Restarting
it with the same id gives it the same trial again, which resumes from its last
finished epoch. The chief waits until every assigned trial has ended.
"""

from __future__ import annotations

import logging
import os

from study.errors import ConfigError

logger = logging.getLogger("study.distributed")

TUNER_ID = "KERASTUNER_TUNER_ID"
ORACLE_IP = "KERASTUNER_ORACLE_IP"
ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
CHIEF_ID = "chief"
DEFAULT_HOST = "127.0.0.1"


def parse_address(text: str) -> tuple[str, int]:
    """Split `[HOST:]PORT` into host and port; the host defaults to 127.0.0.1."""
    host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(
            f"--chief {text!r} is not [HOST:]PORT with a port from 1 to 65535, "
            "for example --chief 127.0.0.1:8000"
        )
    return host or DEFAULT_HOST, port


def configure(chief: str | None, worker: str | None) -> str | None:
    """Set Keras Tuner's variables from `--chief` and `--worker`; return the role.

    Returns:
        `"chief"`, `"worker"`, or None for a single-process search. Without
        the options, variables already set in the environment decide.

    Raises:
        ConfigError: `--worker` without `--chief`, or a worker id that Keras
            Tuner would take for the chief.
    """
    if worker is not None and chief is None:
        raise ConfigError(f"--worker {worker} needs --chief HOST:PORT of the chief to connect to")
    if worker is not None and (not worker or CHIEF_ID in worker):
        raise ConfigError(
            f"--worker {worker!r}: choose a non-empty id without the word {CHIEF_ID!r}, "
            "because Keras Tuner treats any such id as the chief"
        )
    if chief is not None:
        host, port = parse_address(chief)
        os.environ[ORACLE_IP] = host
        os.environ[ORACLE_PORT] = str(port)
        os.environ[TUNER_ID] = CHIEF_ID if worker is None else worker
    return role()


def role() -> str | None:
    """Return the role the environment gives this process, by Keras Tuner's rules."""
    if ORACLE_IP not in os.environ:
        return None
    if ORACLE_PORT not in os.environ or TUNER_ID not in os.environ:
        raise ConfigError(
            f"{ORACLE_IP} is set but {ORACLE_PORT} or {TUNER_ID} is not; set all "
            "three, or use --chief and --worker"
        )
    return "chief" if CHIEF_ID in os.environ[TUNER_ID] else "worker"


def describe() -> str:
    """Describe the role, the tuner id and the oracle address in one line."""
    current = role()
    if current is None:
        return "single process"
    address = f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}"
    if current == "chief":
        return f"chief, serving the oracle at {address}"
    return f"worker {os.environ[TUNER_ID]}, oracle at {address}"
