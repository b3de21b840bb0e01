#!/bin/sh
# azd postdeploy hook (azure.yaml): subscribes the app's Event Grid functions once they are deployed, by deploying
# infra/eventgrid-subscriptions.bicep with the host's eventgrid_extension system key. As the Microsoft template's
# scripts/post-up.sh (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob), which reads the azd environment
# and the function's system key with `az functionapp keys list` and then subscribes it.
set -eu

if ! command -v az >/dev/null 2>&1; then
  echo "The Azure CLI (az) is needed to subscribe the Event Grid functions:" \
    "https://learn.microsoft.com/cli/azure/install-azure-cli" >&2
  exit 1
fi

# The outputs of infra/main.bicep, as azd keeps them (KEY="value" lines).
azd env get-values > "${TMPDIR:-/tmp}/autopilot-azd-env.$$"
while IFS="=" read -r name value; do
  value=$(printf '%s' "$value" | sed 's/^"//; s/"$//')
  export "$name=$value"
done < "${TMPDIR:-/tmp}/autopilot-azd-env.$$"
rm -f "${TMPDIR:-/tmp}/autopilot-azd-env.$$"

# The host creates its extension keys when it first starts after the deployment: wait for the key (up to 5 minutes).
key=""
attempt=0
while [ -z "$key" ]; do
  key=$(az functionapp keys list --name "$AZURE_FUNCTION_APP_NAME" --resource-group "$AZURE_RESOURCE_GROUP" \
    --query "systemKeys.eventgrid_extension" --output tsv 2>/dev/null || true)
  if [ -z "$key" ]; then
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 30 ]; then
      echo "The function app $AZURE_FUNCTION_APP_NAME has no eventgrid_extension system key after 5 minutes:" \
        "check that it started (Azure portal, Log stream), then run this hook again: sh infra/hooks/postdeploy.sh" >&2
      exit 1
    fi
    sleep 10
  fi
done

az deployment group create \
  --name eventgrid-subscriptions \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --template-file infra/eventgrid-subscriptions.bicep \
  --parameters \
    functionAppName="$AZURE_FUNCTION_APP_NAME" \
    eventGridSystemKey="$key" \
    storageSystemTopicName="$EVENTGRID_STORAGE_TOPIC_NAME" \
    mlSystemTopicName="$EVENTGRID_ML_TOPIC_NAME" \
    mlResourceGroupName="$AZUREML_RESOURCE_GROUP" \
    storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
    deadLetterContainerName="$EVENTGRID_DEADLETTER_CONTAINER" \
    trainingContainerName="$AUTOPILOT_TRAINING_CONTAINER" \
    eventTimeToLiveInMinutes="$EVENTGRID_EVENT_TTL_MINUTES" \
  --output none

echo "Event Grid subscriptions made: dataset uploads and Azure ML job events now reach $AZURE_FUNCTION_APP_NAME."
