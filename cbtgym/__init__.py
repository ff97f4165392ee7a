"""cbtgym: align LLM therapists with CBT through preference learning and RL.

``gym.make("CBTSession-v0")`` gives one session with a simulated patient;
``gym.make_vec("CBTSession-v0", num_envs=N, vectorization_mode="vector_entry_point")``
gives N sessions stepped with one batched model call per step;
``gym.make("CBTCourse-v0", sessions=N)`` gives a course of N sessions with one patient who remembers them.
"""

import os as _os

_environ_before = dict(_os.environ)
import gymnasium  # noqa: E402  (it sets PYGAME_HIDE_SUPPORT_PROMPT when first imported)

from .transcript import Transcript, Turn  # noqa: E402

# Importing cbtgym changes no environment variable, not even through its dependencies: a process that
# imports a library keeps the environment it set up (variables a model load needs are set at that load).
for _k in set(_os.environ) - set(_environ_before):
    del _os.environ[_k]
for _k, _v in _environ_before.items():
    if _os.environ.get(_k) != _v:
        _os.environ[_k] = _v
del _environ_before, _k, _v

__version__ = "0.1.0"

gymnasium.register(
    id="CBTSession-v0",
    entry_point="cbtgym.envs.cbt_session:CBTSessionEnv",
    vector_entry_point="cbtgym.envs.vector:CBTSessionVectorEnv",
)

gymnasium.register(id="CBTCourse-v0", entry_point="cbtgym.envs.cbt_course:CBTCourseEnv")

__all__ = ["Transcript", "Turn", "__version__"]
