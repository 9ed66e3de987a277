"""convlab's orchestrator: plans, submits and monitors sweeps, builds their reports (no TensorFlow here)."""
