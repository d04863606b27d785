"""Bad input everywhere a user gives it: one clear error line, exit status 2, nothing written or
deleted; and a bug (any other exception) keeps its traceback and exits with status 1.

USER_ERRORS below is the table of the user errors the binaries report, by type
(text2pixel/errors.py), what the user did, and the message they see. More cases with their
messages: captions in test_sampling_export.py (BAD_CAPTIONS); corrupt, missing or malformed data
in test_data.py; non-finite training in test_model.py and test_training.py; the judge's bar in
test_judge.py.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from text2pixel import errors, training
from text2pixel.binaries import common
from text2pixel.text import CaptionError

# Its module-scoped fixtures are built once: every test of this file runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("bad_input")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, SAMPLE, EXPORT, EVALUATE = (f"text2pixel.binaries.{b}" for b in
                                   ("train", "sample", "export", "evaluate"))
CAPTION = "the digit 1 is at the top left of the image"

# (what the user did, error type, binary and flags, message, path that must not appear).
# In flags: {run} a real tiny training run, {data} a real data set, {tmp} a scratch folder with
# {tmp}/run_copy (a copy of the run), {tmp}/mine (a folder holding a file of the user's),
# {tmp}/empty_run (a run without checkpoints), {tmp}/other_layout (config no longer fits its
# checkpoints), {tmp}/broken_config (config.json is not JSON), {tmp}/other_vocab (a data set with
# another vocabulary), {tmp}/diverged (a run whose latest weights are NaN), {tmp}/latin1.txt
# (a captions file that is not UTF-8).
USER_ERRORS = [
    ("unknown preset", errors.ConfigError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/new_run", "--preset", "huge"],
     "error: no preset named 'huge'; choose one of ['cpu_small', 'paper', 'tiny']", "new_run"),
    ("impossible image size", errors.ConfigError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/new_run", "--preset", "tiny",
      "--image_side", "7"],
     "error: image_side=7 is impossible", "new_run"),
    ("zero batch", errors.ConfigError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/new_run", "--preset", "tiny",
      "--batch_size", "0"],
     "error: config field 'batch_size' must be positive, got 0", "new_run"),
    ("guidance for a model without the empty caption", errors.UsageError,
     [SAMPLE, "--run_dir", "{run}", "--captions", CAPTION, "--guidance", "2", "--out_dir",
      "{tmp}/samples"],
     "error: --guidance needs a model trained with --caption_dropout > 0", "samples"),
    ("training with guidance but no caption dropout", errors.ConfigError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/new_run", "--preset", "tiny",
      "--guidance", "2"],
     "error: guidance needs a model trained with --caption_dropout > 0", "new_run"),
    ("a run whose config.json is not JSON", errors.ConfigError,
     [SAMPLE, "--run_dir", "{tmp}/broken_config", "--captions", CAPTION, "--out_dir",
      "{tmp}/samples"],
     "broken_config/config.json: not a JSON config", "samples"),
    ("restart with another field", errors.TrainingError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{run}", "--preset", "tiny",
      "--decoder_units", "64"],
     "holds a run with another config (decoder_units: run has 32, this command 64)", None),
    ("restart with another preset", errors.TrainingError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{run}", "--preset", "cpu_small"],
     "(preset: run has 'tiny', this command 'cpu_small'; image_side: run has 8, this command 32;",
     None),
    ("a run directory that is not a run", errors.TrainingError,
     [SAMPLE, "--run_dir", "{data}", "--captions", CAPTION, "--out_dir", "{tmp}/samples"],
     "data_dir_copy is not a training run (no config.json)", "samples"),
    ("a run without checkpoints", errors.TrainingError,
     [EXPORT, "--run_dir", "{tmp}/empty_run", "--export_dir", "{tmp}/export"],
     "empty_run has no checkpoint yet", "export"),
    ("multi_worker without a cluster", errors.UsageError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/new_run", "--preset", "tiny",
      "--strategy", "multi_worker"],
     "error: --strategy=multi_worker needs TF_CONFIG describing the cluster", "new_run"),
    ("a checkpoint of another model", errors.CheckpointError,
     [SAMPLE, "--run_dir", "{tmp}/other_layout", "--captions", CAPTION, "--out_dir",
      "{tmp}/samples"],
     "does not fit this model: it was written by another model layout or config", "samples"),
    ("no data set", errors.DataError,
     [TRAIN, "--preset", "tiny", "--data_dir", "{tmp}/nowhere", "--run_dir", "{tmp}/new_run"],
     "nowhere/vocab.json is missing: build the data set first", "new_run"),
    ("data of another vocabulary", errors.DataError,
     [EVALUATE, "--run_dir", "{run}", "--data_dir", "{tmp}/other_vocab", "--out_dir",
      "{tmp}/eval"],
     "is not the vocabulary of", "eval"),
    ("a restart on a data set of another vocabulary", errors.DataError,
     [TRAIN, "--data_dir", "{tmp}/other_vocab", "--run_dir", "{run}", "--preset", "tiny"],
     "was trained on another vocabulary than --data_dir", None),
    ("captions longer than max_caption_len", errors.DataError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/new_run", "--preset", "tiny",
      "--max_caption_len", "6"],
     "train captions in", "new_run"),
    ("a caption of unknown words", CaptionError,
     [SAMPLE, "--run_dir", "{run}", "--captions", "purple elephants", "--out_dir",
      "{tmp}/samples"],
     "error: caption 'purple elephants': no word is in the vocabulary (unknown: purple, "
     "elephants)", "samples"),
    ("a captions file that is not UTF-8", CaptionError,
     [SAMPLE, "--run_dir", "{run}", "--captions_file", "{tmp}/latin1.txt", "--out_dir",
      "{tmp}/samples"],
     "latin1.txt is not UTF-8 text (byte 22)", "samples"),
    ("an export that is not one", errors.ModelFileError,
     [SAMPLE, "--saved_model", "{data}", "--captions", CAPTION, "--out_dir", "{tmp}/samples"],
     "is not a text2pixel export (no saved_model.pb and no text2pixel.json;", "samples"),
    ("two model sources", errors.UsageError,
     [EVALUATE, "--run_dir", "{run}", "--saved_model", "{run}", "--out_dir", "{tmp}/eval"],
     "error: give exactly one of --run_dir (a training run) or --saved_model (an export)", "eval"),
    ("no captions", errors.UsageError,
     [SAMPLE, "--run_dir", "{run}", "--out_dir", "{tmp}/samples"],
     "error: give exactly one of --captions or --captions_file", "samples"),
    ("a captions file that does not exist", errors.UsageError,
     [SAMPLE, "--run_dir", "{run}", "--captions_file", "{tmp}/nothing.txt", "--out_dir",
      "{tmp}/samples"],
     "nothing.txt: No such file or directory", "samples"),
    ("a warm start from a folder that is not a run", errors.UsageError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/new_run", "--preset", "tiny",
      "--init_from", "{tmp}/mine"],
     "mine is not a training run (no config.json)", "new_run"),
    ("temperature 0", errors.UsageError,
     [SAMPLE, "--run_dir", "{run}", "--captions", CAPTION, "--temperature", "0", "--out_dir",
      "{tmp}/samples"],
     "error: --temperature must be > 0 (use --method greedy for the most likely pixels)",
     "samples"),
    ("beam width 0", errors.UsageError,
     [EXPORT, "--run_dir", "{run}", "--export_dir", "{tmp}/export", "--beam_width", "0"],
     "error: --beam_width must be >= 1", "export"),
    ("a pool of 0 images", errors.UsageError,
     [EVALUATE, "--run_dir", "{run}", "--data_dir", "{data}", "--out_dir", "{tmp}/eval",
      "--pool", "0"],
     "error: --pool must be >= 1", "eval"),
    ("an export over a training run", errors.OutputDirError,
     [EXPORT, "--run_dir", "{run}", "--export_dir", "{tmp}/run_copy"],
     "refusing to replace --export_dir", None),
    ("samples into a folder of the user's", errors.OutputDirError,
     [SAMPLE, "--run_dir", "{run}", "--captions", CAPTION, "--out_dir", "{tmp}/mine"],
     "refusing to write into --out_dir", None),
    ("an evaluation into a training run", errors.OutputDirError,
     [EVALUATE, "--run_dir", "{run}", "--data_dir", "{data}", "--out_dir", "{tmp}/run_copy"],
     "holds files text2pixel-evaluate did not write (e.g. 'checkpoints')", None),
    ("sampling a run that diverged", errors.CheckpointError,
     [SAMPLE, "--run_dir", "{tmp}/diverged", "--captions", CAPTION, "--out_dir",
      "{tmp}/diverged_samples"],
     "holds non-finite weights", "diverged_samples"),
    ("training into a folder of the user's", errors.OutputDirError,
     [TRAIN, "--data_dir", "{data}", "--run_dir", "{tmp}/mine", "--preset", "tiny"],
     "is not empty and is not a training run (no config.json; it holds e.g. 'notes.txt')", None),
]


def _tree(path):
  """Every file under path with its size and modification time: 'unchanged' means equal."""
  return {os.path.join(d, f): (os.path.getsize(os.path.join(d, f)),
                               os.path.getmtime(os.path.join(d, f)))
          for d, _, files in os.walk(path) for f in files}


@pytest.fixture(scope="module")
def outcomes(tiny_run_dir, mnist_captions_dir, tmp_path_factory):
  """Every row of USER_ERRORS run through its binary (two at a time), with the folders the user
  owns recorded before and after."""
  tmp = tmp_path_factory.mktemp("bad_input")
  data = str(tmp / "data_dir_copy")  # a copy: a row that wrongly wrote there would not leak
  shutil.copytree(mnist_captions_dir, data)
  run_copy = tmp / "run_copy"
  shutil.copytree(tiny_run_dir, run_copy)
  empty_run = tmp / "empty_run"
  empty_run.mkdir()
  for name in ("config.json", "vocab.json"):
    shutil.copy(os.path.join(tiny_run_dir, name), empty_run)
  broken = tmp / "broken_config"
  shutil.copytree(tiny_run_dir, broken)
  (broken / "config.json").write_text("{not json")
  other = tmp / "other_vocab"
  shutil.copytree(mnist_captions_dir, other)
  (other / "vocab.json").write_text('{"words": ["<pad>", "<unk>", "<eos>", "zebra"]}')
  other_layout = tmp / "other_layout"  # its config no longer matches its checkpoints
  shutil.copytree(tiny_run_dir, other_layout)
  config = json.loads((other_layout / "config.json").read_text())
  config["decoder_units"] *= 2
  (other_layout / "config.json").write_text(json.dumps(config))
  diverged = tmp / "diverged"  # its latest checkpoint holds a NaN weight
  shutil.copytree(tiny_run_dir, diverged)
  _, _, model = training.load_run(str(diverged))
  model.weights[0].assign(np.full(model.weights[0].shape, np.nan, np.float32))
  checkpoint = tf.train.Checkpoint(model=model)
  checkpoint.save_counter  # noqa: B018 (made on first use; the run's checkpoints hold one)
  checkpoint.write(tf.train.latest_checkpoint(str(diverged / "checkpoints")))
  (tmp / "mine").mkdir()
  (tmp / "mine" / "notes.txt").write_text("a week of notes")
  (tmp / "latin1.txt").write_bytes("the digit 1\nthe digit \xe9".encode("latin-1"))
  owned = [tiny_run_dir, data, str(run_copy), str(tmp / "mine")]
  before = {path: _tree(path) for path in owned}
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("TF_CONFIG", None)

  def run(row):
    args = [a.format(run=tiny_run_dir, data=data, tmp=str(tmp)) for a in row[2]]
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = dict(zip((row[0] for row in USER_ERRORS), pool.map(run, USER_ERRORS)))
  after = {path: _tree(path) for path in owned}
  return tmp, results, before, after


@pytest.mark.parametrize("row", USER_ERRORS, ids=[row[0] for row in USER_ERRORS])
def test_a_user_error_is_one_line_and_exit_status_2(outcomes, row):
  tmp, results, _, _ = outcomes
  name, error_type, _, message, not_created = row
  assert issubclass(error_type, common.USER_ERRORS)
  result = results[name]
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2, (name, result.returncode, result.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr[-3000:])
  assert message in lines[0], (name, lines[0])
  if not_created:
    assert not os.path.exists(os.path.join(tmp, not_created)), name


def test_nothing_of_the_users_was_changed(outcomes):
  """The run, the data set, the copy of the run an export and an evaluation were pointed at,
  and the user's folder hold exactly the files they held before every row ran."""
  _, _, before, after = outcomes
  for path in before:
    assert after[path] == before[path], path


@pytest.mark.parametrize("error", [ValueError("a shape bug"), FileNotFoundError("x.npy"),
                                   KeyError("weights"), RuntimeError("an op failed")])
def test_other_exceptions_are_not_reported_as_user_errors(error):
  from absl import flags
  if not flags.FLAGS.is_parsed():  # run_main reads the thread flags, as app.run has parsed them
    flags.FLAGS.mark_as_parsed()

  def main(argv):
    raise error
  with pytest.raises(type(error)):
    common.run_main(main, [])


def test_a_bug_keeps_its_traceback_and_exit_status_1():
  script = ("from absl import app\n"
            "from text2pixel.binaries.common import run_main\n"
            "def main(argv):\n"
            "  import numpy as np\n"
            "  return np.zeros(3).reshape(2, 2)  # a ValueError from inside a library: a bug\n"
            "app.run(lambda argv: run_main(main, argv))\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback (most recent call last)" in result.stderr
  assert "ValueError: cannot reshape array of size 3 into shape (2,2)" in result.stderr
  assert "error: cannot reshape" not in result.stderr


def test_an_output_folder_a_killed_write_left_behind_is_still_the_binarys(tmp_path):
  """A kill between an atomic write's start and its rename leaves e.g. results.json.tmp; a rerun
  into that folder is the binary's own business, while a file of the user's is still refused."""
  outputs = ("results.json", "samples.png", "scores_*.npz")
  for name in ("results.json", "results.json.tmp", "samples.png.tmp.png", "scores_3.npz.tmp.npz"):
    (tmp_path / name).write_text("x")
  common.check_output_dir(str(tmp_path), "--out_dir", "text2pixel-evaluate", outputs)
  (tmp_path / "notes.tmp").write_text("mine")
  with pytest.raises(errors.OutputDirError, match="notes.tmp"):
    common.check_output_dir(str(tmp_path), "--out_dir", "text2pixel-evaluate", outputs)
