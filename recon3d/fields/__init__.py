"""Neural fields: encodings, MLPs and the field modules. Imports nothing of fit, mesh or cli."""
