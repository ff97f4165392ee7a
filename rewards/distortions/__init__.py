"""Cognitive distortions (Beck/Burns) in a client's thoughts: the taxonomy and two detectors.

Both detectors share ``detect(texts) -> list[DistortionLabels]`` (several labels per thought, or none):

* :class:`EmbeddedDistortionDetector`: deterministic, CPU, MiniLM embeddings + one logistic head per
  distortion, thresholds calibrated on dev folds of ``data/train.jsonl``;
* :class:`LLMDistortionDetector`: any backend, prompted with the definitions of ``taxonomy.yaml``.

``rewards.factory.make_judge("distortions", spec)`` builds either. Importing this package loads no model.
"""

from ..lazy import lazy_attributes
from .labels import DistortionLabels
from .taxonomy import check_labels, distortion_labels, labels_in, load_taxonomy


__getattr__ = lazy_attributes(__name__, {"EmbeddedDistortionDetector": "embedded", "LLMDistortionDetector": "llm_detector"})


__all__ = [
    "DistortionLabels",
    "EmbeddedDistortionDetector",
    "LLMDistortionDetector",
    "check_labels",
    "distortion_labels",
    "labels_in",
    "load_taxonomy",
]
