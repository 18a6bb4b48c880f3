"""`python -m services.tracking`"""

from runtime.app import run
from services.tracking.bootstrap import build

if __name__ == "__main__":
    run("tracking", build)
