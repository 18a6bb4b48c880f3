"""`python -m services.inventory` runs the inventory gRPC service."""

from runtime.app import run
from services.inventory.bootstrap import build

if __name__ == "__main__":
    run("inventory", build)
