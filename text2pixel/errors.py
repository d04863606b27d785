"""The project's user errors: what a person can fix (a flag, a file, a directory, a caption).

Binaries print one of these as one line ``error: ...`` and exit with status 2
(:func:`text2pixel.binaries.common.run_main`). Anything else, e.g. a ValueError from inside
TensorFlow or Keras, is a bug: it keeps its traceback and exits with status 1. So raise these only
for a mistake of the user's, with a message that names the thing to fix; tests/test_bad_input.py
lists every one of them with its message.

(Caption errors are :class:`text2pixel.text.CaptionError`, defined next to the tokenizer.)
This module imports nothing heavy, so binaries can check their flags before TensorFlow starts.
"""


class UserError(Exception):
  """Base of every error a binary reports as one line and exit status 2."""


class ConfigError(UserError, ValueError):
  """A configuration that cannot work; the message says which field and why."""


class DataError(UserError, RuntimeError):
  """Missing, corrupt or malformed data; the message names the file."""


class TrainingError(UserError, RuntimeError):
  """A run that cannot start or continue; the message says why."""


class CheckpointError(TrainingError):
  """A checkpoint that does not fit the model (another layout or config)."""


class JudgeError(UserError, RuntimeError):
  """The judge could not be trained, loaded, or does not meet its accuracy bar."""


class ModelFileError(UserError):
  """A path given as a model (a SavedModel export) that is not one, or is incomplete."""


class OutputDirError(UserError):
  """A directory a binary would write into (or replace) that holds something of the user's."""


class UsageError(UserError):
  """Flags that do not go together, or a value out of range."""
