from .cbt_course import CBTCourseEnv
from .cbt_session import OPENING, CBTSessionEnv
from .reward import PlaceholderReward, SessionReward, StepReward
from .sessions import EpisodeSpec, Session, SessionBatch, StepResult
from .vector import CBTSessionVectorEnv

__all__ = [
    "OPENING", "CBTCourseEnv", "CBTSessionEnv", "CBTSessionVectorEnv", "EpisodeSpec", "PlaceholderReward", "Session", "SessionBatch",
    "SessionReward", "StepResult", "StepReward",
]
