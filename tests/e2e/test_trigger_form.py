"""The admin DAG's trigger form in the real Airflow UI, filled in headless Chromium.

Needs Debian's chromium (/usr/bin/chromium: `make chromium` installs it, as root) and
`npm ci --prefix tests/e2e` (playwright-core: `make e2e-deps`, which `make test` runs). Without
either the test fails, saying which is missing and how to get it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from devkit.graphile import GraphileDB
from devkit.paths import REPO_ROOT
from devkit.selection import make_selection_of_jobs
from devkit.standalone import AirflowAPI

pytestmark = pytest.mark.e2e

E2E_DIR = Path(__file__).resolve().parent
SCRIPT = E2E_DIR / "trigger_form.mjs"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO_ROOT / ".artifacts" / "trigger-form.png"
DAG_ID = "graphile_worker_admin"
REASON = "Refused by the payment provider (set from the browser)"


def _node() -> str:
    """The `node` command; fail (not skip) if it, the browser or playwright-core is missing."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (install Node.js 20 or newer)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (run `make chromium` as root: Debian's chromium package)")
    if not (E2E_DIR / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/e2e/node_modules/playwright-core (run `make e2e-deps`)")
    if missing:
        pytest.fail("the browser test needs " + "; ".join(missing), pytrace=False)
    assert node is not None
    return node


def test_trigger_form_permanently_fails_jobs(airflow: AirflowAPI, gw: GraphileDB) -> None:
    node = _node()
    s = make_selection_of_jobs(gw)
    airflow.set_paused(DAG_ID, False)
    SCREENSHOT.unlink(missing_ok=True)
    options = {
        "baseUrl": airflow.base_url,
        "dagId": DAG_ID,
        "action": "permanently_fail",
        "jobIds": [s.regular2, s.locked],
        "reason": REASON,
        "dryRun": False,
        "screenshot": str(SCREENSHOT),
    }

    result = subprocess.run(
        [node, str(SCRIPT), json.dumps(options)],
        cwd=E2E_DIR,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    created = json.loads(result.stdout.strip().splitlines()[-1])
    assert SCREENSHOT.stat().st_size > 0
    conf = created["conf"]
    assert (conf["action"], conf["job_ids"], conf["reason"], conf["dry_run"]) == (
        "permanently_fail",
        [s.regular2, s.locked],
        REASON,
        False,
    )
    run_id = created["dag_run_id"]
    run = airflow.wait_run(DAG_ID, run_id, timeout=120)
    assert run["state"] == "success", airflow.explain(DAG_ID, run_id)
    xcom = airflow.xcom(DAG_ID, run_id, "permanently_fail")
    assert xcom["dry_run"] is False
    assert xcom["affected"] == [s.regular2]
    assert [(item["id"], item["reason"]) for item in xcom["skipped"]] == [(s.locked, "locked")]
    jobs = gw.jobs()
    assert jobs[s.regular2]["attempts"] == jobs[s.regular2]["max_attempts"]
    assert jobs[s.regular2]["last_error"] == REASON
    assert jobs[s.regular1]["attempts"] == 0 and jobs[s.regular1]["last_error"] is None
    assert jobs[s.locked]["last_error"] is None
