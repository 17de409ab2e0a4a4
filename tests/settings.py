"""The settings the tests run with, in their own process and in every process they start: the
project's settings (config/settings.py), with a fast password hasher.

Django's default hasher (PBKDF2, a million iterations) takes 0.5-1.8 s per password on a loaded
2-core machine, and the tests make a user with a password in many tests. What the tests prove about
logging in does not depend on the hasher's cost; production keeps Django's default.

Under pytest-xdist each test process (gw0, gw1...) gets the checkout's embedded broker directory of
its own, var/broker-gw0..., set in the environment so that the commands it starts use it too: the
in-process commands start that broker as they would on a laptop, and two test processes must not
share its queues or stop it under each other. (pytest-django gives each its own test database.)"""
import os

_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _xdist_worker and "EMBEDDED_BROKER_DIR" not in os.environ:
    from pathlib import Path

    os.environ["EMBEDDED_BROKER_DIR"] = str(Path(__file__).resolve().parent.parent / "var" / f"broker-{_xdist_worker}")

from config.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
