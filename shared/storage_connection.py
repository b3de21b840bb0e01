"""How the app reaches its storage account: the `AzureWebJobsStorage` connection, read as the Functions host reads it.

A value in `AzureWebJobsStorage` is a connection string (Azurite locally) and wins over everything else. With
no value there, the connection is identity-based: `AzureWebJobsStorage__blobServiceUri`, `__queueServiceUri`
and `__tableServiceUri`, or `AzureWebJobsStorage__accountName` for any of them not given, plus
`__credential=managedidentity` and `__clientId` for a user-assigned identity. The clients then sign in with
that managed identity, or with `DefaultAzureCredential` (the developer's identity outside Azure).
Sources: https://learn.microsoft.com/azure/azure-functions/functions-reference#connection-values and
https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient

# Properties of an identity-based connection, each set as `<connection>__<property>`.
ACCOUNT_NAME = "accountName"
BLOB_SERVICE_URI = "blobServiceUri"
QUEUE_SERVICE_URI = "queueServiceUri"
TABLE_SERVICE_URI = "tableServiceUri"
CREDENTIAL = "credential"
CLIENT_ID = "clientId"
MANAGED_IDENTITY = "managedidentity"
# The host's local-development service principal; DefaultAzureCredential reads AZURE_* variables instead.
_UNSUPPORTED = ("tenantId", "clientSecret")
_SERVICE_URIS = {"blob": BLOB_SERVICE_URI, "queue": QUEUE_SERVICE_URI, "table": TABLE_SERVICE_URI}
# 3-24 lower-case letters and digits:
# https://learn.microsoft.com/azure/storage/common/storage-account-overview#storage-account-name
_ACCOUNT_NAME_PATTERN = re.compile(r"[a-z0-9]{3,24}")


@dataclass(frozen=True)
class ConnectionStringStorage:
    """A storage connection string (account key or SAS inside: never shown in repr or logs)."""

    connection_string: str = field(repr=False)
    # Keyword arguments for every SDK client built from this connection (a retry policy, a transport).
    client_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def blob_service_client(self, **options: Any) -> BlobServiceClient:
        """A `BlobServiceClient` for the account; `options` go to the SDK client."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string, **{**self.client_options, **options})

    def queue_client(self, queue: str, **options: Any) -> QueueClient:
        """A `QueueClient` for `queue` on the account."""
        from azure.storage.queue import QueueClient

        return QueueClient.from_connection_string(self.connection_string, queue, **{**self.client_options, **options})

    def table_service_client(self, **options: Any) -> TableServiceClient:
        """A `TableServiceClient` for the account."""
        from azure.data.tables import TableServiceClient

        return TableServiceClient.from_connection_string(self.connection_string, **{**self.client_options, **options})

    def require_connection_string(self, user: str) -> str:
        """The connection string, for the parts (`user`) that can only work with one."""
        return self.connection_string


@dataclass(frozen=True)
class IdentityStorage:
    """The account's service URIs and the identity the clients sign in with; no secret in here.

    `credential` makes the token credential; by default the one `client_id` and `managed_identity` describe
    (see `identity_credential`), shared by every client of the process.
    """

    blob_service_uri: str
    queue_service_uri: str
    table_service_uri: str
    client_id: str = ""
    managed_identity: bool = False
    credential: Callable[[], TokenCredential] | None = field(default=None, repr=False, compare=False)
    client_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def token_credential(self) -> TokenCredential:
        """The credential every client of this connection signs in with."""
        if self.credential is not None:
            return self.credential()
        return identity_credential(self.client_id, self.managed_identity)

    def blob_service_client(self, **options: Any) -> BlobServiceClient:
        """A `BlobServiceClient` for the account; `options` go to the SDK client."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            self.blob_service_uri, credential=self.token_credential(), **{**self.client_options, **options}
        )

    def queue_client(self, queue: str, **options: Any) -> QueueClient:
        """A `QueueClient` for `queue` on the account."""
        from azure.storage.queue import QueueClient

        return QueueClient(
            self.queue_service_uri, queue, credential=self.token_credential(), **{**self.client_options, **options}
        )

    def table_service_client(self, **options: Any) -> TableServiceClient:
        """A `TableServiceClient` for the account."""
        from azure.data.tables import TableServiceClient

        return TableServiceClient(
            self.table_service_uri, credential=self.token_credential(), **{**self.client_options, **options}
        )

    def require_connection_string(self, user: str) -> NoReturn:
        """Raise: `user` only works with a connection string, and this connection has none."""
        raise ConfigurationError(
            f"{user} needs a storage connection string in AzureWebJobsStorage (Azurite's, for example); "
            f"the identity-based connection (AzureWebJobsStorage__{ACCOUNT_NAME} or __{BLOB_SERVICE_URI} ...) "
            "is for the Azure-hosted app. Set AzureWebJobsStorage to a connection string."
        )


StorageConnection: TypeAlias = ConnectionStringStorage | IdentityStorage


def as_storage_connection(connection: StorageConnection | str) -> StorageConnection:
    """`connection` itself, or a plain string taken as a connection string."""
    return ConnectionStringStorage(connection) if isinstance(connection, str) else connection


@functools.cache
def identity_credential(client_id: str, managed_identity: bool) -> TokenCredential:
    """The credential for an identity-based connection, one per process and identity (it caches tokens).

    A client id names a user-assigned managed identity; `managedidentity` without one is the system-assigned
    identity, as the Functions host does; neither is `DefaultAzureCredential`: the app's managed identity in
    Azure, the developer's `az login` elsewhere.
    https://learn.microsoft.com/azure/azure-functions/functions-reference#common-properties-for-identity-based-connections
    https://learn.microsoft.com/python/api/azure-identity/azure.identity.managedidentitycredential
    """
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id or managed_identity:
        return ManagedIdentityCredential(client_id=client_id or None)
    return DefaultAzureCredential()


def _properties(env: Mapping[str, str], name: str) -> dict[str, str]:
    """The connection's `<name>__<property>` settings that have a value, by lower-cased property name.

    The host's configuration keys are case-insensitive, so `__BlobServiceUri` counts as `__blobServiceUri`.
    """
    prefix = f"{name}__".lower()
    return {
        key[len(prefix) :].lower(): value.strip()
        for key, value in env.items()
        if key.lower().startswith(prefix) and value.strip()
    }


def has_identity_settings(env: Mapping[str, str], name: str) -> bool:
    """Whether any setting of an identity-based connection `name` (an account name or a service URI) is set."""
    properties = _properties(env, name)
    return any(key.lower() in properties for key in (ACCOUNT_NAME, *_SERVICE_URIS.values()))


def storage_connection_from_env(env: Mapping[str, str], name: str) -> StorageConnection:
    """The storage connection the app setting `name` describes, checked; fails naming the setting to fix."""
    connection_string = env.get(name, "").strip()
    if connection_string:
        # A single value is a connection string, whatever `<name>__*` settings there are (the host's rule).
        return ConnectionStringStorage(connection_string)
    if not has_identity_settings(env, name):
        raise ConfigurationError(
            f"Setting {name} is missing: set it to a storage connection string, or connect with an identity by "
            f"setting {name}__{ACCOUNT_NAME} (or {name}__{BLOB_SERVICE_URI}, {name}__{QUEUE_SERVICE_URI} and "
            f"{name}__{TABLE_SERVICE_URI}), in local.settings.json or the app settings."
        )
    properties = _properties(env, name)
    for unsupported in _UNSUPPORTED:
        if unsupported.lower() in properties:
            raise ConfigurationError(
                f"Setting {name}__{unsupported} is not supported here: sign in with a managed identity "
                f"({name}__{CREDENTIAL}={MANAGED_IDENTITY}), or leave {name}__{CREDENTIAL} empty for "
                "DefaultAzureCredential (az login, or AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET)."
            )
    credential = properties.get(CREDENTIAL.lower(), "")
    if credential and credential.lower() != MANAGED_IDENTITY:
        raise ConfigurationError(
            f"Setting {name}__{CREDENTIAL}={credential!r} is not supported: use {MANAGED_IDENTITY}, or leave it "
            "empty for DefaultAzureCredential."
        )
    account = properties.get(ACCOUNT_NAME.lower(), "")
    if account and not _ACCOUNT_NAME_PATTERN.fullmatch(account):
        raise ConfigurationError(
            f"Setting {name}__{ACCOUNT_NAME}={account!r} is not a storage account name (3-24 lower-case letters "
            f"and digits); for a custom domain or a sovereign cloud set {name}__{BLOB_SERVICE_URI} and the others."
        )
    uris = {service: _service_uri(properties, name, service, account) for service in _SERVICE_URIS}
    return IdentityStorage(
        blob_service_uri=uris["blob"],
        queue_service_uri=uris["queue"],
        table_service_uri=uris["table"],
        client_id=properties.get(CLIENT_ID.lower(), ""),
        managed_identity=bool(credential),
    )


def _service_uri(properties: Mapping[str, str], name: str, service: str, account: str) -> str:
    """The service's URI setting if given, else the account's.

    An explicit URI wins over the account name, as in the host's `StorageServiceUriOptions`
    (https://github.com/Azure/azure-webjobs-sdk/blob/dev/src/Microsoft.Azure.WebJobs.Host.Storage/StorageServiceUriOptions.cs).
    """
    setting = _SERVICE_URIS[service]
    uri = properties.get(setting.lower(), "")
    if not uri:
        if not account:
            raise ConfigurationError(
                f"Setting {name}__{setting} is missing: the app uses blobs, queues and tables; set it, or "
                f"{name}__{ACCOUNT_NAME} for an account in global Azure."
            )
        # The endpoints the host infers from the account name (global Azure, no custom domain).
        return f"https://{account}.{service}.core.windows.net"
    parts = urlsplit(uri)
    if parts.scheme != "https" or not parts.netloc:
        raise ConfigurationError(
            f"Setting {name}__{setting}={uri!r} is not an https:// URI such as "
            f"https://<account>.{service}.core.windows.net (azure-core sends no token over plain http)."
        )
    return uri.rstrip("/")


class LazyTable:
    """A Table client whose table is made on first use (a cold start that never writes to it pays nothing)."""

    def __init__(self, connection: StorageConnection | str, table_name: str) -> None:
        self._service = as_storage_connection(connection).table_service_client()
        self._table_name = table_name
        self._table: Any = None

    def __call__(self) -> Any:
        """The `TableClient`, the table created if it does not exist yet."""
        if self._table is None:
            self._table = self._service.create_table_if_not_exists(self._table_name)
        return self._table
