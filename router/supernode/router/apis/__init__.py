"""Client-facing API shapes: parsers (pure) and translators."""
