"""Data written for this project (general chat prompts, capability tasks) and loaders for
user-supplied prompt sets."""

from character.data.chat_prompts import ChatPrompt, load_chat_prompts

__all__ = ["ChatPrompt", "load_chat_prompts"]
