// Event Grid in the app's resource group: the storage account's system topic (BlobCreated events for the function
// dataset_arrival; the subscription itself is made after deployment, see infra/eventgrid-subscriptions.bicep) and the
// custom topic the app publishes its own lifecycle events to.
// A system topic lives in its source's resource group and region
// (https://learn.microsoft.com/azure/event-grid/system-topics). Its system-assigned identity writes dead letters:
// Event Grid needs Storage Blob Data Contributor on the container for that
// (https://learn.microsoft.com/azure/event-grid/managed-service-identity), assigned in rbac.bicep.

@description('Region of the storage account (and so of its system topic) and of the custom topic.')
param location string

@description('Tags of every resource of the environment.')
param tags object = {}

@description('The app\'s storage account, source of the BlobCreated events.')
param storageAccountName string

@description('Name of the storage account\'s system topic.')
param storageSystemTopicName string

@description('Name of the custom topic for the app\'s lifecycle events.')
param lifecycleTopicName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource storageTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: storageSystemTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Entra ID only (no access keys): the app's identity is the one sender (EventGrid Data Sender, rbac.bicep).
resource lifecycleTopic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: lifecycleTopicName
  location: location
  tags: tags
  properties: {
    inputSchema: 'EventGridSchema'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output storageSystemTopicName string = storageTopic.name
output storageSystemTopicPrincipalId string = storageTopic.identity.principalId
output lifecycleTopicName string = lifecycleTopic.name
output lifecycleTopicEndpoint string = lifecycleTopic.properties.endpoint
