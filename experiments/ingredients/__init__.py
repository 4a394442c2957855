"""One Sacred ingredient per concern: data, model, optimisation, grounding supervision."""
