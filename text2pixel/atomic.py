"""Files written whole or not at all: each is written to a temporary name beside it and renamed
into place when complete, so a killed run, build or evaluation never leaves half a config, shard,
cache or picture that a rerun would trust. Imports nothing of the project (any module may use it).
"""

from __future__ import annotations

import contextlib
import json
import os


@contextlib.contextmanager
def writing(path: str, temp_suffix: str = ".tmp"):
  """Yields the temporary path to write; renames it onto ``path`` when the block finishes, and
  removes it if the block raises. ``temp_suffix`` keeps the extension a writer insists on
  (".tmp.png", ".tmp.npz")."""
  temp = path + temp_suffix
  try:
    yield temp
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(temp)
    raise
  os.replace(temp, path)


def write_text(path: str, text: str) -> None:
  with writing(path) as temp, open(temp, "w", encoding="utf-8") as f:
    f.write(text)


def write_json(path: str, data, **dump_args) -> None:
  with writing(path) as temp, open(temp, "w", encoding="utf-8") as f:
    json.dump(data, f, **dump_args)
