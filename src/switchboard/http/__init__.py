"""What the orchestrator's and the workers' HTTP servers share: operator auth, body limits, serving."""
