"""The stage runner: skip what is unchanged, redo what changed, never expose half-written output."""

from __future__ import annotations

import pytest

from edgekit.errors import ConfigError, StageError
from edgekit.pipeline.config import load_build_config
from edgekit.pipeline.runner import StageRunner


def _body(calls: list[str], text: str = "x"):
    def body(out, scratch):
        calls.append(text)
        (out / "result.txt").write_text(text)
        return {"text": text}

    return body


def test_stage_is_skipped_when_its_spec_is_unchanged(tmp_path):
    calls: list[str] = []
    first = StageRunner(tmp_path).run("s", {"a": 1}, _body(calls))
    second = StageRunner(tmp_path).run("s", {"a": 1}, _body(calls))
    assert calls == ["x"] and second.skipped and not first.skipped
    assert second.path == first.path and second.summary == {"text": "x"}


def test_stage_runs_again_when_its_spec_changes(tmp_path):
    calls: list[str] = []
    a = StageRunner(tmp_path).run("s", {"a": 1}, _body(calls, "one"))
    b = StageRunner(tmp_path).run("s", {"a": 2}, _body(calls, "two"))
    assert calls == ["one", "two"] and a.path != b.path
    assert (a.path / "result.txt").read_text() == "one"


def test_failed_stage_leaves_no_output_and_is_reported_as_stage_error(tmp_path):
    def broken(out, scratch):
        (out / "half.bin").write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(StageError, match="stage 'boom' failed: RuntimeError: disk on fire"):
        StageRunner(tmp_path).run("boom", {}, broken)
    assert not list((tmp_path / "stages").glob("boom-*"))


def test_scratch_survives_only_when_resuming(tmp_path):
    seen: list[bool] = []

    def interrupted(out, scratch):
        (scratch / "ckpt").write_text("step 5")
        raise KeyboardInterrupt

    def body(out, scratch):
        seen.append((scratch / "ckpt").exists())
        return {}

    for resume in (True, False):
        with pytest.raises(KeyboardInterrupt):
            StageRunner(tmp_path).run(f"t{resume}", {}, interrupted)
        StageRunner(tmp_path, resume=resume).run(f"t{resume}", {}, body)
    assert seen == [True, False]


def test_build_config_and_target_problems_are_reported_together_with_file_and_key(tmp_path):
    from edgekit.pipeline.preflight import load_inputs

    path = tmp_path / "build.toml"
    path.write_text("[distill]\nsteps = 0\ncolour = 1\n[prune]\nffn = 1.5\n[export]\ngguf_levels = ['int8']\n")
    target = tmp_path / "t.toml"
    target.write_text('name = "t"\n')
    with pytest.raises(ConfigError) as info:
        load_inputs(str(target), path)
    found = {(p.source, p.key) for p in info.value.problems}
    build_keys = {"distill.steps", "distill.colour", "prune.ffn", "export.gguf_levels"}
    assert {(str(path), k) for k in build_keys} <= found
    assert {(str(target), k) for k in ("hardware", "budget", "export", "runtime")} <= found


def test_build_config_defaults_when_no_file_is_given():
    config = load_build_config(None)
    assert config.teacher.model == "demo" and config.distill.enabled and config.prune.enabled


def test_stale_temporary_of_a_killed_stage_is_removed_when_the_stage_runs_again(tmp_path):
    runner = StageRunner(tmp_path)
    key = runner.key("s", {"a": 1})
    stale = tmp_path / "stages" / f".s-{key}.k1ll3d.tmp" / f"s-{key}"
    stale.mkdir(parents=True)
    (stale / "half.bin").write_bytes(b"partial")  # what a SIGKILL mid-stage leaves behind
    other = tmp_path / "stages" / ".t-0000.k1ll3d.tmp"
    other.mkdir()
    result = runner.run("s", {"a": 1}, _body([]))
    hidden = {p.name for p in (tmp_path / "stages").iterdir() if p.name.startswith(".")}
    assert hidden == {other.name}, "only the re-run stage's own leftovers are removed"
    assert (result.path / "result.txt").read_text() == "x"


def test_set_overrides_beat_the_config_file_and_the_defaults(tmp_path):
    path = tmp_path / "build.toml"
    path.write_text("[distill]\nsteps = 50\nlr = 1e-4\n")
    config = load_build_config(
        path, ["distill.steps=7", 'export.gguf_levels=["Q8_0"]', "teacher.model=./my-model", "prune.enabled=false"]
    )
    assert config.distill.steps == 7 and config.distill.lr == 1e-4  # the file's other keys stay
    assert config.export.gguf_levels == ["Q8_0"] and config.teacher.model == "./my-model"
    assert config.prune.enabled is False and config.recover.steps == 120


def test_set_problems_name_the_flag_and_the_key(tmp_path):
    path = tmp_path / "build.toml"
    path.write_text("[prune]\nffn = 2.0\n")
    with pytest.raises(ConfigError) as info:
        load_build_config(path, ["distill.colour=1", "distill.steps=0", "novalue"])
    found = {(p.source, p.key) for p in info.value.problems}
    assert ("--set", "novalue") in found
    with pytest.raises(ConfigError) as info:
        load_build_config(path, ["distill.colour=1", "distill.steps=0"])
    found = {(p.source, p.key) for p in info.value.problems}
    assert found == {("--set", "distill.colour"), ("--set", "distill.steps"), (str(path), "prune.ffn")}


def test_build_config_block_in_the_pipeline_guide_equals_the_defaults():
    import re
    import tomllib
    from pathlib import Path

    from edgekit.pipeline.config import BuildConfig, parse_build_config

    guide = (Path(__file__).resolve().parent.parent / "docs" / "pipeline.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", guide, flags=re.S)
    assert len(blocks) == 1
    assert parse_build_config(tomllib.loads(blocks[0]), "docs/pipeline.md") == BuildConfig()
