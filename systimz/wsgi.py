"""WSGI entry point, for HTTP-only deployments and tools; production serves ASGI (daphne)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "systimz.settings")
application = get_wsgi_application()
