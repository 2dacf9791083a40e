"""KV events in: one feed per endpoint keeps the precise prefix index equal to what its engine holds."""
