"""`python -m fastapi_service`: the production server (uvicorn)."""

from .server import main

if __name__ == "__main__":
    main()
