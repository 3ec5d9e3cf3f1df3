"""Models as the pipeline sees them: a backend plus its pre- and post-processing."""

from edge.perception.detector import Detector
from edge.perception.pose import PoseEstimator

__all__ = ["Detector", "PoseEstimator"]
