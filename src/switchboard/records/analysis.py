"""The post-call analysis: a summary of the call and a verdict on the agent's success criteria,
asked of the LLM the deployment already answers calls with (``SWITCHBOARD_RESPONDER``).

It runs after the call, before the record is saved (so the webhook carries it), with its own
timeout; a failure leaves the record without an analysis, logged and counted.
"""

from __future__ import annotations

import asyncio
import json

from loguru import logger
from pydantic import BaseModel, ValidationError

from switchboard.agent.config import AgentConfig
from switchboard.observability import metrics
from switchboard.records.models import CallAnalysis, StoredCall
from switchboard.settings import Settings

_MAX_TOKENS = 400
_INSTRUCTIONS = (
    'You review phone calls answered by an AI voice agent called "{agent}". Reply with one JSON '
    'object and nothing else: {{"summary": string, "success": true, false or null, "reasons": '
    "string}}. The summary is at most two sentences on what the caller wanted and what happened. "
    "{criteria}"
)


class _Verdict(BaseModel):
    summary: str | None = None
    success: bool | None = None
    reasons: str | None = None


def _criteria(agent: AgentConfig) -> str:
    assert agent.analysis is not None
    if not agent.analysis.success_criteria:
        return "There are no success criteria: set success to null."
    listed = "; ".join(agent.analysis.success_criteria)
    return f"success is true only if the call met every one of these criteria: {listed}. reasons says why."


def _transcript(call: StoredCall) -> str:
    lines = [f"{'Caller' if e.role == 'user' else 'Agent'}: {e.text}" for e in call.transcript]
    return "Transcript of the call:\n" + ("\n".join(lines) or "(nobody spoke)")


def parse_verdict(text: str, model: str) -> CallAnalysis:
    """The JSON object in the LLM's reply (models sometimes wrap it in prose or a code fence)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"no JSON object in the reply: {text[:120]!r}")
    verdict = _Verdict.model_validate(json.loads(text[start : end + 1]))
    return CallAnalysis(**verdict.model_dump(), model=model)


async def _ask(settings: Settings, system: str, user: str) -> tuple[str, str]:
    from switchboard.engines.llm import (
        DEFAULT_MODELS,
        shared_anthropic_client,
        shared_openai_client,
    )

    model = settings.llm_model or DEFAULT_MODELS[settings.responder]
    if settings.responder == "openai":
        assert settings.openai_api_key is not None
        client = shared_openai_client(settings, settings.openai_api_key.get_secret_value())
        response = await client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=_MAX_TOKENS,
        )
        return response.choices[0].message.content or "", model
    assert settings.anthropic_api_key is not None
    anthropic_client = shared_anthropic_client(
        settings, settings.anthropic_api_key.get_secret_value()
    )
    message = await anthropic_client.messages.create(
        model=model,
        system=system,
        messages=[{"role": "user", "content": user}],
        max_tokens=_MAX_TOKENS,
    )
    return "".join(getattr(block, "text", "") for block in message.content), model


def _configured(settings: Settings) -> bool:
    return (settings.responder == "openai" and settings.openai_api_key is not None) or (
        settings.responder == "anthropic" and settings.anthropic_api_key is not None
    )


async def analyse_call(
    settings: Settings, agent: AgentConfig, call: StoredCall
) -> CallAnalysis | None:
    """The call's analysis, or None when the agent asks for none, no LLM is set up, or it failed."""
    if agent.analysis is None:
        return None
    if not _configured(settings):
        metrics.CALL_ANALYSES.labels(result="skipped").inc()
        return None
    system = _INSTRUCTIONS.format(agent=agent.name, criteria=_criteria(agent))
    try:
        async with asyncio.timeout(settings.call_analysis_timeout_secs):
            text, model = await _ask(settings, system, _transcript(call))
        analysis = parse_verdict(text, model)
    except (TimeoutError, ValueError, ValidationError) as e:
        metrics.CALL_ANALYSES.labels(result="failed").inc()
        logger.warning(f"{call.call_id}: post-call analysis failed: {e}")
        return None
    except Exception as e:  # the provider SDKs raise their own error types
        metrics.CALL_ANALYSES.labels(result="failed").inc()
        logger.warning(f"{call.call_id}: post-call analysis failed: {type(e).__name__}: {e}")
        return None
    if not agent.analysis.summary:
        analysis.summary = None
    metrics.CALL_ANALYSES.labels(result="done").inc()
    return analysis
