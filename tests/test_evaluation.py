"""Evaluation end to end on a real tiny run: every figure present, resumable retrieval."""

import json
import os

import numpy as np

from text2pixel import evaluation, generation, tfrecords


def test_evaluate_writes_every_figure_and_resumes(tiny_run_dir, mnist_captions_dir, tmp_path):
  generator = generation.Generator.open(tiny_run_dir)
  out_dir = str(tmp_path / "eval")
  results = evaluation.evaluate(generator, mnist_captions_dir, out_dir, num_captions=12, pool=16,
                                ssim_captions=4, ssim_samples=3, pairs_per_batch=32,
                                log=lambda *_: None)
  with open(os.path.join(out_dir, "results.json")) as f:
    saved = json.load(f)
  assert saved["bits_per_dim"]["bits_per_dim"] == results["bits_per_dim"]["bits_per_dim"]
  for key in ("log p(x|y)", "log p(x|y) - log p(x|empty)"):
    recall = saved["retrieval"][key]["recall"]
    assert set(recall) == {"1", "5", "10", "50"} and recall["50"] == 100.0  # pool of 16
    assert 1 <= saved["retrieval"][key]["median_rank"] <= 16
  assert -1 <= saved["ssim"]["mean"] <= 1 and saved["ssim"]["samples_per_caption"] == 3
  markdown = open(os.path.join(out_dir, "results.md"), encoding="utf-8").read()
  assert "| Model | R@1 | R@5 | R@10 | R@50 | Med r | SSI |" in markdown
  assert os.path.getsize(os.path.join(out_dir, "samples.png")) > 500

  # The retrieval scores are what the model says, pair by pair.
  test = evaluation.split_examples(mnist_captions_dir, "test", 8, 16, 16)
  scores = np.load(os.path.join(out_dir, "scores_conditional.npz"))["scores"]
  direct = generator.score_ids(test["ids"][:2], test["lengths"][:2], test["image"][:16])
  np.testing.assert_allclose(scores[:2], direct, rtol=1e-4)
  # bits/dim agrees with the per-pair log-likelihood
  ll = generator.log_likelihood(test["ids"][:16], test["lengths"][:16], test["image"][:16])
  np.testing.assert_allclose(np.diag(generator.score_ids(test["ids"][:3], test["lengths"][:3],
                                                         test["image"][:3])), ll[:3], rtol=1e-4)

  # An interrupted retrieval resumes at its first unfinished caption.
  cache = os.path.join(out_dir, "scores_conditional")
  saved_npz = dict(np.load(cache + ".npz"))
  np.savez(cache + ".npz", scores=saved_npz["scores"], done_rows=5, key=saved_npz["key"])
  messages = []
  again = evaluation.score_matrix(generator, test["ids"][:12], test["lengths"][:12],
                                  test["image"][:16], 32, cache, messages.append)
  assert any("resuming at caption 5/12" in m for m in messages)
  np.testing.assert_allclose(again, scores, rtol=1e-5)
