"""Labels CSV, clip discovery, splits and extractor settings (no media decoding needed)."""

from __future__ import annotations

import math

import pytest

from mmib.errors import ConfigError, DataError
from mmib.features.clips import assign_splits, discover_clips, parse_fractions, read_labels
from mmib.features.settings import ExtractorSettings, parse_modalities


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _csv(path, text):
    path.write_text(text)
    return path


def test_settings_round_trip_and_validation():
    s = ExtractorSettings(modalities=("text", "vision"), vision_backend="opencv", audio_fps=20)
    again = ExtractorSettings.from_dict(s.to_dict())
    assert again == s and again.modalities == ("text", "vision")
    assert ExtractorSettings(vision_backend="opencv").resolved().vision_backend == "opencv"
    assert ExtractorSettings().resolved().vision_backend in ("mediapipe", "opencv")
    with pytest.raises(ConfigError, match="vision backend"):
        ExtractorSettings(vision_backend="dlib")
    with pytest.raises(ConfigError, match="modalities"):
        ExtractorSettings(modalities=("text", "smell"))
    with pytest.raises(ConfigError, match="audio-fps"):
        ExtractorSettings(audio_fps=0)
    with pytest.raises(ConfigError, match="text-max-len"):
        ExtractorSettings(text_max_len=2)
    with pytest.raises(ConfigError, match="unknown keys"):
        ExtractorSettings.from_dict({**s.to_dict(), "colour": 1})
    assert parse_modalities("vision, text") == ("text", "vision")
    with pytest.raises(ConfigError, match="--modalities"):
        parse_modalities("text,odour")


def test_read_labels_finds_media_transcripts_and_problems(tmp_path):
    _touch(tmp_path / "a.mp4")
    _touch(tmp_path / "b.wav")
    _touch(tmp_path / "c.mp4")
    _touch(tmp_path / "c.flac")
    (tmp_path / "d.txt").write_text("from the side file\n")
    _touch(tmp_path / "e.mp4")
    path = _csv(tmp_path / "labels.csv",
                "ID,Transcript,Label\na,hello there,1.5\nb,,-1\nc,both media,0\nd,,2\ne,bad label,abc\nf,,1\n")
    clips, cols = read_labels(path, tmp_path)
    assert cols == {"label": True, "split": False, "text": True}
    by = {c.id: c for c in clips}
    assert [c.id for c in clips] == ["a", "b", "c", "d", "e", "f"]
    assert by["a"].video.name == "a.mp4" and by["a"].audio is None and by["a"].transcript == "hello there"
    assert by["a"].label == 1.5 and by["a"].error is None
    assert by["b"].audio.name == "b.wav" and by["b"].video is None and by["b"].transcript is None
    assert by["c"].video.name == "c.mp4" and by["c"].audio.name == "c.flac"
    assert by["d"].transcript == "from the side file" and by["d"].error is None  # text-only clip
    assert by["e"].error == "label 'abc' is not a number"
    assert "no media file and no transcript" in by["f"].error


def test_read_labels_mmsa_layout_and_splits(tmp_path):
    _touch(tmp_path / "vid1" / "1.mp4")
    _touch(tmp_path / "vid1" / "2.mp4")
    _touch(tmp_path / "vid2" / "1.mp4")
    path = _csv(tmp_path / "label.csv", "video_id,clip_id,text,label,mode\n"
                "vid1,1,good,1,train\nvid1,2,bad,-1,valid\nvid2,1,meh,0,test\n")
    clips, cols = read_labels(path, tmp_path)
    assert [c.id for c in clips] == ["vid1$_$1", "vid1$_$2", "vid2$_$1"]
    assert clips[1].video == tmp_path / "vid1" / "2.mp4"
    assert cols["split"] and assign_splits(clips) == {"vid1$_$1": "train", "vid1$_$2": "valid", "vid2$_$1": "test"}


@pytest.mark.parametrize("text, match", [
    ("name_of_clip,text\nx,hi\n", "no id column"),
    ("id,text\nx,hi\nx,again\n", "repeats line 2"),
    ("id,text,split\nx,hi,holdout\n", "is not train, valid or test"),
    ("id,text\n", "no rows"),
    ("", "empty file"),
])
def test_read_labels_errors(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        read_labels(_csv(tmp_path / "l.csv", text), tmp_path)


def test_read_labels_missing_files(tmp_path):
    with pytest.raises(DataError, match="no such labels file"):
        read_labels(tmp_path / "nope.csv", tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        read_labels(_csv(tmp_path / "l.csv", "id\nx\n"), tmp_path / "missing")


def test_seeded_split_is_stable_and_covers_every_split(tmp_path):
    (tmp_path / "x").mkdir()
    from mmib.features.clips import Clip

    clips = [Clip(f"c{i:02d}") for i in range(20)]
    a = assign_splits(clips, (0.7, 0.15, 0.15), seed=3)
    assert a == assign_splits(list(reversed(clips)), (0.7, 0.15, 0.15), seed=3)  # order does not matter
    assert a != assign_splits(clips, (0.7, 0.15, 0.15), seed=4)
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "valid", "test")}
    assert counts == {"train": 14, "valid": 3, "test": 3}
    small = assign_splits(clips[:3], (0.8, 0.1, 0.1))
    assert sorted(small.values()) == ["test", "train", "valid"]
    assert set(assign_splits(clips[:2], (0.7, 0.15, 0.15)).values()) >= {"train"}
    assert set(assign_splits(clips, (1.0, 0.0, 0.0)).values()) == {"train"}


@pytest.mark.parametrize("bad", ["0.7,0.3", "a,b,c", "0.5,0.5,0.5", "0,0.5,0.5", "0.9,-0.1,0.2"])
def test_parse_fractions_errors(bad):
    with pytest.raises(ConfigError, match="--split"):
        parse_fractions(bad)
    assert parse_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)


def test_discover_clips_folder_and_single_file(tmp_path):
    _touch(tmp_path / "one.mp4")
    (tmp_path / "one.txt").write_text("the words")
    _touch(tmp_path / "two.wav")
    _touch(tmp_path / "sub" / "three.mkv")
    (tmp_path / "four.txt").write_text("")
    _touch(tmp_path / "notes.csv")
    clips = {c.id: c for c in discover_clips(tmp_path)}
    assert set(clips) == {"one", "two", "sub/three", "four"}
    assert clips["one"].transcript == "the words" and clips["one"].video.name == "one.mp4"
    assert clips["two"].audio.name == "two.wav" and clips["two"].transcript is None
    assert "empty transcript" in clips["four"].error
    (single,) = discover_clips(tmp_path / "one.mp4", transcript="override")
    assert single.id == "one" and single.transcript == "override" and single.video.name == "one.mp4"
    with pytest.raises(ConfigError, match="--transcript"):
        discover_clips(tmp_path, transcript="x")
    with pytest.raises(DataError, match="not a clip"):
        discover_clips(tmp_path / "notes.csv")
    with pytest.raises(DataError, match="no such file"):
        discover_clips(tmp_path / "missing.mp4")
    assert math.isnan(single.label)


@pytest.mark.parametrize(("row", "match"), [
    ("../outside,hi,,", r"line 2: clip id '../outside': leaves its folder \('..' is not allowed\)"),
    ("a/../../outside,hi,,", r"clip id 'a/../../outside': leaves its folder"),
    ("/etc/passwd,hi,,", r"clip id '/etc/passwd': an absolute path; it must be relative to its folder"),
    ("C:\\\\x,hi,,", r"an absolute path"),
    ("a\0b,hi,,", r"clip id 'a\\x00b': contains a NUL byte"),
    ("a,hi,../outside.wav,", r"line 2: audio file '../outside.wav': leaves its folder"),
    ("a,hi,,/tmp/x.mp4", r"line 2: video file '/tmp/x.mp4': an absolute path"),
])
def test_ids_and_media_columns_that_leave_the_clips_folder_are_refused(tmp_path, row, match):
    clips_dir = tmp_path / "clips"
    _touch(clips_dir / "a.mp4")
    _touch(tmp_path / "outside.wav")  # exists: only the refusal keeps it from being read
    path = tmp_path / "labels.csv"
    path.write_bytes(f"id,text,audio,video\n{row}\n".encode())
    with pytest.raises(DataError, match=match):
        read_labels(path, clips_dir)


@pytest.mark.parametrize(("row", "match"), [
    ("..,1,hi", r"video_id '..' is not a plain name"),
    ("v,../x,hi", r"clip_id '../x' is not a plain name"),
    ("/abs,1,hi", r"video_id '/abs' is not a plain name"),
])
def test_mmsa_layout_ids_must_be_plain_names(tmp_path, row, match):
    path = _csv(tmp_path / "label.csv", f"video_id,clip_id,text\n{row}\n")
    with pytest.raises(DataError, match=match):
        read_labels(path, tmp_path)


def test_media_columns_inside_the_folder_still_work(tmp_path):
    _touch(tmp_path / "sub" / "x.wav")
    clips, _ = read_labels(_csv(tmp_path / "l.csv", "id,text,audio\na,hi,sub/x.wav\n"), tmp_path)
    assert clips[0].audio == (tmp_path / "sub" / "x.wav").resolve() and clips[0].error is None
