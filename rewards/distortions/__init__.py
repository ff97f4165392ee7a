"""Cognitive distortions (Beck/Burns) in a client's thoughts: the taxonomy and two detectors.

Both detectors share ``detect(texts) -> list[DistortionLabels]`` (several labels per thought, or none):

* :class:`EmbeddedDistortionDetector`: deterministic, CPU, MiniLM embeddings + one logistic head per
  distortion, thresholds calibrated on dev folds of ``data/train.jsonl``;
* :class:`LLMDistortionDetector`: any backend, prompted with the definitions of ``taxonomy.yaml``.

``rewards.factory.make_judge("distortions", spec)`` builds either. Importing this package loads no model.
"""

from .labels import DistortionLabels
from .taxonomy import check_labels, distortion_labels, labels_in, load_taxonomy


def __getattr__(name: str):
    # The detectors are imported on first use so that `import rewards.distortions` stays cheap.
    if name == "EmbeddedDistortionDetector":
        from .embedded import EmbeddedDistortionDetector

        return EmbeddedDistortionDetector
    if name == "LLMDistortionDetector":
        from .llm_detector import LLMDistortionDetector

        return LLMDistortionDetector
    raise AttributeError(f"module 'rewards.distortions' has no attribute {name!r}")


__all__ = [
    "DistortionLabels",
    "EmbeddedDistortionDetector",
    "LLMDistortionDetector",
    "check_labels",
    "distortion_labels",
    "labels_in",
    "load_taxonomy",
]
