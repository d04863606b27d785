"""Bad input everywhere a user gives it: one clear error line, a non-zero exit, nothing written.

Caption cases are in test_sampling_export.py (BAD_CAPTIONS); data cases (corrupt shard, missing
split, wrong image size) in test_data.py; here: flags, run directories, data sets and models
given to the binaries.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cases(run_dir, data_dir, tmp):
  other_data = os.path.join(tmp, "other_vocab")
  train = ["text2pixel.binaries.train", "--data_dir", data_dir]
  new_run = ["--run_dir", os.path.join(tmp, "new_run")]
  return [  # (name, module + args, message, path that must not be created)
      ("unknown preset", train + new_run + ["--preset", "huge"],
       "error: no preset named 'huge'; choose one of ['cpu_small', 'paper', 'tiny']", "new_run"),
      ("impossible image size", train + new_run + ["--preset", "tiny", "--image_side", "7"],
       "error: image_side=7 is impossible", "new_run"),
      ("zero batch", train + new_run + ["--preset", "tiny", "--batch_size", "0"],
       "error: config field 'batch_size' must be positive, got 0", "new_run"),
      ("run dir with another config", train + ["--run_dir", run_dir, "--preset", "tiny",
                                               "--decoder_units", "64"],
       "decoder_units: run has 32, flag says 64", None),
      ("missing data", ["text2pixel.binaries.train", "--preset", "tiny", "--data_dir",
                        os.path.join(tmp, "nowhere")] + new_run,
       "vocab.json is missing: build the data set first", "new_run"),
      ("not a SavedModel", ["text2pixel.binaries.sample", "--saved_model", data_dir,
                            "--captions", "the digit 1"], "is not a training run", None),
      ("run without checkpoint", ["text2pixel.binaries.export", "--run_dir",
                                  os.path.join(tmp, "empty_run"), "--export_dir",
                                  os.path.join(tmp, "export")],
       "has no checkpoint yet", "export"),
      ("model and data vocabularies differ", ["text2pixel.binaries.evaluate", "--run_dir",
                                              run_dir, "--data_dir", other_data, "--out_dir",
                                              os.path.join(tmp, "eval")],
       "is not the vocabulary of", "eval"),
      ("checkpoint of another model", ["text2pixel.binaries.sample", "--run_dir",
                                       os.path.join(tmp, "other_layout"), "--captions",
                                       "the digit 1 is at the top left of the image",
                                       "--out_dir", os.path.join(tmp, "samples")],
       "does not fit this model", "samples"),
      ("two model sources", ["text2pixel.binaries.evaluate", "--run_dir", run_dir,
                             "--saved_model", run_dir], "give exactly one of", None),
  ]


def test_every_bad_input_gives_one_error_line(tiny_run_dir, mnist_captions_dir, tmp_path):
  tmp = str(tmp_path)
  empty_run = tmp_path / "empty_run"
  empty_run.mkdir()
  shutil.copy(os.path.join(tiny_run_dir, "config.json"), empty_run)
  shutil.copy(os.path.join(tiny_run_dir, "vocab.json"), empty_run)
  other = tmp_path / "other_vocab"
  shutil.copytree(mnist_captions_dir, other)
  (other / "vocab.json").write_text('{"words": ["<pad>", "<unk>", "<eos>", "zebra"]}')
  other_layout = tmp_path / "other_layout"  # its config no longer matches its checkpoints
  shutil.copytree(tiny_run_dir, other_layout)
  config = json.loads((other_layout / "config.json").read_text())
  config["decoder_units"] *= 2
  (other_layout / "config.json").write_text(json.dumps(config))
  cases = _cases(tiny_run_dir, mnist_captions_dir, tmp)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

  def run(case):
    return subprocess.run([sys.executable, "-m", *case[1]], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(run, cases))
  for (name, _, message, not_created), result in zip(cases, results):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode != 0, name
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr[-2000:])
    assert message in lines[0], (name, lines[0])
    if not_created:
      assert not os.path.exists(os.path.join(tmp, not_created)), name
