"""One call's conversation: the Pipecat pipeline, its observers, end of turn and call control."""
