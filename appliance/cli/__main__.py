"""``python -m appliance.cli`` runs the ``ao-appliance`` command."""

import sys

from appliance.cli import main

sys.exit(main())
