// A new Azure ML workspace with the resources it depends on, deployed only when no existing workspace is named
// (main.bicep, azureMlWorkspaceName). As Azure/azure-quickstart-templates
// quickstarts/microsoft.machinelearningservices/machine-learning-workspace/main.bicep, except: the app's Application
// Insights is reused, and no container registry is made here, because Azure ML creates one only when it first builds
// an image ("to minimize costs, ACR is lazy-loaded until deployment images are created",
// https://learn.microsoft.com/azure/machine-learning/concept-workspace#associated-resources): an idle workspace
// costs nothing for it.

@description('Name of the workspace.')
param name string

@description('Region of the workspace: it must offer the fine-tuning and inference GPU sizes and quota for them.')
param location string

@description('Tags of every resource of the environment.')
param tags object = {}

@description('Name of the workspace\'s key vault (3-24 characters).')
param keyVaultName string

@description('Name of the workspace\'s own storage account (its default datastore), not the app\'s.')
param storageAccountName string

@description('Resource id of the Application Insights the workspace reports to.')
param applicationInsightsId string

// Access policies stay empty: the workspace adds its own when it is created (as in the quickstart template).
resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    accessPolicies: []
    enableSoftDelete: true
  }
}

resource workspaceStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  properties: {
    friendlyName: name
    storageAccount: workspaceStorage.id
    keyVault: keyVault.id
    applicationInsights: applicationInsightsId
    publicNetworkAccess: 'Enabled'
  }
}

output name string = workspace.name
