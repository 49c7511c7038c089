"""The HTTP edge: the FastAPI app, its routes, request schemas, error mapping and middleware.

The only package that imports FastAPI or Starlette. Its modules are imported by name; this
file imports nothing, so `service.http.schemas` can be used without loading the app.
"""
