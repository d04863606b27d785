"""The MS-COCO builder of datasets/coco.py as a tensorflow_datasets builder (manual download).

Same images, captions and splits as ``text2pixel-build-coco`` (it calls the same reading,
cleaning and splitting functions), written by TFDS instead of our own shards. TFDS cannot know
our vocabulary, so examples hold the cleaned caption text rather than token ids.

  import datasets.coco_tfds  # registers "text2pixel_coco"
  builder = tfds.builder("text2pixel_coco/2014", data_dir="workspace/tfds")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir="workspace/coco_raw", try_download_gcs=False))
  train = builder.as_dataset(split="train")
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterator, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from datasets import coco

_DESCRIPTION = """MS-COCO captions for text2pixel: 32x32 grayscale images, the first five captions
of each image with colour words removed, one example per (image, caption). Validation images are
a seeded choice of train images; test is the official val set."""


@dataclasses.dataclass(eq=False)
class Text2pixelCocoConfig(tfds.core.BuilderConfig):
  year: str = "2014"
  center_crop: bool = False
  num_validation_images: int = 4000
  max_caption_len: int = 24
  seed: int = 0


class Text2pixelCoco(tfds.core.GeneratorBasedBuilder):
  """MS-COCO 2014/2017 captions, reduced to 32x32 grayscale as in alignDRAW / alignPixelRNN."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      Text2pixelCocoConfig(name="2014", year="2014", description="COCO 2014, plain resize"),
      Text2pixelCocoConfig(name="2014_center_crop", year="2014", center_crop=True,
                           description="COCO 2014, centred square crop before the resize"),
      Text2pixelCocoConfig(name="2017", year="2017", description="COCO 2017, plain resize"),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the official MS-COCO release from https://cocodataset.org/#download and unpack it
  into the manual directory (DownloadConfig(manual_dir=...), by default
  <data_dir>/downloads/manual/) so that it holds, for 2014 (2017 likewise):
    annotations/captions_train2014.json   (from annotations_trainval2014.zip)
    annotations/captions_val2014.json
    train2014/*.jpg                        (from train2014.zip)
    val2014/*.jpg                          (from val2014.zip)
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(coco.SIDE, coco.SIDE, 1)),
            "caption": tfds.features.Text(),
            "raw_caption": tfds.features.Text(),
            "image_id": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("caption", "image"),
        homepage="https://cocodataset.org",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    config = self.builder_config
    splits, _ = coco.load_and_split(str(dl_manager.manual_dir), config.year,
                                    config.max_caption_len, config.num_validation_images,
                                    config.seed)
    return {name: self._generate_examples(entries) for name, entries in splits.items()
            if entries}

  def _generate_examples(self, entries: Sequence[coco.ImageEntry]
                         ) -> Iterator[Tuple[str, Dict]]:
    for entry in entries:
      try:
        image = coco.read_image(entry.path, self.builder_config.center_crop)
      except coco.ImageError as error:
        logging.warning("skipping COCO image %d: %s", entry.image_id, error)
        continue
      for k, caption in enumerate(entry.captions):
        yield f"{entry.image_id}-{k}", {"image": image[:, :, None], "caption": caption.text,
                                        "raw_caption": caption.raw, "image_id": entry.image_id}
