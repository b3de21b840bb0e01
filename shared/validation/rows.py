"""Checks on one parsed row: the chat conversation in `messages`.

`inspect_row` runs once per row of files of any size. Most rows are ordinary conversations, so a
quick path checks those with C-level passes (map, all, list comparison) and hands anything unusual
to the full message-by-message check, which alone decides what the findings are.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, NamedTuple

from shared.validation.codes import Code
from shared.validation.tokens import utf8_size

Issue = tuple[Code, str]

TOOL_ROLE = "tool"
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id"})
_SHOWN_CHARS = 40
_ROLE = itemgetter("role")
_CONTENT = itemgetter("content")


class RowFacts(NamedTuple):
    """What one row holds: its findings (None when clean) and what the statistics need.

    `fingerprint` identifies the conversation for duplicate and leakage checks: a hash of its first
    user message and its shape (message count, content and assistant sizes), which is far cheaper
    than hashing every message and tells real conversations apart just as well.
    """

    issues: list[Issue] | None
    messages: int = 0
    content_bytes: int = 0
    assistant_bytes: int = 0
    user_messages: int = 0
    assistant_messages: int = 0
    system_messages: int = 0
    tool_messages: int = 0
    fingerprint: int = 0


def shown(value: object) -> str:
    """A short, printable rendering of a value for a finding's message."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _add(issues: list[Issue] | None, code: Code, message: str) -> list[Issue]:
    if issues is None:
        return [(code, message)]
    issues.append((code, message))
    return issues


def _is_tool_call(message: dict[object, object], role: object) -> bool:
    # An assistant turn that only calls tools carries its payload in tool_calls, not content.
    return role == "assistant" and bool(message.get("tool_calls"))


def _check_keys(
    message: dict[object, object], index: int, role: object, issues: list[Issue] | None
) -> list[Issue] | None:
    unknown = [key for key in message if key not in MESSAGE_KEYS]
    if unknown:
        names = ", ".join(shown(key) for key in unknown[:3])
        issues = _add(issues, Code.MESSAGE_UNKNOWN_KEY, f"message {index} has unknown key(s) {names}")
    if role is None:
        issues = _add(issues, Code.ROLE_MISSING, f"message {index} has no role")
    if message.get("content") is None and not _is_tool_call(message, role):
        issues = _add(issues, Code.CONTENT_MISSING, f"message {index} ({shown(role)}) has no content")
    return issues


def inspect_row(row: object) -> RowFacts:
    """All row-level findings of one parsed row, and its sizes and role counts."""
    if type(row) is dict:
        messages = row.get("messages")
        if type(messages) is list:
            quick = ordinary_facts(messages)
            if quick is not None:
                count, content_bytes, assistant_bytes, systems, fingerprint = quick
                pairs = (count - systems) // 2
                return RowFacts(None, count, content_bytes, assistant_bytes, pairs, pairs, systems, 0, fingerprint)
    return inspect_messages(row)


def _alternating(count: int, system_first: bool) -> list[str]:
    patterns = _SYSTEM_FIRST if system_first else _USER_FIRST
    pattern = patterns.get(count)
    if pattern is None:
        pattern = ["system"] * system_first + ["user", "assistant"] * ((count - system_first) // 2)
        if count <= _PATTERNS_CACHED:
            patterns[count] = pattern
    return pattern


_USER_FIRST: dict[int, list[str]] = {}
_SYSTEM_FIRST: dict[int, list[str]] = {}
_PATTERNS_CACHED = 256

OrdinaryFacts = tuple[int, int, int, int, int]


def ordinary_facts(messages: list[Any]) -> OrdinaryFacts | None:
    """(messages, content bytes, assistant bytes, system messages, fingerprint) of a flawless conversation.

    Flawless: an optional system message, then user/assistant pairs, each message exactly
    {role, content} with text in it. Anything else gives None, and `inspect_messages` must judge it.
    """
    count = len(messages)
    try:
        # Exactly two keys each, and both role and content present: nothing else, nothing missing.
        if count < 2 or sum(map(len, messages)) != 2 * count:
            return None
        roles = list(map(_ROLE, messages))
        contents = list(map(_CONTENT, messages))
        # str methods through map raise TypeError for a content that is not a string.
        if not all(contents) or any(map(str.isspace, contents)):
            return None
        all_ascii = all(map(str.isascii, contents))
    except (KeyError, TypeError):
        return None
    system_first = roles[0] == "system"
    if (count - system_first) % 2 or roles != _alternating(count, system_first):
        return None
    sizes = list(map(len, contents)) if all_ascii else list(map(utf8_size, contents))
    content_bytes = sum(sizes)
    assistant_bytes = sum(sizes[system_first + 1 :: 2])
    fingerprint = hash((contents[system_first], count, content_bytes, assistant_bytes))
    return count, content_bytes, assistant_bytes, int(system_first), fingerprint


def inspect_messages(row: object) -> RowFacts:
    """The full check, message by message: every finding of the row, whatever shape it has."""
    if type(row) is not dict:
        return RowFacts([(Code.ROW_NOT_OBJECT, f"row is a JSON {json_type(row)}, not an object")])
    messages = row.get("messages")
    if type(messages) is not list:
        if "messages" not in row:
            return RowFacts([(Code.MESSAGES_MISSING, "row has no `messages` key")])
        return RowFacts([(Code.MESSAGES_NOT_LIST, f"`messages` is a JSON {json_type(messages)}, not an array")])
    count = len(messages)
    if count < 2:
        return RowFacts([(Code.TOO_FEW_MESSAGES, f"`messages` has {count} message(s); at least 2 are needed")])

    tools_allowed = bool(row.get("tools"))
    issues: list[Issue] | None = None
    first_user: str | None = None
    content_bytes = assistant_bytes = users = assistants = systems = tools = 0
    previous: object = None
    for index, message in enumerate(messages):
        if type(message) is not dict:
            issues = _add(issues, Code.MESSAGE_NOT_OBJECT, f"message {index} is a JSON {json_type(message)}")
            previous = None
            continue
        role = message.get("role")
        content = message.get("content")
        if len(message) != 2 or role is None or content is None:
            issues = _check_keys(message, index, role, issues)
        size = 0
        if type(content) is str:
            if (not content or content.isspace()) and not _is_tool_call(message, role):
                issues = _add(issues, Code.CONTENT_EMPTY, f"message {index} ({shown(role)}) has empty content")
            size = len(content) if content.isascii() else utf8_size(content)
            content_bytes += size
            if first_user is None and role == "user":
                first_user = content
        elif content is not None:
            issues = _add(
                issues,
                Code.CONTENT_NOT_STRING,
                f"message {index} ({shown(role)}) content is a JSON {json_type(content)}",
            )

        if role == "assistant":
            assistants += 1
            assistant_bytes += size
        elif role == "user":
            users += 1
        elif role == "system":
            systems += 1
            if index:
                issues = _add(issues, Code.SYSTEM_NOT_FIRST, f"system message at position {index}, not first")
        elif role == TOOL_ROLE:
            tools += 1
            if not tools_allowed:
                issues = _add(issues, Code.ROLE_UNKNOWN, f"message {index} has role 'tool' but the row has no `tools`")
        elif role is not None:
            issues = _add(issues, Code.ROLE_UNKNOWN, f"message {index} has unknown role {shown(role)}")
        if role == previous and role is not None and role != TOOL_ROLE:
            issues = _add(issues, Code.ROLE_REPEATED, f"messages {index - 1} and {index} are both from {shown(role)}")
        previous = role

    if not assistants:
        issues = _add(issues, Code.NO_ASSISTANT_MESSAGE, "no assistant message")
    elif previous != "assistant":
        issues = _add(issues, Code.LAST_NOT_ASSISTANT, f"last message is from {shown(previous)}, not the assistant")
    fingerprint = hash((first_user, count, content_bytes, assistant_bytes))
    return RowFacts(issues, count, content_bytes, assistant_bytes, users, assistants, systems, tools, fingerprint)
