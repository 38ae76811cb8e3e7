"""``popsim serve``: popsim's LanguageModel behind an OpenAI-compatible HTTP API (see :mod:`popsim.serve.app`)."""

from popsim.serve.app import create_app, serve
from popsim.serve.batcher import MicroBatcher
from popsim.serve.protocol import ServeLimits

__all__ = ["create_app", "serve", "MicroBatcher", "ServeLimits"]
