// One Event Grid subscription on a system topic, as eventgrid.subscriptions.json describes it (name, filter,
// maxDeliveryAttempts), delivered to a function's webhook, with dead letters written by the topic's identity.
// Shapes: https://learn.microsoft.com/azure/templates/microsoft.eventgrid/systemtopics/eventsubscriptions
// One event per request, as the Functions Event Grid trigger takes them.

@description('The system topic, in this resource group.')
param systemTopicName string

@description('The subscription from eventgrid.subscriptions.json with its placeholders replaced: name, filter, retryPolicy.')
param spec object

@secure()
@description('The function\'s webhook URL with the host\'s eventgrid_extension system key.')
param endpointUrl string

@description('Resource id of the storage account Event Grid writes dead letters to.')
param deadLetterStorageAccountId string

@description('Its container for dead letters.')
param deadLetterContainerName string

@description('How long Event Grid keeps trying one event, in minutes (1440, a day, is its default and maximum).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: spec.name
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: endpointUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: spec.filter
    retryPolicy: {
      maxDeliveryAttempts: spec.retryPolicy.maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}
