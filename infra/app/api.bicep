// The function app on a Flex Consumption plan: Python, a user-assigned identity, the deployment package in a blob
// container read with that identity, no always-ready instances (it scales to zero and bills only while it runs).
// As Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep/core/host/function.bicep (plain resources) with
// the user-assigned identity of Azure-Samples/functions-quickstart-python-http-azd infra/app/api.bicep.
// No FUNCTIONS_WORKER_RUNTIME or FUNCTIONS_EXTENSION_VERSION setting: Flex Consumption takes the runtime from
// functionAppConfig and rejects those settings
// (https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations).

@description('Name of the function app.')
param name string

@description('Name of its Flex Consumption plan (one app per plan).')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags of every resource of the environment.')
param tags object = {}

@description('The app\'s storage account, which holds the deployment package.')
param storageAccountName string

@description('Blob container of the deployment package.')
param deploymentContainerName string

@description('Resource id of the app\'s user-assigned identity.')
param identityId string

@description('Python version of the app.')
param pythonVersion string

@description('Most instances the app scales out to.')
param maximumInstanceCount int

@description('Memory of each instance, in MB.')
param instanceMemoryMB int

@description('App settings, name to value.')
param appSettings object

@description('Name of the service in azure.yaml: azd finds the app to deploy by this tag.')
param serviceName string = 'api'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        for setting in items(appSettings): {
          name: setting.key
          value: setting.value
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
