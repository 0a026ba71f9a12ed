"""The operator API key (``X-API-Key``) that guards everything of a caller's: records, audio.

With no ``SWITCHBOARD_API_KEY`` configured nothing is served (401): call data is never open.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Header, HTTPException

from switchboard.settings import Settings

API_KEY_HEADER = "X-API-Key"


def api_key_required(settings: Settings) -> list[Any]:
    """Route or router ``dependencies`` refusing requests without the right ``X-API-Key``."""

    def check(x_api_key: str | None = Header(None, alias=API_KEY_HEADER)) -> None:
        expected = settings.api_key.get_secret_value() if settings.api_key else ""
        if not expected:  # unset, or set to an empty string
            raise HTTPException(
                status_code=401, detail="call records need SWITCHBOARD_API_KEY set on the server"
            )
        if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong X-API-Key")

    return [Depends(check)]
