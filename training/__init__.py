"""Two-tower similarity model: trained on opt-in pairs, registered in MLflow.

Downstream stages use only :mod:`training.artifact` (``LookalikeEncoder``,
``load_registered_encoder``); everything else here is the trainer.
"""
