"""Sending queue messages: the one base64 helper and the sender port with its Azure adapter."""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import TYPE_CHECKING, Protocol

from shared.errors import MalformedMessageError
from shared.storage_connection import StorageConnection, as_storage_connection

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient

    from shared.messages import QueueMessage


def encode_queue_body(text: str) -> str:
    """Base64 of the UTF-8 text: what the Functions queue trigger expects (messageEncoding base64)."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_queue_body(body: str | bytes) -> str:
    """Inverse of `encode_queue_body`; raises `MalformedMessageError` for anything not base64 UTF-8."""
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise MalformedMessageError(f"queue message body is not base64-encoded UTF-8 ({exc}).") from None


class MessageSender(Protocol):
    """Puts a message on its queue, optionally invisible for `delay_seconds` (what bindings cannot do)."""

    def send(self, message: QueueMessage, *, delay_seconds: float = 0) -> None: ...


class StorageQueueSender:
    """`MessageSender` over Azure Storage queues (Azurite locally), base64 bodies like the Functions host."""

    def __init__(self, connection: StorageConnection | str) -> None:
        """`connection`: a `StorageConnection`, or a connection string."""
        self._connection = as_storage_connection(connection)
        self._clients: dict[str, QueueClient] = {}

    def _client(self, queue: str) -> QueueClient:
        from azure.core.exceptions import ResourceExistsError

        client = self._clients.get(queue)
        if client is None:
            client = self._connection.queue_client(queue)
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
            self._clients[queue] = client
        return client

    def send(self, message: QueueMessage, *, delay_seconds: float = 0) -> None:
        from azure.core.exceptions import AzureError

        from shared.errors import TransientError

        try:
            self._client(message.queue).send_message(
                encode_queue_body(message.to_json()), visibility_timeout=round(delay_seconds) or None
            )
        except AzureError as exc:
            raise TransientError(f"could not send {type(message).__name__} to queue {message.queue}: {exc}") from exc
