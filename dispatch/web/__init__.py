"""The duty desk in the browser: static pages (HTML, CSS, ES modules) over the /api/v1 API."""
