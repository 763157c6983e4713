"""A model's own chat template, rendered the way its tokenizer would, with tool schemas.

The template is the Jinja source shipped with the model (the GGUF's `tokenizer.chat_template`
on the embedded engine, the tokenizer's `chat_template` on vLLM), rendered in a sandboxed Jinja
environment with the helpers transformers gives templates (`raise_exception`, `tojson`), so the
prompt is the one the model was trained on. jinja2 renders it (a dependency of
llama-cpp-python and transformers alike); nothing here reimplements a template.

Tools: a template that takes `tools` (Qwen2.5, Hermes, Llama 3.1...) renders them itself. One
that does not (SmolLM2's plain ChatML) gets the Hermes convention those models share: a
`<tools>` block of the OpenAI schemas appended to the system message, calls as
`<tool_call>{"name", "arguments"}</tool_call>` and results wrapped in `<tool_response>` tags.

Turn boundaries are found by rendering, not assumed: what the template writes after an
assistant message's content closes a turn, and a tool message is the difference between a
conversation rendered with and without it. Both are what the worker inserts (mask 0) between
the model's turns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

# the ChatML template, for models that ship none
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

HERMES_TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{schemas}\n</tools>\n\nFor each function call, return a json object with function name "
    "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')

_PROBE = "\x00perfbox-probe\x00"  # content no conversation contains


class TemplateError(ValueError):
    """The template cannot render this conversation; the message says why."""


def _environment() -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(f"the chat template refused the conversation: {message}")

    def tojson(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, ensure_ascii=False, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = tojson
    return env


@dataclass
class ChatFormat:
    """One model's template; render() is what the tokenizer's apply_chat_template returns."""

    template: str = CHATML
    bos_token: str = ""
    eos_token: str = ""
    _compiled: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from jinja2 import TemplateSyntaxError

        try:
            self._compiled = _environment().from_string(self.template)
        except TemplateSyntaxError as e:
            raise TemplateError(f"the model's chat template does not parse: {e}") from e

    @cached_property
    def renders_tools(self) -> bool:
        """The template takes a `tools` variable itself."""
        return "tools" in self.template

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The conversation as the model reads it; tools as OpenAI function schemas."""
        if tools and not self.renders_tools:
            messages = _with_hermes_tools(messages, tools)
            tools = None
        try:
            return str(self._compiled.render(
                messages=messages, tools=tools or None,
                add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
                eos_token=self.eos_token))
        except TemplateError:
            raise
        except Exception as e:  # a template's own runtime error (bad role order...)
            raise TemplateError(f"the chat template failed on this conversation: {e}") from e

    def render_segments(self, messages: list[dict[str, Any]],
                        tools: list[dict[str, Any]] | None = None) -> list[tuple[str, bool]]:
        """The rendered conversation as (text, is_content) segments: the template's own text,
        to tokenise with its markers, and each message's content, to tokenise as plain text
        (a tool output in the history, which a submission's prints reach, cannot open a
        turn). Raises TemplateError for a template that rewrites contents."""
        probes = [f"{_PROBE}{k}\x00" for k in range(len(messages))]
        probed = [{**m, "content": probe} for m, probe in zip(messages, probes)]
        rest = self.render(probed, tools)
        segments: list[tuple[str, bool]] = []
        for message, probe in zip(messages, probes):
            at = rest.find(probe)
            if at < 0 or rest.count(probe) != 1:
                raise TemplateError("the chat template rewrites or drops message contents, so "
                                    "they cannot be kept as plain text; send prompt_ids")
            segments += [(rest[:at], False), (str(message.get("content", "")), True)]
            rest = rest[at + len(probe):]
        return [seg for seg in segments + [(rest, False)] if seg[0]]

    @cached_property
    def assistant_end(self) -> str:
        """What the template writes after an assistant message's content (ChatML:
        `<|im_end|>\\n`): the worker inserts it when a turn ends at a tool call."""
        convo = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
        text = self.render(convo, add_generation_prompt=False)
        return text[text.index(_PROBE) + len(_PROBE):]

    def tool_turn(self, content: str) -> str:
        """A tool message and the opening of the next assistant turn, as the template renders
        them after an assistant turn (the assistant's own end not included)."""
        if not self.renders_tools:
            content = f"<tool_response>\n{content}\n</tool_response>"
        base = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
        before = self.render(base, add_generation_prompt=False)
        after = self.render(base + [{"role": "tool", "content": content}],
                            add_generation_prompt=True)
        if not after.startswith(before):
            raise TemplateError("the chat template rewrites earlier turns when a tool message "
                                "follows; the worker cannot insert tool output incrementally")
        return after[len(before):]

    def tool_response(self, content: str) -> str:
        """Ends the assistant turn that made the call, answers it, opens the next turn (the
        interface perfbox.inference.rollout inserts through)."""
        return self.assistant_end + self.tool_turn(content)

    @cached_property
    def tool_response_parts(self) -> tuple[str, str]:
        """(before, after) the content in tool_response(content): the template's own text,
        tokenised with its markers, while the content (a tool's output, which a submission's
        prints reach) is tokenised as plain text so it cannot open or close a turn."""
        whole = self.tool_response(_PROBE)
        at = whole.index(_PROBE)
        return whole[:at], whole[at + len(_PROBE):]

    @property
    def end(self) -> str:
        """The end-of-turn marker (the assistant end without trailing whitespace)."""
        return self.assistant_end.strip()


def _with_hermes_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    block = HERMES_TOOLS_PREAMBLE.format(
        schemas="\n".join(json.dumps(t, ensure_ascii=False) for t in tools))
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content', '')}\n\n{block}"
        return [first, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


class ToolTurnTemplate(Protocol):
    """What a rollout inserts a tool's output through (ChatFormat from a model's own chat
    template; the bundled workload's ChatML)."""

    @property
    def end(self) -> str:
        """The end-of-turn marker."""
        ...

    def tool_response(self, content: str) -> str:
        """Ends the calling turn, answers it with content, opens the next assistant turn."""
        ...

    @property
    def tool_response_parts(self) -> tuple[str, str]:
        """(before, after) the content in tool_response(content)."""
        ...


class Tokenizer(Protocol):
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        ...


def plain_insertion(tokenizer: Tokenizer, before: str, output: str, after: str
                    ) -> tuple[str, list[int]]:
    """A tool's output between the template's text, and its tokens: the template's parsed
    with their markers, the output as plain text (what a submission prints cannot end the
    tool turn or open another in the context the model is trained on)."""
    tokens = (tokenizer.tokenize(before) + tokenizer.tokenize(output, special=False)
              + tokenizer.tokenize(after))
    return before + output + after, tokens
