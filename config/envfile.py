"""The project's ``.env`` file, read into the environment of every process as
docker compose passes it to every container: management commands, the worker
and beat (config/settings.py), the web service (config/gunicorn.py, before
gunicorn reads its own variables) and scripts/worker.sh (``python -m
config.envfile NAME...``).

A variable already set in the environment wins over the file (compose's rule).
``ENV_FILE`` chooses the file: unset, the project root's ``.env`` (none is
fine); a path (relative to the project root), that file (it must exist); empty,
no file (the test suite sets it so, whatever a developer's .env holds).
Kept free of Django imports: it runs before the settings.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent.parent


class EnvFileError(Exception):
    """ENV_FILE names a file that cannot be read."""


def env_file_path() -> Path | None:
    """The file ENV_FILE chooses (see the module's docstring), or None for none."""
    chosen = os.environ.get("ENV_FILE")
    if chosen is None:
        default = ROOT / ".env"
        return default if default.is_file() else None
    if not chosen.strip():
        return None
    return ROOT / chosen.strip()


def env_file_values() -> dict[str, str]:
    """The variables the env file sets and this process's environment does not,
    with their values (none without a file). Raises EnvFileError when ENV_FILE
    names a file that is missing or unreadable."""
    path = env_file_path()
    if path is None:
        return {}
    try:
        with path.open(encoding="utf-8") as stream:
            values = dotenv_values(stream=stream)
    except OSError as exc:
        raise EnvFileError(f"ENV_FILE: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise EnvFileError(f"ENV_FILE: cannot read {path}: not UTF-8 text") from None
    # A bare `NAME` line (no `=`) has no value: compose leaves such a variable unset too.
    return {name: value for name, value in values.items() if value is not None and name not in os.environ}


def env_file_load() -> None:
    """Sets, in this process's environment, the variables the env file has and
    the environment lacks. Raises EnvFileError as env_file_values does."""
    os.environ.update(env_file_values())


def main(names: list[str]) -> int:
    """Prints ``export NAME=VALUE`` (shell-quoted) for each of ``names`` that
    the env file sets and the environment lacks, for a shell to eval; exit 2
    with one line on stderr when ENV_FILE names a file that cannot be read."""
    try:
        values = env_file_values()
    except EnvFileError as exc:
        print(exc, file=sys.stderr)
        return 2
    for name in names:
        if name in values and name.isidentifier():
            print(f"export {name}={shlex.quote(values[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
