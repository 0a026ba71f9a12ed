"""Local stand-ins for the cloud providers, close enough that Pipecat's services run against them.

``switchboard emulate deepgram|elevenlabs|llm --port P [--profile NAME]``; see docs/emulators.md.
"""

from switchboard.emulators.profiles import PROFILE_NAMES, load_profile

__all__ = ["PROFILE_NAMES", "load_profile"]
