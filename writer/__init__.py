"""The writer Lambda: rows messages -> DynamoDB items, with partial batch failures."""
