"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (missing folder, wrong format, unknown name). No traceback is shown."""
