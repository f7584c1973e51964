"""The one error type for mistakes a user can fix: bad inputs, files, flags, configs.

``wvd_jax.main`` (and every other command-line entry) catches ``UserError`` and prints its
message as one line, without a traceback, and exits non-zero; any other exception is a bug and
keeps its traceback. A message names the problem (the file, key or value) and the fix.
"""


class UserError(Exception):
  """A problem in what the user gave (a file, flag, config value, checkpoint); not a bug."""


def print_one_line(error: UserError) -> int:
  """Prints ``error: <the message on one line>`` to stderr, as every command line of the project
  ends a user error; returns the exit status for it (2)."""
  import sys  # pylint: disable=g-import-not-at-top
  print(f'error: {" ".join(str(error).split())}', file=sys.stderr, flush=True)
  return 2
