"""`python -m flask_service`: the production server (gunicorn)."""

from .server import main

if __name__ == "__main__":
    main()
