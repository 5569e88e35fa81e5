"""Entry points that start roles: the ``feddiff`` command, the demo, the train command, the broker launcher.

They live apart from the core so that ``feddiff`` (the shared library) never imports a role and
stays importable on a machine that runs only one of them.
"""
