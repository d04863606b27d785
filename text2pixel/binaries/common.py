"""What every binary shares: one clear error line and a non-zero exit for bad input."""

from __future__ import annotations

import sys

from text2pixel.config import ConfigError
from text2pixel.text import CaptionError
from text2pixel.tfrecords import DataError

USER_ERRORS = (ConfigError, CaptionError, DataError, FileNotFoundError, ValueError)


def run_main(main, argv) -> int:
  """Runs main(argv); a user error prints 'error: ...' on one line and exits with status 2."""
  from text2pixel.training import TrainingError
  try:
    return main(argv) or 0
  except (TrainingError,) + USER_ERRORS as error:
    message = " ".join(str(error).split())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
