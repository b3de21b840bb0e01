// Log Analytics and a workspace-based Application Insights: the stages' spans, durations and logs
// (shared/telemetry.py) and the Functions host's own telemetry. Local authentication is off, as in the Microsoft
// templates (Azure-Samples/functions-quickstart-python-http-azd, infra/main.bicep: disableLocalAuth): telemetry is
// accepted only with an Entra token, which the host and the Python exporter get for the app's identity from
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING (the identity needs Monitoring Metrics Publisher, see rbac.bicep;
// https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication).

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Region of both.')
param location string

@description('Tags of every resource of the environment.')
param tags object = {}

@description('Days Log Analytics keeps data; 30 is included in the ingestion price.')
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

output applicationInsightsName string = applicationInsights.name
output applicationInsightsId string = applicationInsights.id
output connectionString string = applicationInsights.properties.ConnectionString
