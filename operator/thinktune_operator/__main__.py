"""`python -m thinktune_operator [kopf run options]` == `kopf run -m thinktune_operator.main ...`."""

import sys

from kopf.cli import main

if __name__ == "__main__":
    sys.argv = ["kopf", "run", "-m", "thinktune_operator.main", *sys.argv[1:]]
    main()
