import subprocess
import sys


def test_service_never_imports_torch() -> None:
    code = ("import sys, service.api.app, service.runtime, service.repository, service.client, service.cli;"
            "service.api.app.create_app();"
            "bad = [m for m in ('torch', 'training', 'export') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
