"""Evaluation end to end on a real tiny run: every figure against its own independent
computation (the model's log-likelihoods pair by pair, numpy ranks, bits/dim from the logits,
the SSIM formula), and resumable retrieval."""

import json
import math
import os

import numpy as np
import pytest

import numpy_references as reference
from text2pixel import evaluation, generation, text as text_lib, tfrecords, training

NUM_CAPTIONS, POOL = 12, 16


def test_evaluate_matches_independent_computations_and_resumes(tiny_run_dir, mnist_captions_dir,
                                                                tmp_path):
  generator = generation.Generator.open(tiny_run_dir)
  out_dir = str(tmp_path / "eval")
  results = evaluation.evaluate(generator, mnist_captions_dir, out_dir,
                                num_captions=NUM_CAPTIONS, pool=POOL, ssim_captions=4,
                                ssim_samples=3, pairs_per_batch=32, log=lambda *_: None)

  # The same run loaded again, scored pair by pair with the model's own log p(x | y).
  config, vocab, model = training.load_run(tiny_run_dir)
  test = tfrecords.load_split(mnist_captions_dir, "test", config.image_side, limit=POOL)
  images = test["image"]
  ids = np.zeros((POOL, config.max_caption_len), np.int32)
  for i, caption in enumerate(test["caption_ids"]):
    ids[i, :len(caption)] = caption
  lengths = np.array([len(c) for c in test["caption_ids"]], np.int32)
  pair = lambda i: model.log_likelihood(np.repeat(ids[i:i + 1], POOL, 0),
                                        np.repeat(lengths[i:i + 1], POOL), images).numpy()
  scores = np.stack([pair(i) for i in range(NUM_CAPTIONS)])
  empty_ids = np.zeros((POOL, config.max_caption_len), np.int32)
  empty_ids[:, 0] = text_lib.EOS_ID
  empty = model.log_likelihood(empty_ids, np.ones(POOL, np.int32), images).numpy()
  for name, matrix in (("log p(x|y)", scores),
                       ("log p(x|y) - log p(x|empty)", scores - empty[None])):
    ranks = reference.rank_of_own_image(matrix)
    reported = results["retrieval"][name]
    np.testing.assert_array_equal(reported["ranks"], ranks, err_msg=name)
    for k in (1, 5, 10):
      assert reported["recall"][k] == pytest.approx(100 * np.mean(ranks <= k)), (name, k)
    assert reported["median_rank"] == np.median(ranks), name
  assert len(set(reference.rank_of_own_image(scores))) > 2  # ranks that tell captions apart

  # bits/dim: -mean log2 p of every pixel of the pairs evaluated, from the logits in numpy.
  count = results["bits_per_dim"]["examples"]
  assert count == POOL
  logits = model(dict(caption_ids=ids[:count], caption_len=lengths[:count],
                      image=images[:count])).numpy()
  assert results["bits_per_dim"]["bits_per_dim"] == pytest.approx(
      reference.bits_per_dim(logits, images[:count]), rel=1e-5)
  assert results["bits_per_dim"]["nll_nats_per_image"] == pytest.approx(
      reference.bits_per_dim(logits, images[:count]) * math.log(2) * config.num_pixels,
      rel=1e-5)

  # SSIM: the samples it saved, against their captions' images, by the formula (8x8 window).
  samples = np.load(os.path.join(out_dir, "ssim_samples.npy"))
  assert samples.shape == (4, 3, 8, 8) and samples.dtype == np.uint8
  values = [reference.ssim(s, images[i], size=8) for i in range(4) for s in samples[i]]
  assert results["ssim"]["mean"] == pytest.approx(np.mean(values), abs=1e-4)
  assert results["ssim"]["std"] == pytest.approx(np.std(values), abs=1e-4)

  # What is written is what was computed.
  with open(os.path.join(out_dir, "results.json")) as f:
    saved = json.load(f)
  assert saved["bits_per_dim"] == results["bits_per_dim"]
  assert saved["retrieval"]["log p(x|y)"]["recall"]["5"] == \
      results["retrieval"]["log p(x|y)"]["recall"][5]
  markdown = open(os.path.join(out_dir, "results.md"), encoding="utf-8").read()
  assert "| Model | R@1 | R@5 | R@10 | R@50 | Med r | SSI |" in markdown
  assert os.path.getsize(os.path.join(out_dir, "samples.png")) > 500

  # An interrupted retrieval resumes at its first unfinished caption.
  test = evaluation.split_examples(mnist_captions_dir, "test", 8, POOL, 16)
  cache = os.path.join(out_dir, "scores_conditional")
  saved_npz = dict(np.load(cache + ".npz"))
  np.testing.assert_allclose(saved_npz["scores"], scores, rtol=1e-5)
  np.savez(cache + ".npz", scores=saved_npz["scores"], done_rows=5, key=saved_npz["key"])
  messages = []
  again = evaluation.score_matrix(generator, test["ids"][:NUM_CAPTIONS],
                                  test["lengths"][:NUM_CAPTIONS], test["image"][:POOL], 32, cache,
                                  messages.append)
  assert any("resuming at caption 5/12" in m for m in messages)
  np.testing.assert_allclose(again, scores, rtol=1e-5)
