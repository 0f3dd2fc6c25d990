"""anymodal on langchain-core: message conversion, a chat model, one tool per capability, ready pipelines
and a tool-calling agent loop. See the Agents guide in README.md."""

from .chat_model import ChatAnyModal
from .convert import (message_to_response, message_to_turn, messages_to_conversation, response_to_message,
                      turn_to_message)
from .pipelines import Agent, agent, assistant, retrieval_chat, speech_assistant
from .tools import MediaStore, anymodal_tools

__all__ = ["Agent", "ChatAnyModal", "MediaStore", "agent", "anymodal_tools", "assistant", "message_to_response",
           "message_to_turn", "messages_to_conversation", "response_to_message", "retrieval_chat",
           "speech_assistant", "turn_to_message"]
