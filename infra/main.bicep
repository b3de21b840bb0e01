// Finetune Autopilot in Azure, deployed by `azd up` (azure.yaml): this template provisions everything; azd then
// deploys the function app, and infra/hooks/postdeploy.* subscribes its Event Grid functions
// (infra/eventgrid-subscriptions.bicep). Shaped like Microsoft's Flex Consumption azd templates
// (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob and Azure-Samples/functions-quickstart-python-http-azd,
// infra/main.bicep: subscription scope, one resource group, a user-assigned identity, identity-based storage,
// Log Analytics with Application Insights), written with plain resources as in
// Azure-Samples/azure-functions-flex-consumption-samples (IaC/bicep). docs/azure.md, "Deploy with azd up",
// describes every parameter and role.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; with the subscription and the region it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every new resource: one with Flex Consumption and the GPU sizes below.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person (or pipeline) running azd, set by azd: given the storage data roles so that `autopilot` works against the deployed account. Empty: no roles for a person.')
param principalId string = ''

@description('Kind of that principal.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Resource group to create; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Name of the function app; empty: func-autopilot-<token>.')
param functionAppName string = ''

@description('Name of the app\'s storage account; empty: st<token>.')
param storageAccountName string = ''

@description('An existing Azure ML workspace for the app; empty: a new workspace is created (with its key vault and storage account) in the app\'s resource group.')
param azureMlWorkspaceName string = ''

@description('Resource group of that existing workspace (same subscription); empty: the app\'s resource group.')
param azureMlWorkspaceResourceGroup string = ''

@description('Name of the workspace\'s Event Grid system topic. Azure allows one system topic per source: if the existing workspace already has one, give its name here. Empty: egst-ml-<token>.')
param azureMlSystemTopicName string = ''

@description('Python version of the function app.')
@allowed([
  '3.10'
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Most instances the function app scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory of each function app instance, in MB.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Base model in the registry (AUTOPILOT_BASE_MODEL); a dataset\'s autopilot.json may name another.')
param baseModel string = 'Phi-4'

@description('Its version, or latest (AUTOPILOT_BASE_MODEL_VERSION).')
param baseModelVersion string = 'latest'

@description('Registry of the base model and of chat_completion_pipeline (AUTOPILOT_AZUREML_REGISTRY).')
param azureMlRegistry string = 'azureml'

@description('Compute cluster for the fine-tuning job; empty: serverless (AUTOPILOT_AZUREML_COMPUTE).')
param azureMlCompute string = ''

@description('Serverless instance type of the fine-tuning steps (AUTOPILOT_AZUREML_FINETUNE_INSTANCE_TYPE).')
param finetuneInstanceType string = 'Standard_NC24ads_A100_v4'

@description('Instance type of the online deployments (AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE).')
param inferenceInstanceType string = 'Standard_NC24ads_A100_v4'

@description('Instances per online deployment (AUTOPILOT_AZUREML_INFERENCE_INSTANCE_COUNT).')
@minValue(1)
param inferenceInstanceCount int = 1

@description('Workspace datastore on the training container; empty: jobs read blob URLs (AUTOPILOT_AZUREML_DATASTORE).')
param azureMlDatastore string = ''

@description('Endpoints this app made that nobody called for this long are deleted (AUTOPILOT_IDLE_ENDPOINT_MINUTES).')
param idleEndpointMinutes int = 120

@description('NCRONTAB (six fields, UTC) of the idle-endpoint cleanup (AUTOPILOT_CLEANUP_SCHEDULE).')
param cleanupSchedule string = '0 */10 * * * *'

@description('The idle cleanup leaves an endpoint alone this long after its creation or a restore (AUTOPILOT_CLEANUP_GRACE_MINUTES).')
param cleanupGraceMinutes int = 60

@description('The idle cleanup only reports what it would delete (AUTOPILOT_CLEANUP_DRY_RUN).')
param cleanupDryRun bool = false

@description('The most endpoints one cleanup pass deletes (AUTOPILOT_CLEANUP_MAX_DELETIONS).')
param cleanupMaxDeletions int = 5

@description('NCRONTAB (six fields, UTC) of the reconcile timer (AUTOPILOT_RECONCILE_SCHEDULE).')
param reconcileSchedule string = '0 */5 * * * *'

@description('Container datasets are uploaded to (AUTOPILOT_TRAINING_CONTAINER).')
param trainingContainerName string = 'training-data'

@description('Container of the runs\' validated copies and reports (AUTOPILOT_ARTIFACTS_CONTAINER).')
param artifactsContainerName string = 'autopilot-runs'

@description('Table of the run ledger (AUTOPILOT_RUNS_TABLE).')
param runsTableName string = 'autopilotruns'

@description('Table of dataset folders waiting to settle (AUTOPILOT_FOLDERS_TABLE).')
param foldersTableName string = 'autopilotfolders'

@description('Table of rejected events and messages (AUTOPILOT_REJECTED_TABLE).')
param rejectedTableName string = 'autopilotrejected'

@description('Table of the idle cleanup\'s decisions (AUTOPILOT_CLEANUP_TABLE).')
param cleanupTableName string = 'autopilotcleanup'

@description('How long Event Grid keeps trying to deliver one event before it is dead-lettered, in minutes (at most 1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = !empty(functionAppName) ? toLower(functionAppName) : 'func-autopilot-${resourceToken}'
// One container per app for the deployment package, named as the templates name it.
var deploymentContainerName = 'app-package-${take(appName, 32)}-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletter'
var createWorkspace = empty(azureMlWorkspaceName)
var workspaceName = createWorkspace ? 'mlw-${resourceToken}' : azureMlWorkspaceName
var useAppResourceGroup = createWorkspace || empty(azureMlWorkspaceResourceGroup)
var workspaceResourceGroupName = useAppResourceGroup ? rg.name : azureMlWorkspaceResourceGroup
var storageSystemTopicName = 'egst-storage-${resourceToken}'
var mlSystemTopicName = !empty(azureMlSystemTopicName) ? azureMlSystemTopicName : 'egst-ml-${resourceToken}'

// Every queue of the stages (shared/messages.py ALL_QUEUES) and the `-poison` queue the host moves a message to after
// maxDequeueCount failed tries: made up front, so the poison queues can be listed before their first message.
var stageQueues = [
  'settle-dataset'
  'settle-dataset-poison'
  'validate-dataset'
  'validate-dataset-poison'
  'submit-finetune'
  'submit-finetune-poison'
  'register-model'
  'register-model-poison'
  'deploy-model'
  'deploy-model-poison'
  'smoke-test'
  'smoke-test-poison'
  'promote-deployment'
  'promote-deployment-poison'
  'restore-endpoint'
  'restore-endpoint-poison'
  'cancel-run'
  'cancel-run-poison'
  'check-finetune-job'
  'check-finetune-job-poison'
]

// Every setting the code reads (the names in shared/settings.py), with production values; the test
// tests/unit/test_infra_templates.py holds this list to the code.
var appSettings = {
  // Identity-based host storage, read the same way by shared/storage_connection.py. There is deliberately no
  // `AzureWebJobsStorage` value: a value there is a connection string and wins over these.
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.outputs.clientId
  // DefaultAzureCredential (Azure ML, Azure Monitor metrics) uses the user-assigned identity this names
  // (https://learn.microsoft.com/python/api/azure-identity/azure.identity.defaultazurecredential).
  AZURE_CLIENT_ID: identity.outputs.clientId
  // Telemetry to Application Insights with the identity's Entra token: the Functions host and the Python exporter
  // (azure-monitor-opentelemetry-exporter, export/_base.py _get_authentication_credential) both read this.
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.outputs.clientId};Authorization=AAD'
  OTEL_SERVICE_NAME: 'finetune-autopilot'
  OTEL_EXPORTER_OTLP_ENDPOINT: ''
  AUTOPILOT_TELEMETRY: ''
  AUTOPILOT_ML_BACKEND: 'azureml'
  AUTOPILOT_TRAINING_CONTAINER: trainingContainerName
  AUTOPILOT_ARTIFACTS_CONTAINER: artifactsContainerName
  AUTOPILOT_RUNS_TABLE: runsTableName
  AUTOPILOT_FOLDERS_TABLE: foldersTableName
  AUTOPILOT_REJECTED_TABLE: rejectedTableName
  AUTOPILOT_CLEANUP_TABLE: cleanupTableName
  AUTOPILOT_QUIET_PERIOD_SECONDS: '30'
  AUTOPILOT_BASE_MODEL: baseModel
  AUTOPILOT_BASE_MODEL_VERSION: baseModelVersion
  AUTOPILOT_AZUREML_SUBSCRIPTION_ID: subscription().subscriptionId
  AUTOPILOT_AZUREML_RESOURCE_GROUP: workspaceResourceGroupName
  AUTOPILOT_AZUREML_WORKSPACE: workspaceName
  AUTOPILOT_AZUREML_REGISTRY: azureMlRegistry
  AUTOPILOT_AZUREML_COMPUTE: azureMlCompute
  AUTOPILOT_AZUREML_FINETUNE_INSTANCE_TYPE: finetuneInstanceType
  AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE: inferenceInstanceType
  AUTOPILOT_AZUREML_INFERENCE_INSTANCE_COUNT: string(inferenceInstanceCount)
  AUTOPILOT_AZUREML_DATASTORE: azureMlDatastore
  AUTOPILOT_STRICT_VALIDATION: 'false'
  AUTOPILOT_MAX_BAD_ROW_FRACTION: '0.01'
  AUTOPILOT_MAX_SEQ_LENGTH: '2048'
  AUTOPILOT_SMOKE_PROMPTS: '3'
  AUTOPILOT_SMOKE_QUALITY_MARGIN: '0.1'
  AUTOPILOT_SMOKE_MIN_SIMILARITY: '0'
  AUTOPILOT_IDLE_ENDPOINT_MINUTES: string(idleEndpointMinutes)
  AUTOPILOT_CLEANUP_SCHEDULE: cleanupSchedule
  AUTOPILOT_CLEANUP_GRACE_MINUTES: string(cleanupGraceMinutes)
  AUTOPILOT_CLEANUP_DRY_RUN: string(cleanupDryRun)
  AUTOPILOT_CLEANUP_MAX_DELETIONS: string(cleanupMaxDeletions)
  // Progressive traffic: 10 % for a 10-minute bake judged on Azure Monitor's figures, then 100 %.
  AUTOPILOT_TRAFFIC_STEPS: '10,100'
  AUTOPILOT_BAKE_MINUTES: '10'
  AUTOPILOT_MIRROR_PERCENT: '0'
  AUTOPILOT_CANARY_MIN_REQUESTS: '20'
  AUTOPILOT_CANARY_ERROR_RATE_MARGIN: '1'
  AUTOPILOT_CANARY_LATENCY_RATIO: '1.5'
  AUTOPILOT_DEPLOYMENT_POLL_SECONDS: '30'
  AUTOPILOT_DEPLOYMENT_TIMEOUT_MINUTES: '30'
  AUTOPILOT_TRANSIENT_RETRY_MINUTES: '60'
  AUTOPILOT_RECONCILE_SCHEDULE: reconcileSchedule
  AUTOPILOT_STALLED_STAGE_MINUTES: '15'
  AUTOPILOT_TRAINING_CHECK_MINUTES: '30'
  // Lifecycle events go to the custom topic, signed in as the app's identity (EventGrid Data Sender on the topic,
  // rbac.bicep); no key: the topic has local auth off.
  AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT: eventGrid.outputs.lifecycleTopicEndpoint
  AUTOPILOT_LIFECYCLE_TOPIC_KEY: ''
  // Redeploy on registration is off until someone names the models (shared/stages/redeploy.py).
  AUTOPILOT_REDEPLOY_MODELS: ''
  AUTOPILOT_REDEPLOY_ENDPOINT: ''
  AUTOPILOT_REDEPLOY_TEST_CONVERSATIONS: ''
  // Read only by the simulated and local ML backends, which do not run in Azure: their defaults, and a writable
  // folder for state (the app's own folder is read-only on Flex Consumption).
  AUTOPILOT_STATE_DIR: '/tmp/autopilot'
  AUTOPILOT_EVENTGRID_PUBLISH_URL: ''
  AUTOPILOT_SIMULATED_JOB_SECONDS: '3'
  AUTOPILOT_SIMULATED_FAULT_RATE: '0'
  AUTOPILOT_SIMULATED_FAULT_SEED: ''
  AUTOPILOT_LOCAL_BASE_MODEL: 'SmolLM2-135M-Instruct'
  AUTOPILOT_LOCAL_MAX_JOBS: '1'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-autopilot-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : 'st${resourceToken}'
    location: location
    tags: tags
    containers: [
      deploymentContainerName
      trainingContainerName
      artifactsContainerName
      deadLetterContainerName
    ]
    queues: stageQueues
    tables: [
      runsTableName
      foldersTableName
      rejectedTableName
      cleanupTableName
    ]
  }
}

module eventGrid 'app/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    storageSystemTopicName: storageSystemTopicName
    lifecycleTopicName: 'evgt-lifecycle-${resourceToken}'
  }
}

module mlWorkspace 'app/ml-workspace.bicep' = if (createWorkspace) {
  name: 'ml-workspace'
  scope: rg
  params: {
    name: workspaceName
    location: location
    tags: tags
    keyVaultName: 'kv-${resourceToken}'
    storageAccountName: 'stml${resourceToken}'
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

module mlAccess 'app/ml-access.bicep' = {
  name: 'ml-access'
  scope: resourceGroup(workspaceResourceGroupName)
  dependsOn: [
    rg
    mlWorkspace
  ]
  params: {
    workspaceName: workspaceName
    systemTopicName: mlSystemTopicName
    appIdentityPrincipalId: identity.outputs.principalId
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    deadLetterContainerName: deadLetterContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    lifecycleTopicName: eventGrid.outputs.lifecycleTopicName
    appIdentityPrincipalId: identity.outputs.principalId
    topicPrincipalIds: [
      eventGrid.outputs.storageSystemTopicPrincipalId
      mlAccess.outputs.systemTopicPrincipalId
    ]
    developerPrincipalId: principalId
    developerPrincipalType: principalType
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: appName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    identityId: identity.outputs.id
    pythonVersion: pythonVersion
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettings: appSettings
  }
}

// azd keeps these in the environment (.azure/<env>/.env); the postdeploy hook reads them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${api.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AUTOPILOT_TRAINING_CONTAINER string = trainingContainerName
output AZUREML_WORKSPACE_NAME string = workspaceName
output AZUREML_RESOURCE_GROUP string = workspaceResourceGroupName
output EVENTGRID_STORAGE_TOPIC_NAME string = storageSystemTopicName
output EVENTGRID_ML_TOPIC_NAME string = mlAccess.outputs.systemTopicName
output EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainerName
output EVENTGRID_EVENT_TTL_MINUTES int = eventTimeToLiveInMinutes
output LIFECYCLE_TOPIC_ENDPOINT string = eventGrid.outputs.lifecycleTopicEndpoint
