"""`python -m gateway`: the public gRPC endpoint of Tutti."""

from gateway.bootstrap import build
from runtime.app import run

if __name__ == "__main__":
    run("gateway", build)
