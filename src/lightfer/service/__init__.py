"""HTTP service and web page for lightfer (``lightfer serve``; needs the ``serve`` extra).

``create_app(ServiceConfig(...))`` returns the FastAPI application; see ``docs/service.md``.
"""
from lightfer.service.config import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def __getattr__(name: str):  # FastAPI is imported only when the app is built
    if name == "create_app":
        from lightfer.service.app import create_app

        return create_app
    raise AttributeError(name)
