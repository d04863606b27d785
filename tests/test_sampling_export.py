"""Samplers, the sample binary, and the SavedModel export (loaded where tfa does not exist)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from text2pixel import errors, export, generation, layout, sampling, text as text_lib, tfrecords
from text2pixel import training

# Its module-scoped fixtures are built once: every test of this file runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("export")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAPTIONS = ["the digit 3 is on the left of the digit 5", "the digit 7 is at the top left of the image"]
UNKNOWN_WORD_CAPTION = "the digit 4 is purple"  # 'purple' becomes <unk>


@pytest.fixture(scope="module")
def run(tiny_run_dir):
  return training.load_run(tiny_run_dir)


def _ids(vocab, config, captions=CAPTIONS):
  ids = [vocab.encode(c, config.max_caption_len) for c in captions]
  return (tf.constant(tfrecords.pad_ids(ids, config.max_caption_len)),
          tf.constant([len(x) for x in ids], tf.int32))


@pytest.mark.parametrize("method", sampling.METHODS)
def test_samplers_return_images_whose_log_prob_matches_teacher_forcing(run, method):
  config, vocab, model = run
  ids, lengths = _ids(vocab, config)
  fn = sampling.make_generate_fn(model, method, num_samples=3, beam_width=2)
  out = fn(ids, lengths, tf.constant(1.0), tf.constant(11))
  images = out["images"].numpy()
  samples = images.shape[1]
  assert images.dtype == np.uint8 and images.shape == (2, samples, 8, 8)
  assert samples == (2 if method == "beam" else 3)
  attention = out["attention"].numpy()
  assert attention.shape == (2, samples, 64, config.max_caption_len)
  np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-4)
  assert attention[0, :, :, int(lengths[0]):].max() == 0  # padding never attended
  scored = model.log_likelihood(tf.repeat(ids, samples, 0), tf.repeat(lengths, samples, 0),
                                tf.constant(images.reshape(-1, 8, 8))).numpy()
  np.testing.assert_allclose(out["log_prob"].numpy().ravel(), scored, rtol=1e-4, atol=1e-2)
  if method == "beam":  # beams come best first
    assert np.all(np.diff(out["log_prob"].numpy(), axis=1) <= 1e-4)
  if method == "sample":  # the seed decides the images
    again = fn(ids, lengths, tf.constant(1.0), tf.constant(11))["images"].numpy()
    other = fn(ids, lengths, tf.constant(1.0), tf.constant(12))["images"].numpy()
    np.testing.assert_array_equal(again, images)
    assert not np.array_equal(other, images)


def test_beam_width_one_is_greedy(run):
  config, vocab, model = run
  ids, lengths = _ids(vocab, config)
  greedy = sampling.make_generate_fn(model, "greedy")(ids, lengths, 1.0, 0)
  beam = sampling.make_generate_fn(model, "beam", beam_width=1)(ids, lengths, 1.0, 0)
  np.testing.assert_array_equal(beam["images"].numpy(), greedy["images"].numpy())
  np.testing.assert_allclose(beam["log_prob"].numpy(), greedy["log_prob"].numpy(), rtol=1e-5)


def test_low_temperature_approaches_greedy(run):
  config, vocab, model = run
  ids, lengths = _ids(vocab, config)
  greedy = sampling.make_generate_fn(model, "greedy")(ids, lengths, 1.0, 0)["log_prob"].numpy()
  cold = sampling.make_generate_fn(model, "sample", num_samples=2)(ids, lengths, 0.01, 3)
  hot = sampling.make_generate_fn(model, "sample", num_samples=2)(ids, lengths, 1.0, 3)
  assert cold["log_prob"].numpy().mean() > hot["log_prob"].numpy().mean()
  np.testing.assert_allclose(cold["log_prob"].numpy().mean(), greedy.mean(), rtol=0.05)


@pytest.mark.parametrize("loop", ["fused", "graph"])
def test_guidance_scale_one_is_sampling_and_others_follow_the_guided_logits(run, loop):
  """Classifier-free guidance in either decoder: at scale 1 the images of plain sampling (same
  seed); at scale 3 the images the other decoder draws, and the log-probability of each image is
  that of log_softmax(l_empty + 3 (l_caption - l_empty)), the two logits recomputed by teacher
  forcing on the images it drew."""
  config, vocab, model = run
  ids, lengths = _ids(vocab, config)
  other = {"fused": "graph", "graph": "fused"}[loop]
  plain = sampling.generate(model, ids, lengths, "sample", num_samples=2, seed=5, loop=loop)
  same = sampling.generate(model, ids, lengths, "sample", num_samples=2, seed=5, loop=loop,
                           guidance=1.0)
  np.testing.assert_array_equal(same["images"].numpy(), plain["images"].numpy())
  np.testing.assert_allclose(same["log_prob"].numpy(), plain["log_prob"].numpy(), rtol=1e-5)
  np.testing.assert_allclose(same["attention"].numpy(), plain["attention"].numpy(), atol=1e-5)
  for method in ("sample", "greedy"):
    guided = sampling.generate(model, ids, lengths, method, num_samples=2, seed=5, loop=loop,
                               guidance=3.0)
    twin = sampling.generate(model, ids, lengths, method, num_samples=2, seed=5, loop=other,
                             guidance=3.0)
    np.testing.assert_array_equal(guided["images"].numpy(), twin["images"].numpy())
    images = tf.constant(guided["images"].numpy().reshape(-1, 8, 8))
    caption_ids, caption_len = tf.repeat(ids, 2, 0), tf.repeat(lengths, 2, 0)
    empty_ids, empty_len = text_lib.empty_captions(caption_ids)
    logits = [model.logits_stepwise(model.encode(i, n), n, images)
              for i, n in ((caption_ids, caption_len), (empty_ids, empty_len))]
    expected = model.pixel_log_probs(logits[1] + 3.0 * (logits[0] - logits[1]), images)
    np.testing.assert_allclose(guided["log_prob"].numpy().ravel(),
                               tf.reduce_sum(expected, 1).numpy(), rtol=1e-4, atol=1e-2)
    if method == "sample":  # guidance changed what was drawn at the same uniforms
      assert not np.array_equal(guided["images"].numpy(), plain["images"].numpy())
  with pytest.raises(ValueError, match="beam"):
    sampling.generate(model, ids, lengths, "beam", guidance=2.0)
  # An export samples at its config's guidance: the one it was exported with.
  guided_config = config.replace(caption_dropout=0.1, guidance=3.0)
  module = export.ExportModule(model, vocab, guided_config)
  served = module.sample(tf.constant(CAPTIONS), tf.constant(2), tf.constant(1.0), tf.constant(5))
  expected = sampling.generate(model, ids, lengths, "sample", num_samples=2, seed=5, loop="graph",
                               guidance=3.0)
  np.testing.assert_array_equal(served["images"].numpy(), expected["images"].numpy())


@pytest.fixture(scope="module")
def export_dir(run, tmp_path_factory):
  """The module's one real export (an export takes a minute), written over an earlier export's
  folder, which it must replace (test_export_replaces_an_earlier_export)."""
  config, vocab, model = run
  path = tmp_path_factory.mktemp("export") / "model"
  (path / "variables").mkdir(parents=True)
  (path / "saved_model.pb").write_text("an earlier export")
  (path / layout.EXPORT_INFO).write_text("an earlier export")
  (path / "variables" / "stale").write_text("from the earlier export")
  layout.check_export_replaceable(str(path))  # an earlier export: may be replaced
  assert export.export(model, vocab, config, str(path), beam_width=2) == str(path)
  return str(path)


def test_saved_model_loads_without_tensorflow_addons_and_matches(run, export_dir, tmp_path):
  """Every signature of the export, loaded where tfa cannot be imported, gives what the model
  gives; the in-graph tokenizer maps unknown words to <unk> and refuses what Python refuses.
  (The one load of the SavedModel in this module: a load takes several seconds.)"""
  config, vocab, model = run
  ids, lengths = _ids(vocab, config)
  expected = {m: sampling.make_generate_fn(model, m, num_samples=2 if m == "sample" else 1,
                                          beam_width=2)(ids, lengths, tf.constant(1.0),
                                                        tf.constant(5))
              for m in ("sample", "greedy", "beam")}
  expected_unknown = sampling.make_generate_fn(model, "greedy")(
      *_ids(vocab, config, [UNKNOWN_WORD_CAPTION]), tf.constant(1.0), tf.constant(0))
  images = expected["sample"]["images"].numpy()[:, 0]
  expected_scores = model.log_likelihood_matrix(ids, lengths, tf.constant(images)).numpy()
  np.save(tmp_path / "images.npy", images)
  script = f"""
import sys, json
sys.modules["tensorflow_addons"] = None  # any import of tfa now fails
import numpy as np, tensorflow as tf
m = tf.saved_model.load({export_dir!r})
caps = tf.constant({CAPTIONS!r})
out = {{}}
s = m.signatures["sample"](captions=caps, num_samples=tf.constant(2),
                           temperature=tf.constant(1.0), seed=tf.constant(5))
out["sample"] = s["images"].numpy().tolist()
out["sample_lp"] = s["log_prob"].numpy().tolist()
out["greedy"] = m.signatures["greedy"](captions=caps)["images"].numpy().tolist()
out["beam"] = m.signatures["beam"](captions=caps)["images"].numpy().tolist()
out["score"] = m.signatures["score"](captions=caps,
    images=tf.constant(np.load({str(tmp_path / "images.npy")!r})))["log_likelihood"].numpy().tolist()
out["unknown"] = m.signatures["greedy"](
    captions=tf.constant([{UNKNOWN_WORD_CAPTION!r}]))["images"].numpy().tolist()
def error_of(caption):
  try:
    m.signatures["greedy"](captions=tf.constant([caption]))
  except tf.errors.InvalidArgumentError as error:
    return error.message
out["no_words"] = error_of("  !! ")
out["too_long"] = error_of(" ".join(["digit"] * 40))
out["tfa_loaded"] = any(k.startswith("tensorflow_addons.") for k in sys.modules)
print(json.dumps(out))
"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert not served["tfa_loaded"]
  for method in ("sample", "greedy", "beam"):
    np.testing.assert_array_equal(np.array(served[method], np.uint8),
                                  expected[method]["images"].numpy(), err_msg=method)
  np.testing.assert_allclose(served["sample_lp"], expected["sample"]["log_prob"].numpy(),
                             rtol=1e-5)
  np.testing.assert_allclose(served["score"], expected_scores, rtol=1e-5)
  np.testing.assert_array_equal(np.array(served["unknown"], np.uint8),
                                expected_unknown["images"].numpy())
  assert "no words" in served["no_words"], served["no_words"]
  assert "too long" in served["too_long"], served["too_long"]


@pytest.fixture(scope="module")
def loaded(export_dir):
  return export.LoadedModel(export_dir)  # reads text2pixel.json; the SavedModel is not loaded


def test_export_records_config_and_vocabulary(run, export_dir, loaded):
  config, vocab, _ = run
  assert loaded.config == config and loaded.vocab == vocab and loaded.beam_width == 2
  with open(os.path.join(export_dir, "text2pixel.json")) as f:
    assert json.load(f)["vocabulary"] == vocab.words


BAD_CAPTIONS = [  # (caption, error message or None, warning)
    ("", "has no words", None),
    ("   \t ", "has no words", None),
    ("the digit " * 10, "has 20 words; the limit is 15", None),
    ("purple elephants", "no word is in the vocabulary (unknown: purple, elephants)", None),
    ("x" * 5000, "no word is in the vocabulary (unknown: " + "x" * 5000, None),
    (b"the digit \xe9", "is not valid UTF-8", None),
    (UNKNOWN_WORD_CAPTION, None, "unknown words purple become <unk>"),
]


@pytest.mark.parametrize("source", ["run", "saved_model"])
def test_bad_captions_give_clear_errors(tiny_run_dir, loaded, source):
  """Refused before the model is loaded (the SavedModel never is here); the export's own
  handling of an unknown word: test_saved_model_loads_without_tensorflow_addons_and_matches."""
  generator = generation.Generator.open(tiny_run_dir) if source == "run" else \
      generation.SavedModelGenerator(loaded)
  for caption, error, warning in BAD_CAPTIONS:
    warnings = []
    if error:
      with pytest.raises(text_lib.CaptionError) as raised:
        generator.generate([caption], "greedy", warn=warnings.append)
      assert error in str(raised.value), (caption, str(raised.value))
    elif source == "run":
      out = generator.generate([caption], "greedy", warn=warnings.append)
      assert out["images"].shape == (1, 1, 8, 8)
      assert any(warning in w for w in warnings), warnings
    else:
      generator.prepare([caption], warn=warnings.append)
      assert any(warning in w for w in warnings), warnings
  if source == "saved_model":
    assert "module" not in vars(loaded)  # the checks above needed no SavedModel


@pytest.mark.parametrize("source", ["run", "saved_model"])
def test_sample_binary_writes_pictures(tiny_run_dir, export_dir, tmp_path, source):
  where = ["--run_dir", tiny_run_dir] if source == "run" else ["--saved_model", export_dir]
  out_dir = tmp_path / "out"
  base = [sys.executable, "-m", "text2pixel.binaries.sample", *where, "--num_samples", "2",
          "--out_dir", str(out_dir)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  captions_file = tmp_path / "captions.txt"
  captions_file.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
  ok = subprocess.run(base + ["--captions_file", str(captions_file)], capture_output=True,
                      text=True, cwd=REPO, env=env, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert (out_dir / "sample_grid.png").stat().st_size > 500
  assert (out_dir / "attention_001.png").stat().st_size > 500
  if source == "saved_model":  # a bad caption: one error line, exit status 2, no traceback
    # (the folder, holding the binary's own pictures now, passes the out_dir check first)
    result = subprocess.run(base + ["--captions", "purple elephants"], capture_output=True,
                            text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 2
    assert [l for l in result.stderr.splitlines() if l.strip()] == [
        "error: caption 'purple elephants': no word is in the vocabulary (unknown: purple, "
        "elephants)"]


def test_export_refuses_to_replace_anything_but_an_export(run, tmp_path):
  """A mistyped --export_dir (a training run, a folder of the user's, a foreign SavedModel, a
  file) is refused before any work, and nothing in it or beside it is touched."""
  config, vocab, model = run
  targets = {"run": tmp_path / "a_run", "mine": tmp_path / "mine",
             "foreign SavedModel": tmp_path / "foreign", "file": tmp_path / "notes.txt"}
  targets["run"].mkdir()
  (targets["run"] / "config.json").write_text(config.to_json())
  (targets["run"] / "checkpoints").mkdir()
  (targets["run"] / "checkpoints" / "ckpt-500.index").write_bytes(b"weeks of training")
  targets["mine"].mkdir()
  (targets["mine"] / "thesis.tex").write_text("chapter 1")
  targets["foreign SavedModel"].mkdir()
  (targets["foreign SavedModel"] / "saved_model.pb").write_bytes(b"someone else's model")
  targets["file"].write_text("notes")
  before = sorted(str(p) for p in tmp_path.rglob("*"))
  for name, target in targets.items():
    with pytest.raises(errors.OutputDirError, match=f"refusing to replace --export_dir {target}"):
      export.export(model, vocab, config, str(target))
  assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no temp dirs left either
  assert (targets["run"] / "checkpoints" / "ckpt-500.index").read_bytes() == b"weeks of training"


def test_export_replaces_an_earlier_export(export_dir, tmp_path):
  path = pathlib.Path(export_dir)
  assert not (path / "variables" / "stale").exists()
  assert layout.is_export(export_dir)
  assert json.loads((path / layout.EXPORT_INFO).read_text())["beam_width"] == 2
  assert sorted(p.name for p in path.parent.iterdir()) == ["model"]  # no temp dirs left
  layout.check_export_replaceable(str(tmp_path))  # an empty folder may be used too


@pytest.mark.parametrize("contents", [{}, {"saved_model.pb": b"x"}, {"text2pixel.json": b"{}"}])
def test_loading_something_that_is_not_an_export_is_a_clear_error(tmp_path, contents):
  for name, data in contents.items():
    (tmp_path / name).write_bytes(data)
  with pytest.raises(errors.ModelFileError, match="is not a text2pixel export"):
    export.LoadedModel(str(tmp_path))
