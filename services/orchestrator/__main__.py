"""`python -m services.orchestrator`"""

from runtime.app import run
from services.orchestrator.bootstrap import build

if __name__ == "__main__":
    run("orchestrator", build)
