"""anymodal on langchain-core: message conversion, a chat model, tools, ready pipelines and an agent loop."""
