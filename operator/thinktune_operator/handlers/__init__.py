"""kopf handlers. Importing this package registers them (main.py does)."""

from . import datasetbuild, finetunejob, modelexport, watch  # noqa: F401
