"""text2pixel: alignPixelRNN (attention-based autoregressive text-to-image) in TensorFlow/Keras."""

import os as _os
import warnings as _warnings

# TensorFlow's C++ start-up chatter (CUDA stubs on CPU machines) hides the binaries' own output.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_warnings.filterwarnings("ignore", message=r"[\s\S]*TensorFlow Addons \(TFA\) has ended")
