"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (missing folder, wrong format, unknown name). No traceback is shown."""


class ResourceWaitTimeout(Exception):
    """The cluster did not provide what a job asked for within ``--wait-for-resources`` (a valid
    request that could not start): the CLI prints the one-line message and exits with status 1."""
