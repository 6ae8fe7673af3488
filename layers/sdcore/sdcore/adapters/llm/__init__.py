"""The prompt assistant's chat models (sdcore.ports.assistant.ChatModel): Amazon Bedrock's
Converse API and any OpenAI-compatible chat endpoint, both streamed, with bounded retries."""
