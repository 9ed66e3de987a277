"""convlab's orchestrator: plans, submits and monitors sweeps, and builds their reports (no TensorFlow here)."""
