import json
import subprocess
import sys

import pytest

from nslab.cli import main
from nslab.models import param_count, uniform_widths


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_params(capsys):
    code, out, _ = run(capsys, "params", "vgg11", "--dataset", "cifar10", "--ratio", "0.25")
    assert code == 0 and out == {"arch": "vgg11", "dataset": "cifar10",
                                 "widths": [16, 32, 64, 64, 128, 128, 128, 128], "params": 579_786}
    code, out, _ = run(capsys, "params", "resnet18", "--dataset", "cifar100")
    assert out["params"] == 11_218_340 and len(out["widths"]) == 17
    code, out, _ = run(capsys, "params", "mobilenetv2", "--dataset", "cifar100", "--convcut")
    assert out["params"] > 2_448_700


def test_fit_then_generate(capsys, tmp_path, ref_dir):
    fit = tmp_path / "fit.json"
    code, out, _ = run(capsys, "fit", str(ref_dir / "vgg_10_eff_c10_14.csv"), "--arch", "vgg11",
                       "--dataset", "cifar10", "--out", str(fit))
    assert code == 0 and list(out) == ["alpha", "beta", "r2", "rows"] and out["rows"] == 237
    assert json.loads(fit.read_text())["arch"] == "vgg11"
    code, out, _ = run(capsys, "generate", "--fit", str(fit), "--ratio", "0.25")
    assert code == 0 and list(out) == ["widths", "params", "target", "rel_error"]
    assert out["target"] == 579_786 and out["params"] == param_count("vgg11", out["widths"], "cifar10")
    code, out, _ = run(capsys, "generate", "--fit", str(fit), "--budget", "2e6", "--round-to", "8")
    assert all(w % 8 == 0 for w in out["widths"])


def test_generate_from_authors_file_and_published(capsys, ref_dir):
    code, a, _ = run(capsys, "generate", "--fit", str(ref_dir / "vgg_10_eff_c10.fits.json"), "--arch", "vgg11",
                     "--dataset", "cifar10", "--iteration", "15", "--ratio", "0.25")
    code, b, _ = run(capsys, "generate", "--published", "vgg11-cifar10", "--ratio", "0.25")
    assert code == 0 and a == b
    target = param_count("vgg11", uniform_widths("vgg11", 2.0), "cifar10")
    code, c, _ = run(capsys, "generate", "--published", "vgg11-cifar10", "--budget", str(target),
                     "--method", "sgd")
    assert code == 0 and c["target"] == target


@pytest.mark.parametrize(
    "argv,match",
    [(["generate", "--published", "vgg11-cifar10", "--budget", "100"], "below the smallest"),
     (["params", "vgg11", "--widths", "1,2,3"], "expected 8 widths"),
     (["fit", "missing.csv", "--arch", "vgg11"], "no such trajectory"),
     (["generate", "--fit", "missing.json", "--ratio", "1"], "no such file"),
     (["generate", "--ratio", "1"], "needs a law")],
)
def test_errors_are_one_line(capsys, argv, match):
    code, _, err = run(capsys, *argv)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_entry_point(tmp_path):
    # Through a real process, as a user calls it: JSON on stdout, errors on stderr with status 2.
    ok = subprocess.run([sys.executable, "-m", "nslab", "params", "vgg11"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["params"] == 9_231_114
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n")
    err = subprocess.run([sys.executable, "-m", "nslab", "fit", str(bad), "--arch", "vgg11"],
                         capture_output=True, text=True)
    assert err.returncode == 2 and err.stderr.startswith("nslab fit: error:") and not err.stdout
