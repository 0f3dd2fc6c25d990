"""The OpenAI-compatible server (`anymodal serve`): FastAPI app, batching scheduler, wire format."""

from .app import ServerSettings, create_app
from .loading import load_model

__all__ = ["ServerSettings", "create_app", "load_model"]
