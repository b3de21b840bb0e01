# azd postdeploy hook on Windows (azure.yaml): the same steps as postdeploy.sh, as the Microsoft template's
# scripts/post-up.ps1 (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob).
$ErrorActionPreference = 'Stop'

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    throw 'The Azure CLI (az) is needed to subscribe the Event Grid functions: https://learn.microsoft.com/cli/azure/install-azure-cli'
}

# The outputs of infra/main.bicep, as azd keeps them (KEY="value" lines).
foreach ($line in (azd env get-values)) {
    if ($line -match '^([^=]+)=(.*)$') {
        Set-Item -Path "env:$($Matches[1])" -Value ($Matches[2].Trim('"'))
    }
}

# The host creates its extension keys when it first starts after the deployment: wait for the key (up to 5 minutes).
$key = ''
for ($attempt = 1; -not $key; $attempt++) {
    $key = az functionapp keys list --name $env:AZURE_FUNCTION_APP_NAME --resource-group $env:AZURE_RESOURCE_GROUP `
        --query 'systemKeys.eventgrid_extension' --output tsv 2>$null
    if (-not $key) {
        if ($attempt -ge 30) {
            throw "The function app $env:AZURE_FUNCTION_APP_NAME has no eventgrid_extension system key after 5 minutes: check that it started (Azure portal, Log stream), then run this hook again: pwsh infra/hooks/postdeploy.ps1"
        }
        Start-Sleep -Seconds 10
    }
}

az deployment group create `
    --name eventgrid-subscriptions `
    --resource-group $env:AZURE_RESOURCE_GROUP `
    --template-file infra/eventgrid-subscriptions.bicep `
    --parameters `
    functionAppName=$env:AZURE_FUNCTION_APP_NAME `
    eventGridSystemKey=$key `
    storageSystemTopicName=$env:EVENTGRID_STORAGE_TOPIC_NAME `
    mlSystemTopicName=$env:EVENTGRID_ML_TOPIC_NAME `
    mlResourceGroupName=$env:AZUREML_RESOURCE_GROUP `
    storageAccountName=$env:AZURE_STORAGE_ACCOUNT_NAME `
    deadLetterContainerName=$env:EVENTGRID_DEADLETTER_CONTAINER `
    trainingContainerName=$env:AUTOPILOT_TRAINING_CONTAINER `
    eventTimeToLiveInMinutes=$env:EVENTGRID_EVENT_TTL_MINUTES `
    --output none
if ($LASTEXITCODE -ne 0) {
    throw 'Creating the Event Grid subscriptions failed; see the error above, then run this hook again.'
}

Write-Output "Event Grid subscriptions made: dataset uploads and Azure ML job events now reach $env:AZURE_FUNCTION_APP_NAME."
