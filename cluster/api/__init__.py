"""The region API (FastAPI): :mod:`geoshard.cluster.api.app` builds it, uvicorn serves it."""
