"""Errors a user can cause and fix: shown as one line, never as a traceback."""


class UserError(Exception):
  """A problem with the user's input: config, data, workdir or checkpoint.

  The message names the offending file or key and says what to do. Command
  line entry points print it as one line and exit with status 2.
  """


class DataNotFoundError(UserError):
  """The source files of a data set are missing; the message says where to get them."""


class BadDataError(UserError):
  """A source file is unreadable, inconsistent or holds unexpected values."""
