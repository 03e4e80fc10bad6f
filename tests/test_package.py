"""The package's lazy names: listed by dir(), and every one (and each module) reachable as olft.<name>."""

import subprocess
import sys

CHECK = """
import olft
assert set(olft.__all__) <= set(dir(olft)), sorted(set(olft.__all__) - set(dir(olft)))
for name in olft.__all__:
    getattr(olft, name)
import olft.predict as direct
assert olft.predict is direct and callable(olft.predict.add_predict_options)
assert olft.export.add_export_options
try:
    olft.no_such_thing
except AttributeError as exc:
    assert "no_such_thing" in str(exc)
else:
    raise AssertionError("olft.no_such_thing")
"""


def test_dir_lists_all_and_every_name_and_module_loads():
    # A fresh interpreter: another test's `import olft.predict` would make the attribute exist already.
    check = CHECK.replace("import olft.predict as direct\n", "direct = olft.predict\nimport olft.predict as direct\n")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
