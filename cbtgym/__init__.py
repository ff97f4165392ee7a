"""cbtgym: align LLM therapists with CBT through preference learning and RL.

``gym.make("CBTSession-v0")`` gives one session with a simulated patient;
``gym.make_vec("CBTSession-v0", num_envs=N, vectorization_mode="vector_entry_point")``
gives N sessions stepped with one batched model call per step.
"""

import gymnasium

from .transcript import Transcript, Turn

__version__ = "0.1.0"

gymnasium.register(
    id="CBTSession-v0",
    entry_point="cbtgym.envs.cbt_session:CBTSessionEnv",
    vector_entry_point="cbtgym.envs.vector:CBTSessionVectorEnv",
)

__all__ = ["Transcript", "Turn", "__version__"]
