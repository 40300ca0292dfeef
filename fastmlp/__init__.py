"""fastmlp: a fast, correct multilayer-perceptron trainer for the CPU, with Numba kernels.

    import fastmlp
    net = fastmlp.MLP([784, 100, 10], activation="relu", output="softmax", seed=0)
    history = fastmlp.train(net, X, y, epochs=5, batch_size=32, lr=0.1)

Importing fastmlp is cheap: NumPy and Numba load, and kernels compile, on first use.
"""
__version__ = "0.1.0"

__all__ = ["MLP", "train", "Trainer", "MLPClassifier", "MLPRegressor", "kernels", "datasets", "errors",
           "callbacks", "__version__"]

# MLPClassifier and MLPRegressor (scikit-learn's API) need the extra fastmlp[sklearn].
_LAZY = {"MLP": ("model", "MLP"), "train": ("training", "train"), "Trainer": ("training", "Trainer"),
         "MLPClassifier": ("estimators", "MLPClassifier"), "MLPRegressor": ("estimators", "MLPRegressor")}


def __getattr__(name):
    import importlib
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
    elif name in ("kernels", "datasets", "errors", "model", "training", "callbacks", "estimators"):
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
