"""`animatch serve`: the web app and JSON API over the library (search, match, judge), with no logic of its own.

`app` holds the FastAPI routes and `run_serve`; `services` loads the models and index once and wraps
`Matcher`, the heatmaps and `Judge` for the routes; `jobs` is the bounded judge queue; `uploads` caps
request bodies and decodes uploaded images safely; `static/` is the page (HTML + vanilla JS, no CDN).
"""
