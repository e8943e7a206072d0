"""fanout: load CSV files from S3 into DynamoDB at any size, losing nothing."""

__version__ = "0.1.0"
