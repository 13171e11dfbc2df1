"""`docs/results/mobile_claims.py`: the mobile payoff issue's verdicts."""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "mobile_claims", ROOT / "docs" / "results" / "mobile_claims.py"
)
mobile_claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mobile_claims)
SCALE = ROOT / "docs" / "results" / "cifar10_mobile"


def row(method, seed, fraction, accuracy, as_trained=None):
    return {
        "method": method,
        "seed": seed,
        "fraction": fraction,
        "params": 1000,
        "macs": 2000 if fraction else 4000,
        "tflite_bytes": 100,
        "latency_ms": 0.1,
        "accuracy_as_trained": as_trained,
        "accuracy_masked": accuracy,
        "accuracy_shrunk": accuracy,
        "accuracy_tflite": accuracy,
        "val_accuracy": accuracy,
        "finetune_seconds": None,
    }


def write(folder, name, rows, file="results.json"):
    (folder / name).mkdir(exist_ok=True)
    (folder / name / file).write_text(json.dumps({"rows": rows}))


def test_verdicts_from_run_folders(tmp_path, capsys):
    # none: 80 dense, 30 at 50%; targeted: 79.5 dense (79.2 as trained),
    # 79.0 at 50%; narrow 78 at 50%, per seed offsets of 0.2 points.
    for seed in (0, 1, 2):
        d = seed * 0.002
        write(
            tmp_path,
            f"none_s{seed}",
            [
                row("none", seed, 0.0, 0.80 + d, 0.80 + d),
                row("none", seed, 0.5, 0.30 + d),
            ],
        )
        write(
            tmp_path,
            f"targeted_s{seed}",
            [
                row("targeted", seed, 0.0, 0.795 + d, 0.792 + d),
                row("targeted", seed, 0.5, 0.79 + d),
            ],
        )
        write(
            tmp_path,
            f"narrow_w50_s{seed}",
            [row("narrow", seed, 0.5, 0.78 + d, 0.78 + d)],
        )
    found = {
        c: (v, w)
        for c, v, w in mobile_claims.claims(
            mobile_claims.load_rows(str(tmp_path))
        )
    }
    bn = found["targeted dense: |as trained - recalibrated| <= 1"]
    assert bn[0].strip().startswith("0.30 ± 0.00 (3 seeds)") and bn[1] == "MET"
    assert found["(a) targeted: loss at 50% <= 1"][1] == "MET"
    assert found["(b) targeted dense: none dense minus it <= 2"][1] == "MET"
    assert found["(c) at 50%: targeted minus none >= 5"][0].strip() == (
        "49.00 ± 0.00 (3 seeds)"
    )
    narrow = found["(d) at 50%: targeted minus narrow"]
    assert narrow[0].strip() == "1.00 ± 0.00 (3 seeds)" and narrow[1] == "-"
    assert found["(d) at 50%: targeted minus slimming"][0] == "no runs"
    mobile_claims.main([str(tmp_path)])
    printed = capsys.readouterr().out
    assert "narrow        50%      3  2000      0.100  78.20 ± 0.20" in printed


def test_a_band_across_the_bound_is_undecided(tmp_path):
    for seed, loss in ((0, 0.0), (1, 0.02)):
        write(
            tmp_path,
            f"targeted_s{seed}",
            [
                row("targeted", seed, 0.0, 0.8, 0.8),
                row("targeted", seed, 0.5, 0.8 - loss),
            ],
        )
    found = {
        c: w
        for c, _, w in mobile_claims.claims(
            mobile_claims.load_rows(str(tmp_path))
        )
    }
    assert found["(a) targeted: loss at 50% <= 1"] == "UNDECIDED"


def test_the_targeted_setting_is_chosen_on_validation_only(tmp_path):
    """Of two targeted settings, the one with the better validation
    accuracy at 50% among those whose dense validation accuracy is within
    2 points of none's, whatever the test accuracy says."""

    def val_row(method, fraction, val, test, seed=0):
        r = row(method, seed, fraction, test)
        r["val_accuracy"] = val
        return r

    write(tmp_path, "none_s0", [val_row("none", 0.0, 0.80, 0.80)])
    write(
        tmp_path,
        "targeted_s0",
        [
            val_row("targeted", 0.0, 0.77, 0.90),
            val_row("targeted", 0.5, 0.76, 0.9),
        ],
    )
    label = "targeted(clean_steps=0.2)"
    write(
        tmp_path,
        f"{label}_s0",
        [val_row(label, 0.0, 0.79, 0.5), val_row(label, 0.5, 0.74, 0.5)],
    )
    chosen, lines = mobile_claims.choose(mobile_claims.load_rows(str(tmp_path)))
    assert chosen == label and len(lines) == 3
    assert "(dense > 2 below none)" in lines[1]
    # Compared on the seeds every setting has: a second seed of the other
    # setting, however good, does not decide it.
    write(
        tmp_path,
        "targeted_s1",
        [
            val_row("targeted", 0.0, 0.80, 0.5, seed=1),
            val_row("targeted", 0.5, 0.79, 0.5, seed=1),
        ],
    )
    chosen, lines = mobile_claims.choose(mobile_claims.load_rows(str(tmp_path)))
    assert chosen == label and lines[0] == "  (seeds every setting has: [0])"


def test_committed_claims_are_what_the_script_prints(capsys, monkeypatch):
    """`make results` rewrites nothing: the committed claims.txt, quoted
    verbatim by docs/mobile.md, is what mobile_claims.py prints."""
    monkeypatch.chdir(ROOT)
    mobile_claims.main([str(SCALE.relative_to(ROOT))])
    printed = capsys.readouterr().out
    assert printed == (SCALE / "claims.txt").read_text()
    assert printed.strip() in (ROOT / "docs" / "mobile.md").read_text()
    # The README leads with the table behind the claims.
    table = printed.split("mean ± sd\n", 1)[1].strip()
    assert table in (ROOT / "README.md").read_text()


def test_committed_compare_is_what_mobile_compare_writes(tmp_path):
    """`make results` rewrites nothing in compare/ either."""
    from keras_tdrop.experiments.mobile_compare import compare_mobile

    compare_mobile(str(SCALE), out=str(tmp_path), verbose=0)
    for name in ("compare.txt", "compare.csv"):
        assert (tmp_path / name).read_text() == (
            SCALE / "compare" / name
        ).read_text()
