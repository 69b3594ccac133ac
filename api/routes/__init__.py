"""The API's routes, one module per topic; :mod:`api.server` puts them together."""
