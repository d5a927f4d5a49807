"""Hugging Face model families (stage ``family``) for ``hookformer import`` and ``export``: see
hookformer.core.interop. Registered by the built-in models plugin (plugins/models/__init__.py)."""
