"""Built-in parts. Each stage package registers its parts through the ``hookformer`` entry-point group, exactly as
a third-party plugin does; ``default_run.yaml`` is the recipe ``hookformer train`` runs with no config."""
