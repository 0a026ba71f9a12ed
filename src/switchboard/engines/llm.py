"""LLM responders: Pipecat's OpenAI-compatible and Anthropic services, one shared client per process.

Both speak the frames the scripted responder speaks (``LLMFullResponseStartFrame``,
``LLMTextFrame``..., ``LLMFullResponseEndFrame``) and stream tokens; the TTS service after them
aggregates the tokens into sentences, so the first sentence is spoken while the rest is still
being generated. Conversation memory is the call's ``LLMContext``, which the user and assistant
aggregators fill turn by turn; the agent's ``system_prompt`` is the service's system instruction.
Both get the call-control tools (``end_call``, ``transfer_call``) of :mod:`engines.call_tools`.
"""

from __future__ import annotations

import anthropic
import openai
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.http import connection_limits

from switchboard.agent.config import AgentConfig
from switchboard.engines.call_tools import CallToolsMixin
from switchboard.engines.shared_clients import loop_key, shared_client, tls_context
from switchboard.errors import EngineError
from switchboard.settings import Settings

DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly phone receptionist. Answer in one or two short spoken sentences, "
    "without lists, markdown or emoji."
)

# The read timeout bounds the wait for each streamed chunk; the first token is held to the
# tighter provider_response_timeout_secs by the call's FallbackSwitcher. Each SDK takes its own
# Timeout class (they bundle different HTTP clients).
_READ_TIMEOUT_SECS = 30.0


def shared_openai_client(settings: Settings, api_key: str) -> AsyncOpenAI:
    """The process's OpenAI client for this endpoint and key: keep-alive connections are reused
    across calls (one pool per event loop, which its connections are bound to)."""

    def build() -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=api_key,
            base_url=settings.llm_base_url,
            timeout=openai.Timeout(
                _READ_TIMEOUT_SECS, connect=settings.provider_connect_timeout_secs
            ),
            max_retries=settings.provider_retries,
            http_client=DefaultAsyncHttpxClient(
                verify=tls_context(),
                limits=connection_limits(max_keepalive_connections=100, max_connections=1000),
            ),
        )

    key = ("openai", loop_key(), settings.llm_base_url, api_key)
    return shared_client(key, build, AsyncOpenAI.close)


def shared_anthropic_client(settings: Settings, api_key: str) -> AsyncAnthropic:
    """The process's Anthropic client for this endpoint and key (one per event loop)."""

    def build() -> AsyncAnthropic:
        return AsyncAnthropic(
            api_key=api_key,
            base_url=settings.llm_base_url,
            timeout=anthropic.Timeout(
                _READ_TIMEOUT_SECS, connect=settings.provider_connect_timeout_secs
            ),
            max_retries=settings.provider_retries,
            http_client=anthropic.DefaultAsyncHttpxClient(verify=tls_context()),
        )

    key = ("anthropic", loop_key(), settings.llm_base_url, api_key)
    return shared_client(key, build, AsyncAnthropic.close)


class SwitchboardOpenAILLMService(CallToolsMixin, OpenAILLMService):
    """OpenAI-compatible chat completions over the process's shared client, with call tools."""

    def __init__(self, *, shared_client: AsyncOpenAI, **kwargs):
        self._shared_client = shared_client
        super().__init__(**kwargs)

    def create_client(self, *args, **kwargs):
        return self._shared_client


def _tool_secret(settings: Settings) -> str | None:
    secret = settings.tool_signing_secret
    return secret.get_secret_value() if secret else None


def _system_prompt(agent: AgentConfig) -> str:
    return agent.system_prompt or DEFAULT_SYSTEM_PROMPT


class SwitchboardAnthropicLLMService(CallToolsMixin, AnthropicLLMService):
    """Anthropic messages, with call tools."""


def build_openai_llm(settings: Settings, agent: AgentConfig) -> SwitchboardOpenAILLMService:
    if settings.openai_api_key is None:
        raise EngineError("responder 'openai' needs OPENAI_API_KEY")
    api_key = settings.openai_api_key.get_secret_value()
    llm = SwitchboardOpenAILLMService(
        shared_client=shared_openai_client(settings, api_key),
        api_key=api_key,
        settings=OpenAILLMService.Settings(
            model=settings.llm_model or DEFAULT_MODELS["openai"],
            system_instruction=_system_prompt(agent),
            max_tokens=settings.llm_max_tokens,
        ),
    )
    llm.install_call_tools(agent, _tool_secret(settings))
    return llm


def build_anthropic_llm(settings: Settings, agent: AgentConfig) -> AnthropicLLMService:
    if settings.anthropic_api_key is None:
        raise EngineError("responder 'anthropic' needs ANTHROPIC_API_KEY")
    api_key = settings.anthropic_api_key.get_secret_value()
    llm = SwitchboardAnthropicLLMService(
        api_key=api_key,
        client=shared_anthropic_client(settings, api_key),
        settings=AnthropicLLMService.Settings(
            model=settings.llm_model or DEFAULT_MODELS["anthropic"],
            system_instruction=_system_prompt(agent),
            max_tokens=settings.llm_max_tokens,
        ),
    )
    llm.install_call_tools(agent, _tool_secret(settings))
    return llm
