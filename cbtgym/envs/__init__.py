from .cbt_session import OPENING, CBTSessionEnv
from .reward import PlaceholderReward, SessionReward, StepReward
from .vector import CBTSessionVectorEnv

__all__ = ["OPENING", "CBTSessionEnv", "CBTSessionVectorEnv", "PlaceholderReward", "SessionReward", "StepReward"]
