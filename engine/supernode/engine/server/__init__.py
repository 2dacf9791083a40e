"""OpenAI-compatible HTTP server on the group leader (rank 0)."""
