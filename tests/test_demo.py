"""text2pixel-demo, driven in headless Chromium like a person would use it.

The demo binary serves the tiny trained run on a free loopback port; Playwright drives Debian's
chromium (scripts/install_chromium.sh installs it in the test set-up) and saves a screenshot in
the test's tmp dir. The tiny model draws 8x8 images, which the digit judge cannot read, so the
judge's verdicts are checked apart, with the shipped judge on builder images of real MNIST digits.
"""

import math
import os
import shutil

import numpy as np
import pytest

import demo_browser
from datasets import mnist_captions
from text2pixel import demo as demo_lib, judge as judge_lib

# Its module-scoped fixtures are built once: every test of this file runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("demo")

CAPTION = "the digit 3 is on the left of the digit 5"
HELD_OUT = "the digit 5 is on the left of the digit 3"
NO_KNOWN_WORD = "purple elephants"
SOME_UNKNOWN = "the digit 3 is purple elephants"


@pytest.fixture(scope="module")
def demo(tiny_run_dir):
  pytest.importorskip("gradio", reason="the [demo] extra (Gradio) is not installed")
  pytest.importorskip("playwright", reason="playwright (the [test] extra) is not installed")
  if not shutil.which(demo_browser.CHROMIUM):
    pytest.skip(f"no Chromium at {demo_browser.CHROMIUM} (bash scripts/install_chromium.sh "
                "installs Debian's chromium)")
  server = demo_browser.Demo(["--run_dir", tiny_run_dir])
  yield server
  server.stop()


def test_demo_page_in_a_real_browser(demo, tiny_run_dir, tmp_path):
  from playwright.sync_api import expect, sync_playwright
  from text2pixel import config as config_lib, text as text_lib
  config = config_lib.load(os.path.join(tiny_run_dir, "config.json"))
  assert demo.url.startswith("http://127.0.0.1:")
  with sync_playwright() as playwright:
    browser = demo_browser.launch_browser(playwright)
    page = demo_browser.open_page(browser, demo.url)

    # What the form offers: the vocabulary, and examples with the held-out ones marked.
    expect(page.get_by_text("No digit judge: it reads 32x32 images and this model draws 8x8.")
           ).to_be_visible()
    expect(page.locator("#vocabulary")).to_contain_text("digit")
    expect(page.get_by_text(HELD_OUT + "   [held out]")).to_be_visible()
    expect(page.get_by_text(CAPTION, exact=True)).to_be_visible()  # an example, not held out

    # Two tabs ask at once: one generation runs at a time, the other waits and is not lost.
    other = demo_browser.open_page(browser, demo.url)
    demo_browser.submit(page, CAPTION, "sample", num_samples=4, seed=3)
    demo_browser.submit(other, HELD_OUT, "sample", num_samples=4, seed=4)
    status = demo_browser.wait_for_status(page, CAPTION)
    assert status.startswith("sample: 4 image(s)"), status
    expect(demo_browser.sample_images(page)).to_have_count(4)
    expect(page.locator("#about")).to_contain_text("3 left, 5 right (a combination seen")
    # Each sample's log-likelihood, and the same in bits per pixel.
    log_p = demo_browser.column(page, 1)
    bits = demo_browser.column(page, 2)
    assert len(log_p) == 4 and all(lp < 0 for lp in log_p), log_p
    for lp, b in zip(log_p, bits):
      assert abs(-lp / (math.log(2) * config.num_pixels) - b) < 2e-3, (lp, b)
    # The attention picture: the image, then one heat map per word of the caption and <eos>.
    tile = config.image_side * (demo_lib.ATTENTION_SIDE // config.image_side)
    words = len(text_lib.tokenize(CAPTION)) + 1
    expect(page.locator("#attention img")).to_be_visible()
    width, _ = demo_browser.attention_size(page)
    assert width == (words + 1) * (tile + 2) + 2, width
    # Choosing another sample shows its picture.
    first = page.locator("#attention img").get_attribute("src")
    demo_browser.sample_images(page).nth(2).click()
    expect(page.locator("#choice").get_by_label("3", exact=True)).to_be_checked()
    expect(page.locator("#attention img")).not_to_have_attribute("src", first)
    demo_browser.wait_for_pictures(page)
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
    assert (tmp_path / "demo.png").stat().st_size > 10_000

    assert demo_browser.wait_for_status(other, HELD_OUT).startswith("sample: 4 image(s)")
    expect(demo_browser.sample_images(other)).to_have_count(4)
    expect(other.locator("#about")).to_contain_text("HELD OUT")

    # A caption with no known word: the CLI's message on the page, no trace, outputs cleared.
    demo_browser.submit(page, NO_KNOWN_WORD)
    message = demo_browser.wait_for_status(
        page, "error: caption 'purple elephants': no word is in the vocabulary (unknown: "
              "purple, elephants)")
    assert "Traceback" not in page.content() and message.count("\n") == 0, message
    expect(demo_browser.sample_images(page)).to_have_count(0)
    # Some unknown words only warn; and the page still works after the error.
    demo_browser.submit(page, SOME_UNKNOWN, "sample", num_samples=4, seed=5)
    status = demo_browser.wait_for_status(page, SOME_UNKNOWN)
    assert status.startswith("sample: 4 image(s)"), status
    assert "warning: caption 'the digit 3 is purple elephants': unknown words purple, " \
           "elephants become <unk>" in status, status
    expect(demo_browser.sample_images(page)).to_have_count(4)
    # The temperature applies to sampling only (greedy and beam would each cost a trace here;
    # tests/test_sampling_export.py covers them through the same Generator).
    page.locator("#method").get_by_label("greedy", exact=True).check()
    expect(page.locator("#temperature")).to_be_hidden()
    browser.close()


# Only where no trained judge is at hand: a reduced one (~10 s on an idle core, ~97%).
SMALL_JUDGE = judge_lib.JudgeSettings(num_train_digits=10_000, crops_per_digit=1,
                                      num_test_digits=1_000, epochs=2, batch_size=32)


def test_judge_verdicts_name_what_the_judge_saw(tmp_path, mnist_arrays):
  # The judge the page uses (shipped, loads in a second), else a reduced one trained here.
  trained = demo_lib.trained_judge_dir()
  judge = judge_lib.load_or_train_judge(
      trained or str(tmp_path), None if trained else SMALL_JUDGE,
      min_accuracy=judge_lib.MIN_ACCURACY if trained else 0.9, mnist_arrays=mnist_arrays,
      log=lambda *_: None)
  examples = mnist_captions.generate(mnist_arrays["test_images"], mnist_arrays["test_labels"],
                                     (0, 10_000), 48, np.random.default_rng(5), held_out=False,
                                     source_name="mnist-test")
  correct = mirrored_checks = 0
  for example in examples:
    caption = mnist_captions.caption_for(example["relation"], example["digits"])
    parsed = judge_lib.mnist_caption(caption.upper() + " ")  # as the model tokenizes it
    assert (parsed.relation, parsed.digits) == (example["relation"], tuple(example["digits"]))
    [verdict] = judge_lib.judge_verdicts(judge, parsed, example["image"][None])
    [expected] = judge_lib.judge_samples(judge, example["image"][None], [parsed.relation],
                                         [parsed.digits])
    assert verdict.endswith(": ✓") == bool(expected), (caption, verdict)
    correct += bool(expected)
    if expected and example["relation"] == "left" and len(set(example["digits"])) == 2:
      a, b = example["digits"]
      assert verdict == f"{a} left, {b} right: ✓"
      # The same image under the mirrored caption: each place holds the other digit.
      mirrored = judge_lib.mnist_caption(mnist_captions.caption_for("right", (a, b)))
      assert judge_lib.judge_verdicts(judge, mirrored, example["image"][None]) == [
          f"{a} right, {b} left: ✗ (reads {b}, {a})"]
      mirrored_checks += 1
  assert correct >= 0.85 * len(examples) and mirrored_checks, (correct, mirrored_checks)
  blank = np.zeros((1, 32, 32), np.uint8)
  corner = judge_lib.mnist_caption("the digit 7 is at the top left of the image")
  assert judge_lib.judge_verdicts(judge, corner, blank) == ["7 top left: ✗ (reads blank)"]
  assert judge_lib.mnist_caption("the digit 7 is at the top of the image") is None
  assert judge_lib.mnist_caption("the digit 5 is on the left of the digit 3").held_out
