"""The demo app of recipes/python-app.yaml: prints what the image put in place."""

import os
import platform

print(f"{os.environ.get('GREETING', 'hello')} (Python {platform.python_version()})")
