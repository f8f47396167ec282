"""write_report: one self-contained, escaped HTML page."""

import base64
import json
import os
import re

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")

from deeptut.errors import DataError  # noqa: E402
from deeptut.viz import write_report  # noqa: E402
from synthetic_run import make_synthetic_run, synthetic_test_data  # noqa: E402

HOSTILE = "<script>alert('x')</script> & \"quotes\""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("runs") / "logistic-r", "logistic", preset=HOSTILE)
    s = json.loads((run / "summary.json").read_text())
    s["stopped"] = "<img src=x onerror=alert(1)>"
    (run / "summary.json").write_text(json.dumps(s))
    path = write_report(run, data=synthetic_test_data())
    return run, path, path.read_text(encoding="utf-8")


def test_written_next_to_the_run(report):
    run, path, _ = report
    assert path == run / "report.html"


def test_images_inlined_and_nothing_external(report):
    run, _, text = report
    srcs = re.findall(r'<img(?: class="px")? src="([^"]*)"', text)
    assert len(srcs) == text.count("<img")
    # curves, filters, evolution png + gif, confusion, errors
    assert len(srcs) == 6
    for src in srcs:
        m = re.fullmatch(r"data:image/(png|gif);base64,([A-Za-z0-9+/=]+)", src)
        assert m, src[:60]
        head = base64.b64decode(m.group(2))[:6]
        assert head.startswith(b"\x89PNG") if m.group(1) == "png" else head in (b"GIF89a", b"GIF87a")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<(script|link|iframe|object)\b", text, re.I)
    assert "default-src 'none'" in text


def test_text_from_files_is_escaped(report):
    _, _, text = report
    assert HOSTILE not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def test_config_and_summary_shown(report):
    _, _, text = report
    for needle in ("<th>best validation error</th>", '<td class="num">6</td>', "learning_rate",
                   '<td class="num">0.13</td>', '<td class="num">0.3 s</td>', "patience",
                   "Environment", "git_commit", "extra keys are fine", "10 errors"):
        assert needle in text, needle


def test_plots_reused_when_fresh_and_redrawn_when_stale(report):
    run, _, _ = report
    curves = run / "plots" / "learning_curves.png"
    old = curves.stat().st_mtime_ns
    write_report(run, data=synthetic_test_data())
    assert curves.stat().st_mtime_ns == old
    metrics = run / "metrics.jsonl"
    before = metrics.stat().st_mtime
    t = curves.stat().st_mtime + 10
    os.utime(metrics, (t, t))
    write_report(run, data=synthetic_test_data())
    assert curves.stat().st_mtime_ns != old
    os.utime(metrics, (before, before))


def test_custom_output_path(tmp_path, report):
    run, _, _ = report
    out = write_report(run, tmp_path / "sub" / "r.html")
    assert out.is_file() and out.read_text().startswith("<!DOCTYPE html>")


def test_running_run_without_summary(tmp_path):
    run = make_synthetic_run(tmp_path / "r", n_checkpoints=0)
    (run / "summary.json").unlink()
    text = write_report(run, data=synthetic_test_data(10)).read_text()
    assert "has not finished" in text


def test_corrupt_summary_named(tmp_path):
    run = make_synthetic_run(tmp_path / "r", n_checkpoints=0)
    (run / "summary.json").write_text("{oops")
    with pytest.raises(DataError, match="summary.json: not valid JSON"):
        write_report(run, data=synthetic_test_data(10))
