"""The splitter Lambda: S3 object -> 25-row messages on the rows queue."""

SERVICE = "fanout-splitter"  # Powertools' service: the handler's and the logic's Logger
