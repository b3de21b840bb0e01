from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.storage_connection import ConnectionStringStorage, IdentityStorage


def test_missing_storage_connection_is_named() -> None:
    with pytest.raises(ConfigurationError, match="AzureWebJobsStorage"):
        Settings.from_env({})


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": "x", "AUTOPILOT_QUIET_PERIOD_SECONDS": "2.5"})
    assert settings.training_container == "training-data"
    assert settings.quiet_period_seconds == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTOPILOT_ML_BACKEND", "sagemaker"), ("AUTOPILOT_STRICT_VALIDATION", "maybe"), ("AUTOPILOT_SMOKE_PROMPTS", "x")],
)
def test_bad_values_name_their_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({"AzureWebJobsStorage": "x", name: value})


def test_storage_connection_is_not_in_repr() -> None:
    assert "AccountKey" not in repr(Settings.from_env({"AzureWebJobsStorage": "AccountKey=secret"}))


# Identity-based storage: the settings and the rules of the Functions host (azure-facts.md, "Identity-based
# connections"; the "Connecting to host storage with an identity" section of
# https://learn.microsoft.com/azure/azure-functions/functions-reference).


def test_missing_storage_names_the_connection_string_and_the_identity_way() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({})

    assert "AzureWebJobsStorage is missing" in str(caught.value)
    assert "AzureWebJobsStorage__accountName" in str(caught.value)
    assert "AzureWebJobsStorage__blobServiceUri" in str(caught.value)


def test_a_connection_string_is_kept_as_one() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})

    assert settings.storage_connection == ConnectionStringStorage("UseDevelopmentStorage=true")


def test_an_account_name_alone_gives_the_global_azure_service_uris() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage__accountName": "acct1"})

    assert settings.storage_connection == IdentityStorage(
        blob_service_uri="https://acct1.blob.core.windows.net",
        queue_service_uri="https://acct1.queue.core.windows.net",
        table_service_uri="https://acct1.table.core.windows.net",
    )


def test_service_uris_alone_are_enough_and_lose_their_trailing_slash() -> None:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__blobServiceUri": "https://acct1.blob.core.usgovcloudapi.net/",
            "AzureWebJobsStorage__queueServiceUri": "https://acct1.queue.core.usgovcloudapi.net",
            "AzureWebJobsStorage__tableServiceUri": "https://acct1.table.core.usgovcloudapi.net",
        }
    )

    assert settings.storage_connection == IdentityStorage(
        "https://acct1.blob.core.usgovcloudapi.net",
        "https://acct1.queue.core.usgovcloudapi.net",
        "https://acct1.table.core.usgovcloudapi.net",
    )


def test_a_service_uri_wins_over_the_account_name_for_its_service_only() -> None:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage__accountName": "acct1",
            "AzureWebJobsStorage__queueServiceUri": "https://queues.example.com",
        }
    )

    assert settings.storage_connection == IdentityStorage(
        "https://acct1.blob.core.windows.net", "https://queues.example.com", "https://acct1.table.core.windows.net"
    )


def test_a_connection_string_wins_over_identity_settings() -> None:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "AzureWebJobsStorage__accountName": "acct1",
            "AzureWebJobsStorage__credential": "managedidentity",
        }
    )

    assert settings.storage_connection == ConnectionStringStorage("UseDevelopmentStorage=true")


def test_an_empty_connection_string_leaves_the_identity_settings_in_charge() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": " ", "AzureWebJobsStorage__accountName": "acct1"})

    assert isinstance(settings.storage_connection, IdentityStorage)


@pytest.mark.parametrize(
    ("env", "identity"),
    [
        ({}, ("", False)),
        ({"AzureWebJobsStorage__credential": "managedidentity"}, ("", True)),
        ({"AzureWebJobsStorage__credential": "ManagedIdentity"}, ("", True)),
        ({"AzureWebJobsStorage__credential": "managedidentity", "AzureWebJobsStorage__clientId": "c1"}, ("c1", True)),
        ({"AzureWebJobsStorage__clientId": "c1"}, ("c1", False)),
    ],
)
def test_credential_and_client_id_are_read(env: dict[str, str], identity: tuple[str, bool]) -> None:
    settings = Settings.from_env({"AzureWebJobsStorage__accountName": "acct1", **env})

    assert isinstance(settings.storage_connection, IdentityStorage)
    assert (settings.storage_connection.client_id, settings.storage_connection.managed_identity) == identity


def test_property_names_are_case_insensitive_like_the_hosts_configuration() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage__AccountName": "acct1", "AzureWebJobsStorage__CLIENTID": "c1"})

    assert settings.storage_connection == IdentityStorage(
        "https://acct1.blob.core.windows.net",
        "https://acct1.queue.core.windows.net",
        "https://acct1.table.core.windows.net",
        client_id="c1",
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"AzureWebJobsStorage__blobServiceUri": "https://a.blob.core.windows.net"},
            "AzureWebJobsStorage__queueServiceUri is missing",
        ),
        (
            {
                "AzureWebJobsStorage__blobServiceUri": "https://a.blob.core.windows.net",
                "AzureWebJobsStorage__queueServiceUri": "https://a.queue.core.windows.net",
            },
            "AzureWebJobsStorage__tableServiceUri is missing",
        ),
        ({"AzureWebJobsStorage__accountName": "Not_An_Account"}, "AzureWebJobsStorage__accountName='Not_An_Account'"),
        (
            {"AzureWebJobsStorage__accountName": "acct1", "AzureWebJobsStorage__blobServiceUri": "http://acct1:10000"},
            "AzureWebJobsStorage__blobServiceUri='http://acct1:10000' is not an https:// URI",
        ),
        (
            {"AzureWebJobsStorage__accountName": "acct1", "AzureWebJobsStorage__credential": "AzureCli"},
            "AzureWebJobsStorage__credential='AzureCli' is not supported",
        ),
        (
            {"AzureWebJobsStorage__accountName": "acct1", "AzureWebJobsStorage__clientSecret": "s3cret"},
            "AzureWebJobsStorage__clientSecret is not supported",
        ),
    ],
)
def test_unusable_identity_settings_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)

    assert named in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_no_form_of_the_storage_connection_shows_a_secret_in_repr() -> None:
    key_settings = Settings.from_env({"AzureWebJobsStorage": "AccountName=a;AccountKey=s3cret"})
    identity_settings = Settings.from_env(
        {"AzureWebJobsStorage__accountName": "acct1", "AzureWebJobsStorage__clientId": "c1"}
    )

    assert "s3cret" not in repr(key_settings.storage_connection)
    assert "s3cret" not in str(key_settings.storage_connection)
    assert "s3cret" not in repr(key_settings)
    # The identity form holds no secret: its repr says where it connects, which helps in logs.
    assert "https://acct1.blob.core.windows.net" in repr(identity_settings.storage_connection)
    assert "storage_connection" not in repr(identity_settings)
