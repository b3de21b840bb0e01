// The app's user-assigned managed identity. The Functions host (AzureWebJobsStorage__*, the deployment package),
// the stages' SDK clients (DefaultAzureCredential, told which identity by AZURE_CLIENT_ID) and the telemetry exporter
// (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) all sign in as it. The Microsoft templates make the same identity
// with br/public:avm/res/managed-identity/user-assigned-identity
// (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob, infra/main.bicep).

@description('Name of the identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags of every resource of the environment.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
