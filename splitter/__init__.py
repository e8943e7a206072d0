"""The splitter Lambda: S3 object -> 25-row messages on the rows queue."""
