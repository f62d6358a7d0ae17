"""mnist_sweep: hyperparameter sweeps of Keras MLPs on MNIST with Optuna.

The data's path through the package: sweep file (:mod:`~mnist_sweep.config`) → data
(:mod:`~mnist_sweep.data`) → model factory (:mod:`~mnist_sweep.model`) → training
(:mod:`~mnist_sweep.training`) → objective (:mod:`~mnist_sweep.objective`) → study
(:mod:`~mnist_sweep.study`) → CLI and reports.
"""

__version__ = "0.1.0"
