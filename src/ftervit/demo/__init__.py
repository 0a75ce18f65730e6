"""``ftervit demo``: a local web page that classifies an image with the C engine and shows its
attention rollout (FastAPI + uvicorn, the optional ``[demo]`` extra)."""
