"""`python -m services.returns`"""

from runtime.app import run
from services.returns.bootstrap import build

if __name__ == "__main__":
    run("returns", build)
