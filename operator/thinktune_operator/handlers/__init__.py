"""kopf handlers. Importing this package registers them (main.py does): one CR event handler per row of
kinds.KINDS, and the pod/node indexes and watches of watch.py."""

from . import kinds, watch  # noqa: F401

kinds.register()
