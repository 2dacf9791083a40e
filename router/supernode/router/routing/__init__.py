"""Filter → Scorer → Picker routing plugins and the prefix index."""
