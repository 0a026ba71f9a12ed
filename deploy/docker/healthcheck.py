#!/usr/bin/env python3
"""Docker HEALTHCHECK: is this process alive? Orchestrators answer /health/live, workers /health."""

import os
import sys
import urllib.error
import urllib.request

PORT = os.environ.get("SWITCHBOARD_PORT", "8080")


def ok(path: str) -> bool | None:
    """True/False for an answer, None when the path does not exist on this role."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError as e:
        return None if e.code == 404 else False
    except OSError:
        return False


result = ok("/health/live")
if result is None:  # a worker: /health is 200 once its models are loaded
    result = ok("/health")
sys.exit(0 if result else 1)
