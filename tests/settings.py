"""The settings the tests run with, in their own process and in every process they start: the
project's settings (config/settings.py), with a fast password hasher.

Django's default hasher (PBKDF2, a million iterations) takes 0.5-1.8 s per password on a loaded
2-core machine, and the tests make a user with a password in many tests. What the tests prove about
logging in does not depend on the hasher's cost; production keeps Django's default."""
from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
