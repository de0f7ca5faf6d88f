"""The dashboard in headless Chromium, against a real uvicorn server."""
