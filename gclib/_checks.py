from .checks import *  # noqa: F401,F403  (gclib._checks is the old name of gclib.checks)
