"""What this project keeps on disk, read and checked without TensorFlow.

  a data set      vocab.json, metadata.json, {split}.tfrecord-NNNNN-of-NNNNN (tfrecords.py writes
                  the records; datasets/ builds them)
  a training run  config.json, run.json, vocab.json, checkpoints/ (training.py writes them)
  an export       saved_model.pb, variables/, text2pixel.json (export.py writes them)

Binaries check the paths a user gives against these layouts before TensorFlow starts (several
seconds), so a mistyped path, a restart with other flags or a caption of unknown words is refused
in about a second. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import codecs
import glob
import json
import os
import re
from typing import Dict, List, Optional, Tuple

from text2pixel import atomic
from text2pixel import config as config_lib
from text2pixel import text as text_lib
from text2pixel.config import Config
from text2pixel.errors import DataError, ModelFileError, OutputDirError, TrainingError

# --- a data set ---------------------------------------------------------------------------------


def split_files(directory: str, split: str) -> List[str]:
  """The shards of one split, all of them (a build that stopped half-way is an error)."""
  files = sorted(glob.glob(os.path.join(directory, f"{split}.tfrecord-*-of-*")))
  files = [f for f in files if not f.endswith(".incomplete")]
  if not files:
    raise DataError(f"no TFRecords for split '{split}' in {directory!r} "
                    f"(expected {split}.tfrecord-*-of-*; build the data set first)")
  expected = int(files[0].rsplit("-of-", 1)[1])
  if len(files) != expected:
    raise DataError(f"split '{split}' in {directory!r} has {len(files)} of {expected} shards; "
                    "the build did not finish (run the builder again to resume it)")
  return files


def write_metadata(directory: str, metadata: Dict) -> None:
  atomic.write_json(os.path.join(directory, "metadata.json"), metadata, indent=2, sort_keys=True)


def read_metadata(directory: str) -> Dict:
  path = os.path.join(directory, "metadata.json")
  if not os.path.exists(path):
    raise DataError(f"{path} is missing: {directory!r} is not a built text2pixel data set")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_vocabulary(directory: str) -> text_lib.Vocabulary:
  path = os.path.join(directory, "vocab.json")
  if not os.path.exists(path):
    raise DataError(f"{path} is missing: build the data set first")
  try:
    return text_lib.Vocabulary.load(path)
  except (OSError, ValueError) as error:  # unreadable, not JSON, or not a vocabulary
    raise DataError(f"{path} is not a text2pixel vocabulary ({error})") from None


def check_model_vocabulary(vocab: text_lib.Vocabulary, data_dir: str) -> None:
  """A model may only read a data set written with its own vocabulary."""
  data_vocab = load_vocabulary(data_dir)
  if data_vocab != vocab:
    raise DataError(
        f"the model's vocabulary ({len(vocab)} words) is not the vocabulary of {data_dir} "
        f"({len(data_vocab)} words): its token ids would mean other words; use the data set "
        "the model was trained on")


# --- a training run -----------------------------------------------------------------------------

RUN_INFO = "run.json"

# The fields that decide the model's weights' shapes: a warm start must match them.
MODEL_FIELDS = ("image_side", "num_levels", "max_caption_len", "word_embedding_dim",
                "encoder_units", "pixel_embedding_dim", "decoder_units", "attention_units",
                "conditioning", "position_embedding_dim", "above_context", "encoder")


def read_run_info(run_dir: str) -> Dict:
  """run.json of a run ({"preset": name or None, ...}); {} for a run saved before it existed."""
  path = os.path.join(run_dir, RUN_INFO)
  if not os.path.exists(path):
    return {}
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError) as error:
    raise TrainingError(f"cannot read {path} ({error})") from None
  if not isinstance(info, dict):
    raise TrainingError(f"{path} is not a text2pixel run description (a JSON object)")
  return info


def write_run_info(run_dir: str, info: Dict) -> None:
  """Writes run.json atomically (a killed run never leaves half of it behind)."""
  atomic.write_json(os.path.join(run_dir, RUN_INFO), info)


def checkpoint_step(path: str) -> int:
  """The step in a checkpoint's name (.../ckpt-1234 -> 1234)."""
  match = re.search(r"ckpt-(\d+)$", path)
  if not match:
    raise ValueError(f"{path} is not a checkpoint path (.../ckpt-N)")
  return int(match.group(1))


def check_run_dir(run_dir: str) -> None:
  """A run directory is new, empty, or a run (config.json): never someone's other folder."""
  if os.path.isfile(run_dir):
    raise OutputDirError(f"--run_dir {run_dir} is a file, not a directory")
  if os.path.isdir(run_dir) and os.listdir(run_dir) and \
      not os.path.exists(os.path.join(run_dir, "config.json")):
    example = sorted(os.listdir(run_dir))[0]
    raise OutputDirError(f"--run_dir {run_dir} is not empty and is not a training run (no "
                         f"config.json; it holds e.g. {example!r}); refusing to write into it: "
                         "choose a new or empty directory")


def check_run_vocabulary(run_dir: str, vocab: text_lib.Vocabulary, data_dir: str) -> None:
  """A run continues only on a data set of its own vocabulary (its word embeddings are rows of
  that vocabulary's ids)."""
  path = os.path.join(run_dir, "vocab.json")
  if os.path.exists(path) and text_lib.Vocabulary.load(path) != vocab:
    raise DataError(f"--run_dir {run_dir} was trained on another vocabulary than --data_dir "
                    f"{data_dir}'s: its word embeddings would mean other words; restart it on the "
                    "data set it was started with, or use another --run_dir")


def resolve_run_config(run_dir: str, requested: Config, explicit: Dict,
                       preset: Optional[str] = None) -> Config:
  """The config of a run: ``requested`` for a new run; on restart the saved one.

  A restart must ask for the same run: the whole resolved config (``preset`` with the flags on
  top) is compared with the saved one, and so is the preset's name; only RESUMABLE_CHANGES
  (how long, how often, how fast) may differ, and only those given as flags (``explicit``)
  change.
  """
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    return requested
  saved = config_lib.load(path)
  conflicts = [f"{k}: run has {a!r}, this command {b!r}"
               for k, (a, b) in saved.differences(requested).items()
               if k not in config_lib.RESUMABLE_CHANGES]
  saved_preset = read_run_info(run_dir).get("preset")
  if preset and saved_preset and preset != saved_preset:
    conflicts.insert(0, f"preset: run has {saved_preset!r}, this command {preset!r}")
  if conflicts:
    how = f" (--preset {saved_preset} and the same field flags)" if saved_preset else ""
    raise TrainingError(f"{run_dir} holds a run with another config ({'; '.join(conflicts)}); "
                        f"restart it with the flags it was started with{how}, or use another "
                        "--run_dir")
  return saved.replace(**{k: v for k, v in explicit.items()
                          if k in config_lib.RESUMABLE_CHANGES})


_CHECKPOINT_PATH = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"\s*$', re.M)


def latest_checkpoint(checkpoint_dir: str) -> Optional[str]:
  """What tf.train.latest_checkpoint returns, read without TensorFlow: the path in the
  directory's ``checkpoint`` file (a text CheckpointState), if its index file exists."""
  try:
    with open(os.path.join(checkpoint_dir, "checkpoint"), encoding="utf-8") as f:
      found = _CHECKPOINT_PATH.search(f.read())
  except OSError:
    return None
  if not found:
    return None
  # The text format escapes bytes C-style (a non-ASCII path as octal UTF-8 bytes).
  path = codecs.escape_decode(found.group(1).encode("utf-8"))[0].decode("utf-8")
  if not os.path.isabs(path):
    path = os.path.join(checkpoint_dir, path)
  return path if os.path.exists(path + ".index") else None


def load_run_config(run_dir: str) -> Tuple[Config, text_lib.Vocabulary, Optional[str]]:
  """(config, vocabulary, path of the latest checkpoint or None) of a training run."""
  config_path = os.path.join(run_dir, "config.json")
  if not os.path.exists(config_path):
    raise TrainingError(f"{run_dir} is not a training run (no config.json)")
  config = config_lib.load(config_path)
  vocab_path = os.path.join(run_dir, "vocab.json")
  try:
    vocab = text_lib.Vocabulary.load(vocab_path)
  except (OSError, ValueError) as error:  # missing, not JSON, or not a vocabulary
    raise TrainingError(f"{run_dir} is an incomplete training run: cannot read {vocab_path} "
                        f"({error})") from None
  return config, vocab, latest_checkpoint(os.path.join(run_dir, "checkpoints"))


def load_trained_run_config(run_dir: str) -> Tuple[Config, text_lib.Vocabulary, str]:
  """load_run_config of a run that has a checkpoint to load."""
  config, vocab, latest = load_run_config(run_dir)
  if not latest:
    raise TrainingError(f"{run_dir} has no checkpoint yet")
  return config, vocab, latest


# --- an export ----------------------------------------------------------------------------------

EXPORT_INFO = "text2pixel.json"  # written into every export beside saved_model.pb


def is_export(path: str) -> bool:
  """True for a directory this project exported (its text2pixel.json and saved_model.pb)."""
  return all(os.path.isfile(os.path.join(path, name)) for name in (EXPORT_INFO, "saved_model.pb"))


def check_export_replaceable(export_dir: str) -> None:
  """Raises OutputDirError unless export_dir is absent, an empty directory or an earlier export:
  an export replaces only an export, never a run, a data set or anything else of the user's."""
  if not os.path.lexists(export_dir):
    return
  if os.path.isdir(export_dir) and not os.path.islink(export_dir):
    if not os.listdir(export_dir) or is_export(export_dir):
      return
    kind = "a training run" if os.path.exists(os.path.join(export_dir, "config.json")) else \
        "not a text2pixel export"
    raise OutputDirError(f"refusing to replace --export_dir {export_dir}: it is {kind} (no "
                         f"{EXPORT_INFO} and saved_model.pb) and not empty; choose another "
                         "directory (nothing was written)")
  raise OutputDirError(f"refusing to replace --export_dir {export_dir}: it is a file or a link, "
                       "not an export directory (nothing was written)")


def read_export_info(export_dir: str) -> Tuple[Config, text_lib.Vocabulary, int]:
  """(config, vocabulary, beam width) of an export, from its text2pixel.json."""
  if not os.path.isdir(export_dir):
    raise ModelFileError(f"{export_dir} does not exist (expected a text2pixel-export directory)")
  missing = [name for name in ("saved_model.pb", EXPORT_INFO)
             if not os.path.isfile(os.path.join(export_dir, name))]
  if missing:
    raise ModelFileError(f"{export_dir} is not a text2pixel export (no {' and no '.join(missing)}"
                         "; text2pixel-export writes both)")
  if not os.path.isdir(os.path.join(export_dir, "variables")):
    raise ModelFileError(f"{export_dir} is an incomplete export (no variables/ folder)")
  info_path = os.path.join(export_dir, EXPORT_INFO)
  try:
    with open(info_path, encoding="utf-8") as f:
      info = json.load(f)
    return (config_lib.from_json(json.dumps(info["config"])),
            text_lib.Vocabulary(info["vocabulary"]), int(info["beam_width"]))
  except (ValueError, KeyError, TypeError) as error:  # not JSON, or not this project's fields
    if isinstance(error, config_lib.ConfigError):
      raise ModelFileError(f"{export_dir} holds a config this version cannot use ({error})"
                           ) from None
    raise ModelFileError(f"{info_path} is damaged ({type(error).__name__}: "
                         f"{str(error)[:200]})") from None


# --- either ------------------------------------------------------------------------------------


def read_model_source(run_dir: str = "", saved_model: str = "") -> Tuple[Config,
                                                                         text_lib.Vocabulary]:
  """(config, vocabulary) of the model a binary was pointed at: a run with a checkpoint, or an
  export. What the model will be loaded from later; here it is only checked."""
  if saved_model:
    return read_export_info(saved_model)[:2]
  return load_trained_run_config(run_dir)[:2]
