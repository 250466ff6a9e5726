"""``verbcal serve``: fitted calibrators (and optionally an LLM classifier) as an HTTP service.

``create_app(ServeConfig(calibrators={"name": "path.json"}))`` returns a FastAPI app; the
``serve`` extra installs what it needs (``pip install 'verbcal[serve]'``).
"""

from __future__ import annotations

from verbcal.serve.app import create_app
from verbcal.serve.config import ClassifyConfig, ServeConfig, ServeConfigError

__all__ = ["ClassifyConfig", "ServeConfig", "ServeConfigError", "create_app"]
