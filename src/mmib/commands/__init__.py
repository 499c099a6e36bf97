"""Sub-commands of the ``mmib`` CLI, one module each (see :mod:`mmib.cli`)."""
