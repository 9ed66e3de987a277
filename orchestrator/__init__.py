"""convlab's orchestrator: the CLI, plans, submission, monitoring and the report. Never imports TensorFlow."""
