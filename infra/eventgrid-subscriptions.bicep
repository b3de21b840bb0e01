// The Event Grid subscriptions of the app's Event Grid functions (dataset_arrival, ml_job_events). Not part of
// main.bicep: Event Grid validates a webhook when the subscription is made, so the function must already run there.
// infra/hooks/postdeploy.* deploys this after `azd deploy`, as the Microsoft Flex Consumption Event Grid template
// subscribes its function in a post-deploy script with the host's system key
// (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob, scripts/post-up.sh;
// URL shape and key: https://learn.microsoft.com/azure/azure-functions/event-grid-how-tos).
//
// One source with the local Event Grid stand-in: the subscriptions, their topics, filters, webhook paths and
// delivery attempts come from eventgrid.subscriptions.json (the file autopilot/local/eventgrid_subscriptions.py
// reads); its placeholders are replaced here with the deployed values.

@description('The function app (in this resource group).')
param functionAppName string

@secure()
@description('The Functions host\'s eventgrid_extension system key.')
param eventGridSystemKey string

@description('The storage account\'s system topic (in this resource group).')
param storageSystemTopicName string

@description('The Azure ML workspace\'s system topic.')
param mlSystemTopicName string

@description('Resource group of the workspace and its system topic.')
param mlResourceGroupName string

@description('The app\'s storage account, which also holds the dead letters.')
param storageAccountName string

@description('Container for dead letters.')
param deadLetterContainerName string

@description('The training container: AUTOPILOT_TRAINING_CONTAINER of the app.')
param trainingContainerName string

@description('How long Event Grid keeps trying one event, in minutes.')
param eventTimeToLiveInMinutes int = 1440

var subscriptionsFile = loadJsonContent('../eventgrid.subscriptions.json')

// Where each topic of the file (its `topics` keys) is in Azure.
var systemTopics = {
  storage: {
    name: storageSystemTopicName
    resourceGroup: resourceGroup().name
  }
  ml: {
    name: mlSystemTopicName
    resourceGroup: mlResourceGroupName
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// The file's `{functions_url}`: the app's default host name (Flex Consumption names may carry a regional suffix).
var functionsUrl = 'https://${functionApp.properties.defaultHostName}'

resource deadLetterStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

module eventSubscriptions 'app/event-subscription.bicep' = [
  for spec in subscriptionsFile.subscriptions: {
    name: 'eventgrid-${spec.name}'
    scope: resourceGroup(systemTopics[spec.topic].resourceGroup)
    params: {
      systemTopicName: systemTopics[spec.topic].name
      spec: json(replace(string(spec), '{env:AUTOPILOT_TRAINING_CONTAINER|training-data}', trainingContainerName))
      endpointUrl: '${replace(spec.destination.endpointUrl, '{functions_url}', functionsUrl)}&code=${eventGridSystemKey}'
      deadLetterStorageAccountId: deadLetterStorage.id
      deadLetterContainerName: deadLetterContainerName
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
  }
]
