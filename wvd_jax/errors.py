"""The one error type for mistakes a user can fix: bad inputs, files, flags, configs.

``wvd_jax.main`` (and every other command-line entry) catches ``UserError`` and prints its
message as one line, without a traceback, and exits non-zero; any other exception is a bug and
keeps its traceback. A message names the problem (the file, key or value) and the fix.
"""


class UserError(Exception):
  """A problem in what the user gave (a file, flag, config value, checkpoint); not a bug."""
