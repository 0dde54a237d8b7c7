"""A chatbot with a system prompt and memory of the conversation.

The memory is the conversation itself: every turn is appended to the message list, and
the whole list is rendered with the model's chat template for each reply. When the
rendered conversation no longer fits the context (minus room for the reply), the oldest
user/assistant turns are dropped; the system prompt always stays.

    python examples/recipes/chatbot.py --system "You are a friendly travel guide."
    python examples/recipes/chatbot.py --say "My name is Ada." --say "What is my name?"

Interactive by default (an empty line quits); with `--say` it sends those messages in
order and prints each reply. The same conversation through the server:
`zenlm serve smollm2-135m-instruct` and POST the growing `messages` list to
/v1/chat/completions (the playground at http://127.0.0.1:8000/ does exactly that).
"""

from __future__ import annotations

import argparse

import zenlm


class Chat:
    """A conversation with memory, trimmed to the model's context."""

    def __init__(self, lm: zenlm.LM, system: str, reply_tokens: int = 128) -> None:
        self.lm, self.reply_tokens = lm, reply_tokens
        self.messages = [{"role": "system", "content": system}]

    def fits(self) -> bool:
        """Whether the rendered conversation leaves room for a reply."""
        return len(self.lm.encode_chat(self.messages)) + self.reply_tokens <= \
            self.lm.config.context_length

    def say(self, text: str) -> str:
        """Add the user's message, reply, and remember both."""
        self.messages.append({"role": "user", "content": text})
        while not self.fits() and len(self.messages) > 2:
            del self.messages[1:3]  # the oldest user turn and its reply
        reply = self.lm.chat(self.messages, max_new_tokens=self.reply_tokens, temperature=0)
        self.messages.append({"role": "assistant", "content": reply})
        return reply


def main(argv: list[str] | None = None) -> None:
    """Chat on the terminal, or send scripted messages."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--system", default="You are a helpful assistant. Answer briefly.")
    parser.add_argument("--say", action="append", default=None, help="a message (repeatable)")
    args = parser.parse_args(argv)

    chat = Chat(zenlm.load(args.model), args.system)
    if args.say:
        for text in args.say:
            print(f"> {text}\n{chat.say(text)}")
        return
    while text := input("> ").strip():
        print(chat.say(text))


if __name__ == "__main__":
    main()
