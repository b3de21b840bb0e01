"""Storage adapters built from an identity-based connection: the service URIs they call, the token they send.

No network: the SDK clients get a fake HTTP transport (azure-core's `transport=` keyword, which every client
takes) that records each request and answers as the storage service would. Settings and precedence are in
test_settings.py; the rules come from azure-facts.md ("Identity-based connections").
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpRequest, HttpResponse, HttpTransport
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

from shared.bootstrap import build_context
from shared.errors import ConfigurationError
from shared.ledger import TableRunLedger
from shared.messages import ValidateDataset
from shared.queueing import StorageQueueSender, decode_queue_body
from shared.settings import Settings
from shared.storage import AzureBlobStore, TableFolderTracker
from shared.storage_connection import ConnectionStringStorage, IdentityStorage, StorageConnection

ACCOUNT_KEY = "a2V5IG9mIHRoZSB0ZXN0IGFjY291bnQ="  # base64 of "key of the test account": never a real key
CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
)

_QUEUE_MESSAGE_XML = (
    "<?xml version='1.0' encoding='utf-8'?><QueueMessagesList><QueueMessage><MessageId>m1</MessageId>"
    "<InsertionTime>Mon, 23 Nov 2026 09:00:00 GMT</InsertionTime>"
    "<ExpirationTime>Mon, 30 Nov 2026 09:00:00 GMT</ExpirationTime><PopReceipt>p1</PopReceipt>"
    "<TimeNextVisible>Mon, 23 Nov 2026 09:00:00 GMT</TimeNextVisible></QueueMessage></QueueMessagesList>"
)


class FakeCredential:
    """A token credential that hands out one token and remembers the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("fake-token", int(time.time()) + 3600)


class _Response(HttpResponse):
    def __init__(self, request: HttpRequest, status: int, headers: dict[str, str], body: bytes) -> None:
        super().__init__(request, None)
        self.status_code = status
        self.headers = headers
        self.reason = "fake"
        self.content_type = headers.get("Content-Type")
        self._body = body

    def body(self) -> bytes:
        return self._body


class FakeStorageService(HttpTransport):
    """Answers like Azure Storage for what the adapters do here; keeps every request in `requests`.

    Tables and queues are created (the table answers 204, as for `Prefer: return-no-content`), a message
    put on a queue is kept in `messages`, and containers do not exist (listing one answers 404).
    """

    def __init__(self) -> None:
        self.requests: list[HttpRequest] = []
        self.messages: dict[str, list[str]] = {}

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        self.requests.append(request)
        url = urlsplit(request.url)
        path = url.path.strip("/")
        if request.method == "POST" and path == "Tables":
            return _Response(request, 204, {}, b"")
        if request.method == "PUT" and url.netloc.split(".")[1] == "queue":
            return _Response(request, 201, {}, b"")
        if request.method == "POST" and path.endswith("/messages"):
            text = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
            body = text.split("<MessageText>")[1].split("</MessageText>")[0]
            self.messages.setdefault(path.split("/")[0], []).append(body)
            return _Response(request, 201, {"Content-Type": "application/xml"}, _QUEUE_MESSAGE_XML.encode())
        if request.method == "GET" and "comp=list" in url.query:
            return _Response(request, 404, {"x-ms-error-code": "ContainerNotFound"}, b"")
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def calls(self) -> list[tuple[str, str, str]]:
        """(method, URL without query, scheme of the Authorization header) of every request."""
        return [
            (r.method, r.url.split("?")[0], r.headers.get("Authorization", "").split(" ")[0]) for r in self.requests
        ]

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> FakeStorageService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


@pytest.fixture()
def service() -> FakeStorageService:
    return FakeStorageService()


@pytest.fixture()
def credential() -> FakeCredential:
    return FakeCredential()


def identity_storage(service: FakeStorageService, credential: FakeCredential) -> StorageConnection:
    """What `AzureWebJobsStorage__accountName=acct1` gives, signed in with the fake credential."""
    parsed = Settings.from_env({"AzureWebJobsStorage__accountName": "acct1"}).storage_connection
    return replace(parsed, credential=lambda: credential, client_options={"transport": service})


def bearer_tokens(service: FakeStorageService) -> set[str]:
    return {r.headers.get("Authorization", "") for r in service.requests}


def test_blob_store_lists_at_the_blob_service_uri_with_a_token(
    service: FakeStorageService, credential: FakeCredential
) -> None:
    store = AzureBlobStore(identity_storage(service, credential))

    assert store.list_blobs("training-data", "chat/v1/") == []
    assert store.url("training-data", "chat/v1/train.jsonl") == (
        "https://acct1.blob.core.windows.net/training-data/chat/v1/train.jsonl"
    )
    assert service.calls() == [("GET", "https://acct1.blob.core.windows.net/training-data", "Bearer")]
    assert bearer_tokens(service) == {"Bearer fake-token"}
    assert credential.scopes == [("https://storage.azure.com/.default",)]


def test_run_ledger_creates_its_table_at_the_table_service_uri_with_a_token(
    service: FakeStorageService, credential: FakeCredential
) -> None:
    TableRunLedger(identity_storage(service, credential), "autopilotruns")

    assert service.calls() == [("POST", "https://acct1.table.core.windows.net/Tables", "Bearer")]
    assert json.loads(service.requests[0].body) == {"TableName": "autopilotruns"}
    assert bearer_tokens(service) == {"Bearer fake-token"}


def test_folder_tracker_creates_its_table_at_the_table_service_uri_with_a_token(
    service: FakeStorageService, credential: FakeCredential
) -> None:
    TableFolderTracker(identity_storage(service, credential), "autopilotfolders")

    assert service.calls() == [("POST", "https://acct1.table.core.windows.net/Tables", "Bearer")]
    assert json.loads(service.requests[0].body) == {"TableName": "autopilotfolders"}
    assert bearer_tokens(service) == {"Bearer fake-token"}


def test_queue_sender_sends_to_the_queue_service_uri_with_a_token(
    service: FakeStorageService, credential: FakeCredential
) -> None:
    StorageQueueSender(identity_storage(service, credential)).send(ValidateDataset(run_id="r1"))

    assert service.calls() == [
        ("PUT", "https://acct1.queue.core.windows.net/validate-dataset", "Bearer"),
        ("POST", "https://acct1.queue.core.windows.net/validate-dataset/messages", "Bearer"),
    ]
    assert bearer_tokens(service) == {"Bearer fake-token"}
    [body] = service.messages["validate-dataset"]
    assert ValidateDataset.from_json(decode_queue_body(body)) == ValidateDataset(run_id="r1")


def test_build_context_wires_every_storage_adapter_to_the_identity_connection(
    service: FakeStorageService, credential: FakeCredential, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__accountName": "acct1",
            "AUTOPILOT_ML_BACKEND": "simulated",
            "AUTOPILOT_STATE_DIR": str(tmp_path),
        }
    )
    settings = replace(settings, storage_connection=identity_storage(service, credential))

    context = build_context(settings)
    context.sender.send(ValidateDataset(run_id="r1"))
    context.blobs.list_blobs("training-data", "")

    hosts = {urlsplit(r.url).netloc for r in service.requests}
    assert hosts == {"acct1.table.core.windows.net", "acct1.queue.core.windows.net", "acct1.blob.core.windows.net"}
    assert [json.loads(r.body)["TableName"] for r in service.requests if r.url.endswith("/Tables")] == [
        "autopilotruns",
        "autopilotfolders",
    ]
    assert bearer_tokens(service) == {"Bearer fake-token"}


def test_a_connection_string_still_signs_with_the_account_key(service: FakeStorageService) -> None:
    connection = ConnectionStringStorage(CONNECTION_STRING, client_options={"transport": service})

    TableRunLedger(connection, "autopilotruns")
    StorageQueueSender(connection).send(ValidateDataset(run_id="r1"))
    assert AzureBlobStore(connection).list_blobs("training-data", "") == []

    assert [(method, url) for method, url, _ in service.calls()] == [
        ("POST", "https://acct1.table.core.windows.net/Tables"),
        ("PUT", "https://acct1.queue.core.windows.net/validate-dataset"),
        ("POST", "https://acct1.queue.core.windows.net/validate-dataset/messages"),
        ("GET", "https://acct1.blob.core.windows.net/training-data"),
    ]
    assert {scheme for _, _, scheme in service.calls()} == {"SharedKey"}


def test_a_plain_connection_string_is_still_accepted_by_the_adapters() -> None:
    store = AzureBlobStore(CONNECTION_STRING)

    assert store.url("training-data", "a.jsonl") == "https://acct1.blob.core.windows.net/training-data/a.jsonl"


@pytest.mark.parametrize(
    ("client_id", "managed_identity", "expected"),
    [
        ("", False, DefaultAzureCredential),
        ("", True, ManagedIdentityCredential),
        ("00000000-0000-0000-0000-000000000001", True, ManagedIdentityCredential),
        ("00000000-0000-0000-0000-000000000001", False, ManagedIdentityCredential),
    ],
)
def test_the_identity_settings_choose_the_credential(
    client_id: str, managed_identity: bool, expected: type[object]
) -> None:
    connection = IdentityStorage(
        "https://a.blob.core.windows.net",
        "https://a.queue.core.windows.net",
        "https://a.table.core.windows.net",
        client_id=client_id,
        managed_identity=managed_identity,
    )

    credential = connection.token_credential()

    assert type(credential) is expected
    # One credential per identity in the process: its token cache is shared by every client.
    assert connection.token_credential() is credential
    assert AzureBlobStore(connection)._service.credential is credential


def test_parts_that_need_a_connection_string_say_so_for_an_identity_connection() -> None:
    identity = Settings.from_env({"AzureWebJobsStorage__accountName": "acct1"}).storage_connection
    key = Settings.from_env({"AzureWebJobsStorage": CONNECTION_STRING}).storage_connection

    with pytest.raises(ConfigurationError, match="the local ML backend needs a storage connection string"):
        identity.require_connection_string("the local ML backend")
    assert key.require_connection_string("the local ML backend") == CONNECTION_STRING


def test_the_cli_leaves_an_identity_connection_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autopilot.commands.common import cli_settings

    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "acct1")

    assert cli_settings().storage_connection == IdentityStorage(
        "https://acct1.blob.core.windows.net",
        "https://acct1.queue.core.windows.net",
        "https://acct1.table.core.windows.net",
    )
