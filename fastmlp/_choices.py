"""The names the API and the command line accept. Imports nothing, so that the CLI can build its
options from them without loading NumPy."""
HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")
OUTPUTS = ("softmax", "sigmoid", "identity")
LOSSES = ("ce", "mse", "bce")
OPTIMIZERS = ("sgd", "momentum", "adam")
DTYPES = ("float32", "float64")
