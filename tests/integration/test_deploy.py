"""deploy/systemd: every unit is valid for systemd (`systemd-analyze verify`) and every command it
runs is one `fulcrum` accepts, checked against examples/lab.toml (the file deploy/README.md starts
from) with a real node of each role in place of %i."""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import FULCRUM, needs

SOURCE = os.environ.get("FULCRUM_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
UNITS = sorted(glob.glob(os.path.join(SOURCE, "deploy", "systemd", "*.service")))
NODE = {"lb": "lb-01", "web": "web-01", "db": "db-01", "etcd": "etcd-2"}


def commands(text):
    return [line.split("=", 1)[1] for line in text.splitlines() if re.match(r"^Exec(StartPre|Start|StopPost)=", line)]


class DeployTest(unittest.TestCase):
    def test_every_role_has_a_unit(self):
        names = {os.path.basename(u) for u in UNITS}
        self.assertEqual(names, {f"fulcrum-{role}@.service" for role in NODE})

    def test_unit_commands_are_accepted_by_fulcrum(self):
        site = os.path.join(SOURCE, "examples", "lab.toml")
        for unit in UNITS:
            role = re.match(r"fulcrum-(\w+)@", os.path.basename(unit)).group(1)
            with open(unit) as f:
                text = f.read()
            found = commands(text)
            self.assertTrue(found, unit)
            for command in found:
                argv = command.replace("/usr/local/bin/fulcrum", FULCRUM).replace(
                    "/etc/fulcrum/site.toml", site).replace("%i", NODE[role]).split()
                if "--release-vip" in argv:
                    argv += ["--help"]  # parsed, not run: it would touch this machine's interfaces
                elif argv[1:2] != ["check"]:
                    argv += ["--print"] if role == "etcd" else ["--help"]
                run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
                self.assertEqual(run.returncode, 0, f"{unit}: {' '.join(argv)}\n{run.stdout}{run.stderr}")
                if role == "etcd" and argv[1:2] == ["etcd"]:
                    self.assertIn("--initial-cluster=etcd-1=http://10.77.0.41:2380", run.stdout)
                    self.assertIn("--name=etcd-2", run.stdout)

    @needs(None if shutil.which("systemd-analyze") else "systemd-analyze is not installed")
    def test_systemd_accepts_the_units(self):
        with tempfile.TemporaryDirectory() as tmp:
            for unit in UNITS:
                with open(unit) as f:
                    text = f.read().replace("/usr/local/bin/fulcrum", os.path.abspath(FULCRUM))
                with open(os.path.join(tmp, os.path.basename(unit).replace("@", "@x")), "w") as f:
                    f.write(text)
            run = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(glob.glob(tmp + "/*"))],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            problems = [l for l in (run.stdout + run.stderr).splitlines() if "fulcrum" in l.lower()]
            self.assertEqual(problems, [], "\n".join(problems))


if __name__ == "__main__":
    unittest.main()
