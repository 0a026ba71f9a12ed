"""The conversational agent: its config, the scripted responder and the Pipecat pipeline."""
