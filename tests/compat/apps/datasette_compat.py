"""datasette serving the sqlite file named by COMPAT_DB (database name: "ds")."""

from __future__ import annotations

import os

from datasette.app import Datasette

app = Datasette([os.environ["COMPAT_DB"]]).app()
