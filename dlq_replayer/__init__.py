"""dlq_replayer: inspect, export, fix and redrive what did not land."""
