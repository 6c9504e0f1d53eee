"""report.html and the model card's timelines, from real sweeps through the console script: what
the page holds and where it comes from (the delivered probabilities and RTTMs, DER reproduced by
the timelines' own error analysis), opened in headless Chromium, and staged on the card."""

from __future__ import annotations

import hashlib
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from sortformer_build.records.evaluation import RttmSet
from sortformer_build.records.manifest import Manifest
from sortformer_build.records.parity import ProbabilityTrace, TraceSource, TraceStretch
from sortformer_build.records.release import ReleaseIndex
from sortformer_build.release.matrix import read_matrix
from sortformer_build.release.report.timeline import recording_timeline
from sortformer_build.stages.artifact import ArtifactPaths
from sortformer_build.verify.probabilities import Probabilities, ProbabilitiesError, load_probabilities

from . import browser
from .test_publish import PACKAGES, publish

NO_BROWSER = browser.unavailable()


class _Page(HTMLParser):
    """Every tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def _text(page: _Page) -> str:
    """The page's words as a reader reads them, whatever tags lie between them."""
    return " ".join("".join(page.text).split())


def _manifests(release: Path) -> list[tuple[ArtifactPaths, Manifest]]:
    return [
        (ArtifactPaths.beside(release / row.package), row.manifest)
        for row in read_matrix(release).rows
        if row.manifest is not None and row.package is not None
    ]


def test_sweep_report_is_one_self_contained_page(evaluated_sweep: Path) -> None:
    report = evaluated_sweep / "report.html"
    assert report.is_file() and (evaluated_sweep / "matrix.md").is_file()
    page = _parse(report)
    tags = [tag for tag, _ in page.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    for _, attributes in page.tags:
        for name in ("src", "href"):
            value = attributes.get(name)
            assert value is None or value.startswith(("data:image/png;base64,", "#")), value
    images = [attributes for tag, attributes in page.tags if tag == "img"]
    # The trade-off, then per artifact its probabilities and the one recording's timeline.
    assert len(images) == 1 + 4 * 2
    assert all(image["alt"] and int(image["width"] or 0) > 0 for image in images)
    text = _text(page)
    assert "on-device skipped on all 4 artifacts: needs macOS" in text
    assert "DER against the ground truth is not" in text  # tiny random weights, said once


def test_kept_probabilities_are_the_measured_ones(evaluated_sweep: Path) -> None:
    """The npz beside each package reads back with the figures its manifest records."""
    sources = set()
    for paths, manifest in _manifests(evaluated_sweep):
        parity = manifest.verification.parity
        assert parity is not None and parity.trace is not None
        assert paths.probabilities.is_file() and parity.trace.file == paths.probabilities.name
        probabilities = load_probabilities(paths.folder, parity.trace)
        measured = (
            parity.streaming_vs_nemo.agreement
            if parity.streaming_vs_nemo
            else parity.per_call_vs_nemo.overall
        )
        assert probabilities.nemo.shape == (measured.frames, 4)
        # Differences are stored in float16: three significant digits.
        assert probabilities.error.max() == pytest.approx(measured.max_abs_prob_error, rel=2e-3, abs=1e-6)
        sources.add(parity.trace.source)
    assert sources == {TraceSource.stream, TraceSource.windows}


def test_timelines_reproduce_the_manifests_der(evaluated_sweep: Path) -> None:
    """The report's own error analysis (mapping, missed, false alarm, confusion) gives the DER the
    evaluation recorded, against NeMo and against the ground truth, for every artifact."""
    for paths, manifest in _manifests(evaluated_sweep):
        (evaluation,) = manifest.evaluations
        (recording,) = evaluation.recordings
        folder = paths.evaluation(evaluation.dataset)
        for random_weights, rates in ((True, recording.vs_nemo), (False, recording.vs_truth)):
            view = recording_timeline(folder, evaluation, recording, random_weights)
            package = view.track(RttmSet.artifact)
            assert package is not None and package.errors is not None and rates is not None
            missed, false_alarm, confusion = (
                seconds / view.scored_seconds for seconds in package.errors.seconds
            )
            assert (missed, false_alarm, confusion) == pytest.approx(
                (rates.missed, rates.false_alarm, rates.confusion), abs=2e-6
            )
        twin = view.track(RttmSet.fp16)
        assert (twin is None) == manifest.compression.is_fp16
        assert {track.set for track in view.tracks} >= {RttmSet.truth, RttmSet.nemo, RttmSet.artifact}


def test_a_missing_rttm_is_said_in_the_timelines_place(evaluated_sweep: Path, tmp_path: Path) -> None:
    from sortformer_build.release.report.page import write_report

    release = tmp_path / "release"
    shutil.copytree(evaluated_sweep, release)
    rows = read_matrix(release).rows
    paths, manifest = _manifests(release)[0]
    (evaluation,) = manifest.evaluations
    (recording,) = evaluation.recordings
    missing = paths.evaluation(evaluation.dataset) / RttmSet.artifact.value / f"{recording.recording}.rttm"
    missing.unlink()
    write_report(release / "report.html", release, rows, "Release report", None)
    text = _text(_parse(release / "report.html"))
    assert f"{recording.recording}: timeline unavailable: {missing} is missing: rebuild the artifact" in text


@pytest.mark.skipif(NO_BROWSER is not None, reason=NO_BROWSER or "")
def test_sweep_report_renders_in_chromium(evaluated_sweep: Path) -> None:
    opened = browser.open_page(evaluated_sweep / "report.html", "report-evaluated-sweep.png")
    browser.keep(evaluated_sweep / "report.html", "report-evaluated-sweep.html")
    assert opened.console_errors == [] and opened.failed_loads == []
    assert all(url.startswith(("file:", "data:")) for url in opened.requests), opened.requests
    assert len(opened.images) == 9
    for image in opened.images:
        assert image.alt and image.decoded and image.width > 0 and image.height > 0, image
    assert opened.title.startswith("Release report")
    assert opened.screenshot is not None and opened.screenshot.stat().st_size > 0


def test_failed_and_unchecked_jobs_are_said_plainly(unfinished: Path) -> None:
    page = _parse(unfinished / "report.html")
    failed = [
        attributes for tag, attributes in page.tags if tag == "tr" and attributes.get("class") == "failed"
    ]
    assert len(failed) == 1
    text = _text(page)
    assert "chunk_len must be at least 1, got 0" in text
    assert (
        "parity skipped on 1 of 1 artifact (fp16/Sortformer_v2.1.mlpackage): verify.parity=false [parity-off]"
        in text
    )
    assert "evaluation (DER) not run" in text and "not measured (verify.parity=false)" in text
    # No parity figures, no evaluation: nothing to draw but an empty trade-off.
    assert [tag for tag, _ in page.tags].count("img") == 1


@pytest.mark.skipif(NO_BROWSER is not None, reason=NO_BROWSER or "")
def test_unfinished_report_renders_in_chromium(unfinished: Path) -> None:
    opened = browser.open_page(unfinished / "report.html", "report-failed-sweep.png")
    assert opened.console_errors == [] and opened.failed_loads == []
    assert all(image.alt and image.decoded and image.width > 0 for image in opened.images)


def test_card_has_the_release_table_and_a_timeline_per_geometry(
    evaluated_sweep: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(evaluated_sweep, copy)
    run = publish(copy, "dry_run=true", "allow_partial=true", *PACKAGES)
    assert run.returncode == 0, run.output
    staged = copy / ".publish"
    card = (staged / "README.md").read_text()
    assert "## The release at a glance" in card and "| palettized/SortformerOffline_v2.1 |" in card
    index = ReleaseIndex.read(staged / "v3" / "release.json")
    listed = {file.path_in_repo: file.sha256 for file in index.files}
    for name in ("Sortformer_v2.1", "SortformerOffline_v2.1"):
        path = f"v3/figures/{name}.timeline.png"
        assert f"]({path})" in card
        image = staged / path
        assert (
            image.read_bytes().startswith(b"\x89PNG")
            and listed[path] == hashlib.sha256(image.read_bytes()).hexdigest()
        )


def test_probabilities_read_back_and_refuse_a_mismatch(tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    nemo = generator.random((50, 4)).astype(np.float32)
    package = nemo + generator.normal(0, 2e-3, nemo.shape).astype(np.float32)
    stretches = (TraceStretch(name="stream", frames=50),)
    trace = Probabilities(package, nemo, TraceSource.stream, stretches).save(tmp_path / "a.probabilities.npz")
    back = load_probabilities(tmp_path, trace)
    measured = np.abs(package.astype(np.float64) - nemo)
    assert np.allclose(back.error, measured, rtol=1e-3, atol=1e-7)
    assert np.abs(back.nemo - nemo).max() < 5e-4  # float16 near 1
    wrong = ProbabilityTrace(
        file=trace.file, source=trace.source, stretches=[TraceStretch(name="x", frames=49)], speakers=4
    )
    with pytest.raises(
        ProbabilitiesError, match=r"holds \(50, 4\) probabilities, its manifest says \(49, 4\)"
    ):
        load_probabilities(tmp_path, wrong)
    with pytest.raises(ProbabilitiesError, match="does not exist"):
        load_probabilities(tmp_path / "elsewhere", trace)
