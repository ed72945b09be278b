"""Looking inside trained models: hidden states, probes, representation alignment."""
