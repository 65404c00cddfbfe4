from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "videocreation.settings")

application = get_wsgi_application()

from videocreation.settings import require_production_secret  # noqa: E402

require_production_secret()
