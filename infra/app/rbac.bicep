// Role assignments in the app's resource group, as the Microsoft templates make them
// (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob, infra/app/rbac.bicep). Role ids:
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
//
// The app's identity: Storage Blob Data Owner (the host creates containers for its keys and locks; the app writes
// datasets' validated copies and reports), Storage Queue Data Contributor (the stage queues and the host's queue
// triggers), Storage Table Data Contributor (the run ledger, the folder and rejected-input tables): the roles
// https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
// names. Monitoring Metrics Publisher on Application Insights: telemetry with Entra ID (local auth is off).
// EventGrid Data Sender on the lifecycle topic: the app publishes its own events there.
// The system topics' identities: Storage Blob Data Contributor on the dead-letter container only.
// The developer running azd (optional): the storage data roles, so `autopilot` works against the deployed account
// with identity settings (docs/azure.md, "Storage: connection string or identity").

@description('The app\'s storage account.')
param storageAccountName string

@description('Container Event Grid writes dead letters to.')
param deadLetterContainerName string

@description('The app\'s Application Insights.')
param applicationInsightsName string

@description('The custom topic for the app\'s lifecycle events.')
param lifecycleTopicName string

@description('Principal id of the app\'s user-assigned identity.')
param appIdentityPrincipalId string

@description('Principal ids of the Event Grid system topics\' identities.')
param topicPrincipalIds array

@description('Object id of the developer running azd; empty: no roles for a person.')
param developerPrincipalId string = ''

@description('Kind of that principal: User, or ServicePrincipal when azd runs in a pipeline.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param developerPrincipalType string = 'User'

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'
var developerStorageRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource lifecycleTopic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: lifecycleTopicName
}

resource appBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentityPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentityPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentityPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appIdentityPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appEventGridDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(lifecycleTopic.id, appIdentityPrincipalId, eventGridDataSender)
  scope: lifecycleTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource topicDeadLetterWriters 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for topicPrincipalId in topicPrincipalIds: {
    name: guid(deadLetterContainer.id, topicPrincipalId, storageBlobDataContributor)
    scope: deadLetterContainer
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
      principalId: topicPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource developerStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in developerStorageRoles: if (!empty(developerPrincipalId)) {
    name: guid(storage.id, developerPrincipalId, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: developerPrincipalId
      principalType: developerPrincipalType
    }
  }
]
