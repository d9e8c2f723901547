"""Training: the state and compiled steps (`steps`) and the one driver around them (`loop`)."""
