"""The routers prompt tokens: the engines tokenizer and chat template, per served model."""
