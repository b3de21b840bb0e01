// Deployed in the workspace's resource group (new or existing workspace): the app identity's roles on the workspace
// and the workspace's Event Grid system topic (job events for the function ml_job_events).
//
// AzureML Data Scientist: "all actions within an Azure Machine Learning workspace, except for creating or deleting
// compute resources and modifying the workspace itself", which covers what the app does: pipeline jobs on serverless
// compute, models, online endpoints and deployments, their keys and logs, MLflow metrics
// (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/ai-machine-learning#azureml-data-scientist;
// Microsoft names it for endpoint control- and data-plane work in
// https://learn.microsoft.com/azure/machine-learning/concept-endpoints-online-auth). No narrower built-in role allows
// jobs, models and endpoints together. The endpoints' own system-assigned identities get image pull and the default
// datastore's Storage Blob Data Reader from Azure ML automatically (same page), so the app needs no role-assignment
// rights.
// Monitoring Reader: the idle cleanup reads the endpoints' RequestsPerMinute from Azure Monitor; endpoints are
// child resources of the workspace, so the workspace is the narrowest scope that covers the ones not made yet.

@description('Name of the Azure ML workspace (in this resource group).')
param workspaceName string

@description('Name of the workspace\'s Event Grid system topic. Azure allows one system topic per source: reuse the name of an existing one.')
param systemTopicName string

@description('Principal id of the app\'s user-assigned identity.')
param appIdentityPrincipalId string

@description('Tags of every resource of the environment.')
param tags object = {}

var azureMlDataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
var monitoringReader = '43d0d8ad-25c7-4714-9337-8ba259a9fe05'

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

resource appDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appIdentityPrincipalId, azureMlDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', azureMlDataScientist)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appMonitoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, appIdentityPrincipalId, monitoringReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringReader)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Its identity writes dead letters to the app's storage account (rbac.bicep).
resource mlTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: workspace.location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

output systemTopicName string = mlTopic.name
output systemTopicPrincipalId string = mlTopic.identity.principalId
