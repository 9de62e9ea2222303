"""HTTP serving: a FastAPI app over a trained run, and the web page it serves at ``/``."""

from bstrec.serve.app import create_app

__all__ = ["create_app"]
