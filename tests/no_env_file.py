"""A pytest plugin (pytest.ini's ``-p tests.no_env_file``) that keeps a developer's
``.env`` out of the test suite: it sets ENV_FILE to empty, before pytest-django
loads the settings, so neither the tests nor the processes they start (workers,
manage.py, scripts) read a .env file (config/envfile.py). Tests of the .env
reading pass ENV_FILE themselves."""
import os

os.environ["ENV_FILE"] = ""
