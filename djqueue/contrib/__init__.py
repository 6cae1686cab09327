"""Optional integrations, each enabled by the project and importable only with its extra
installed (``djqueue[prometheus]``, ``djqueue[opentelemetry]``)."""
