"""hookformer: a plugin-based engine for pretraining and fine-tuning Transformer language models.

The package is split by role: ``hookformer.core`` (hook specs, config, the run loop, checkpoints, CLI),
``hookformer.registry`` (entry-point discovery and the part catalog) and ``hookformer.plugins`` (built-in parts,
registered through the same entry points as third-party plugins).
"""

__version__ = "0.1.0"

#: Version of the plugin API (the hook specs and part protocols). A plugin may declare the versions it supports.
API_VERSION = "1.0"
