"""The writer Lambda: rows messages -> DynamoDB items, with partial batch failures."""

SERVICE = "fanout-writer"  # Powertools' service: the handler's and the logic's Logger
